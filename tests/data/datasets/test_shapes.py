"""Tests of the embedded synthetic shapes dataset (pix2seq_d2.data.datasets.shapes)."""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pix2seq_d2.data.datasets import shapes as synthetic_shapes
from pix2seq_d2.data.datasets import shapes_scenes
from pix2seq_d2.data.datasets.shapes import (
    GENERATOR_VERSION,
    SHAPE_CLASSES,
    ShapesSplitSpec,
    default_shapes_root,
    ensure_shapes_generated,
    generate_shapes_split,
    register_shapes_datasets,
    shapes_split_paths,
)

SMALL = ShapesSplitSpec(num_images=20, seed=3, image_size=64)
SIZE_TOLERANCE_PX = 0.5  # boxes are quantized to 1/4 px on a 4x supersampled canvas


def _load(json_file: str) -> dict:
    with open(json_file, encoding="utf-8") as f:
        return json.load(f)


def _pixels(image_root: str, dataset: dict) -> list[np.ndarray]:
    return [
        np.asarray(Image.open(os.path.join(image_root, im["file_name"])).convert("RGB")) for im in dataset["images"]
    ]


@pytest.fixture(scope="module")
def small_split(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    root = tmp_path_factory.mktemp("shapes")
    return generate_shapes_split(root, "tiny", SMALL)


def test_paths_and_default_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DETECTRON2_DATASETS", str(tmp_path))
    assert default_shapes_root() == os.path.join(str(tmp_path), "pix2seq_shapes")
    json_file, image_root = shapes_split_paths(tmp_path, "tiny")
    assert json_file == os.path.join(str(tmp_path), "annotations", "tiny.json")
    assert image_root == os.path.join(str(tmp_path), "tiny")
    assert not os.path.exists(json_file)


def test_json_is_valid_coco(small_split: tuple[str, str]) -> None:
    from pycocotools.coco import COCO

    json_file, image_root = small_split
    coco = COCO(json_file)
    assert sorted(coco.getImgIds()) == list(range(1, SMALL.num_images + 1))
    assert [c["name"] for c in coco.loadCats(sorted(coco.getCatIds()))] == list(SHAPE_CLASSES)
    assert sorted(coco.getCatIds()) == list(range(1, len(SHAPE_CLASSES) + 1))
    info = coco.dataset["info"]
    assert info["seed"] == SMALL.seed
    assert info["num_images"] == SMALL.num_images
    assert info["image_size"] == SMALL.image_size
    assert info["generator_version"] == GENERATOR_VERSION
    for im in coco.loadImgs(coco.getImgIds()):
        assert (im["height"], im["width"]) == (SMALL.image_size, SMALL.image_size)
        with Image.open(os.path.join(image_root, im["file_name"])) as img:
            assert img.format == "JPEG"
            assert img.mode == "RGB"
            assert img.size == (SMALL.image_size, SMALL.image_size)
    ann_ids = [a["id"] for a in coco.dataset["annotations"]]
    assert len(set(ann_ids)) == len(ann_ids)
    assert all(i > 0 for i in ann_ids)


def test_objects_and_boxes(small_split: tuple[str, str]) -> None:
    dataset = _load(small_split[0])
    size = SMALL.image_size
    per_image = Counter(a["image_id"] for a in dataset["annotations"])
    assert all(1 <= per_image[im["id"]] <= 4 for im in dataset["images"])
    for ann in dataset["annotations"]:
        x, y, w, h = ann["bbox"]
        assert all(isinstance(v, float) for v in ann["bbox"])
        assert x >= 0 and y >= 0 and x + w <= size and y + h <= size
        for side in (w, h):
            assert 0.1 * size - SIZE_TOLERANCE_PX <= side <= 0.5 * size + SIZE_TOLERANCE_PX
        assert ann["iscrowd"] == 0
        # visible area: at least half of the shape (a triangle fills half its box)
        assert 0.2 * w * h <= ann["area"] <= w * h
    names = {c["id"]: c["name"] for c in dataset["categories"]}
    seen = {names[a["category_id"]] for a in dataset["annotations"]}
    assert seen == set(SHAPE_CLASSES)
    for ann in dataset["annotations"]:
        if names[ann["category_id"]] != "triangle":
            assert ann["bbox"][2] == ann["bbox"][3]  # circles and squares are not stretched


def test_deterministic(tmp_path: Path) -> None:
    json_a, root_a = generate_shapes_split(tmp_path / "a", "tiny", SMALL)
    json_b, root_b = generate_shapes_split(tmp_path / "b", "tiny", SMALL)
    assert Path(json_a).read_bytes() == Path(json_b).read_bytes()
    dataset = _load(json_a)
    for pa, pb in zip(_pixels(root_a, dataset), _pixels(root_b, dataset), strict=True):
        np.testing.assert_array_equal(pa, pb)


def test_second_call_is_noop(tmp_path: Path) -> None:
    json_file, image_root = generate_shapes_split(tmp_path, "tiny", SMALL)
    files = [json_file] + sorted(str(p) for p in Path(image_root).iterdir())
    assert len(files) == SMALL.num_images + 1
    before = {f: os.stat(f).st_mtime_ns for f in files}
    assert generate_shapes_split(tmp_path, "tiny", SMALL) == (json_file, image_root)
    assert {f: os.stat(f).st_mtime_ns for f in files} == before
    assert sorted(os.listdir(os.path.dirname(json_file))) == ["tiny.json"]


def test_regenerates_when_parameters_change(tmp_path: Path) -> None:
    json_file, _ = generate_shapes_split(tmp_path, "tiny", SMALL)
    bigger = ShapesSplitSpec(num_images=SMALL.num_images + 2, seed=SMALL.seed, image_size=64)
    generate_shapes_split(tmp_path, "tiny", bigger)
    assert len(_load(json_file)["images"]) == bigger.num_images
    assert _load(json_file)["info"]["num_images"] == bigger.num_images


def test_different_seed_gives_different_content(tmp_path: Path) -> None:
    other = ShapesSplitSpec(num_images=SMALL.num_images, seed=SMALL.seed + 1, image_size=64)
    json_a, root_a = generate_shapes_split(tmp_path / "a", "tiny", SMALL)
    json_b, root_b = generate_shapes_split(tmp_path / "b", "tiny", other)
    da, db = _load(json_a), _load(json_b)
    assert da["annotations"] != db["annotations"]
    pixels_a, pixels_b = _pixels(root_a, da), _pixels(root_b, db)
    assert not any(np.array_equal(a, b) for a, b in zip(pixels_a, pixels_b, strict=True))


def test_interrupted_generation_writes_no_json(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real = synthetic_shapes.generate_image
    calls = []

    def failing(rng: np.random.Generator, spec: ShapesSplitSpec) -> tuple:
        calls.append(1)
        if len(calls) > 5:
            raise KeyboardInterrupt
        return real(rng, spec)

    monkeypatch.setattr(synthetic_shapes, "generate_image", failing)
    with pytest.raises(KeyboardInterrupt):
        generate_shapes_split(tmp_path, "tiny", SMALL)
    json_file, _ = shapes_split_paths(tmp_path, "tiny")
    assert not os.path.exists(json_file)
    assert os.listdir(os.path.dirname(json_file)) == []
    monkeypatch.setattr(synthetic_shapes, "generate_image", real)
    generate_shapes_split(tmp_path, "tiny", SMALL)
    assert len(_load(json_file)["images"]) == SMALL.num_images


@pytest.mark.parametrize("category", range(len(SHAPE_CLASSES)))
@pytest.mark.parametrize("offset", [0, 1, 2, 3])
def test_bbox_is_tight(category: int, offset: int) -> None:
    """One object on a flat background, no noise: its coloured pixels fill its box."""
    size, ss = 64, shapes_scenes.SUPERSAMPLE
    gray = 128
    background = np.full((size * ss, size * ss, 3), gray, dtype=np.uint8)
    # Corners off the final pixel grid (offset is in supersampled pixels).
    x0, y0 = 37 + offset, 50 + 2 * offset
    shape = shapes_scenes._Shape(category, x0, y0, x0 + 101 + offset, y0 + 93 - offset, (230, 20, 40))
    pixels = shapes_scenes._render(background, [], [shape], size, 0.0, None)
    # A pixel is "object" when at least ~1/4 covered by the colour (red channel 128 -> 230).
    ys, xs = np.nonzero(np.abs(pixels.astype(int) - gray).max(axis=2) > 25)
    x, y, w, h = shape.bbox_xywh()
    assert abs(xs.min() - x) <= 1 and abs(xs.max() + 1 - (x + w)) <= 1
    assert abs(ys.min() - y) <= 1 and abs(ys.max() + 1 - (y + h)) <= 1
    # and the box centre is object colour
    centre = pixels[int(y + h * 0.6), int(x + w / 2)]
    assert tuple(centre) == pytest.approx((230, 20, 40), abs=3)


@pytest.fixture
def registered(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Path, dict[str, ShapesSplitSpec]]]:
    """Registers tiny shapes_train / shapes_val under tmp_path; restores the catalogs after."""
    from detectron2.data import DatasetCatalog, MetadataCatalog

    splits = {
        "shapes_train": ShapesSplitSpec(num_images=6, seed=0, image_size=48),
        "shapes_val": ShapesSplitSpec(num_images=5, seed=1, image_size=48),
    }
    monkeypatch.setattr(synthetic_shapes, "SHAPES_SPLITS", splits)
    # Set aside any registration done elsewhere (e.g. at import time).
    saved = {name: (DatasetCatalog.pop(name, None), MetadataCatalog.pop(name, None)) for name in splits}
    yield tmp_path, splits
    for name, (loader, metadata) in saved.items():
        DatasetCatalog.pop(name, None)
        MetadataCatalog.pop(name, None)
        if loader is not None:
            DatasetCatalog[name] = loader
        if metadata is not None:
            MetadataCatalog[name] = metadata


def test_register_generates_on_first_use(registered: tuple[Path, dict]) -> None:
    from detectron2.data import DatasetCatalog, MetadataCatalog
    from detectron2.structures import BoxMode

    root, splits = registered
    register_shapes_datasets(root=root)
    register_shapes_datasets(root=root)  # idempotent
    json_file, image_root = shapes_split_paths(root, "shapes_val")
    meta = MetadataCatalog.get("shapes_val")
    assert tuple(meta.thing_classes) == SHAPE_CLASSES  # known before generation
    assert meta.evaluator_type == "coco"
    assert meta.json_file == json_file
    assert meta.image_root == image_root
    assert not os.path.exists(json_file)

    dicts = DatasetCatalog.get("shapes_val")
    assert os.path.exists(json_file)
    assert len(dicts) == splits["shapes_val"].num_images
    for record in dicts:
        assert os.path.exists(record["file_name"])
        assert 1 <= len(record["annotations"]) <= 4
        for ann in record["annotations"]:
            assert ann["bbox_mode"] == BoxMode.XYWH_ABS
            assert 0 <= ann["category_id"] < len(SHAPE_CLASSES)
    assert tuple(MetadataCatalog.get("shapes_val").thing_classes) == SHAPE_CLASSES
    assert not os.path.exists(shapes_split_paths(root, "shapes_train")[0])


def test_ensure_shapes_generated(registered: tuple[Path, dict]) -> None:
    root, splits = registered
    register_shapes_datasets(root=root)
    json_file, _ = shapes_split_paths(root, "shapes_train")
    ensure_shapes_generated("shapes_train")
    assert _load(json_file)["info"]["num_images"] == splits["shapes_train"].num_images
    with pytest.raises(KeyError):
        ensure_shapes_generated("no_such_dataset_registered")


def test_crowded_spec_places_more_and_smaller_objects(tmp_path: Path) -> None:
    crowded = ShapesSplitSpec(num_images=10, seed=3, image_size=64, objects=(6, 12), rel_size=(0.08, 0.3))
    json_file, _ = generate_shapes_split(tmp_path, "crowded", crowded)
    data = _load(json_file)
    per_image = Counter(a["image_id"] for a in data["annotations"])
    assert min(per_image.values()) >= 4 and max(per_image.values()) <= 12
    assert sum(per_image.values()) / len(data["images"]) > 5
    for a in data["annotations"]:
        assert max(a["bbox"][2:]) <= 0.3 * 64 + SIZE_TOLERANCE_PX
    assert data["info"]["objects"] == [6, 12]
    # The default splits keep their info (and so their files stay up to date): no new keys.
    json_small, _ = generate_shapes_split(tmp_path, "small", SMALL)
    assert "objects" not in _load(json_small)["info"] and "rel_size" not in _load(json_small)["info"]
