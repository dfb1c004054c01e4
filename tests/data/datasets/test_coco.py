"""COCO-format datasets from the config (pix2seq_d2/data/datasets/coco.py): the loader equals detectron2's on a
valid json, every class of broken json is an error naming the file and the item or a warning naming the
dropped annotation, and DATASETS.COCO registers datasets from a yaml file and the command line."""

from __future__ import annotations

import copy
import json
import logging
import math
import os

import pytest
import torch
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets import load_coco_json
from detectron2.evaluation import COCOEvaluator
from detectron2.structures import Boxes, BoxMode, Instances

from pix2seq_d2.config import load_config
from pix2seq_d2.data.datasets import (
    CocoJsonError,
    ensure_coco_metadata,
    load_coco_json_checked,
    register_coco_datasets,
    register_coco_json,
)
from tests.helpers import shapes_image, write_image

# image id -> (file name, height, width, [(annotation id, category id, [x, y, w, h], iscrowd)])
IMAGES = {
    5: ("a.png", 40, 60, [(11, 7, [4, 5, 20, 10], 0), (12, 1, [30, 8, 25.5, 20], 0), (13, 3, [0, 0, 60, 40], 1)]),
    2: ("sub/b.png", 50, 30, [(21, 3, [2, 3, 10, 12], 0)]),
    9: ("empty.png", 30, 30, []),  # an image without objects
}
CATEGORIES = [{"id": 7, "name": "seven"}, {"id": 1, "name": "one"}, {"id": 3, "name": "three", "supercategory": "x"}]


def valid_coco(images_dir=None) -> dict:
    """A valid COCO instances json (category ids 7, 1, 3 unsorted; crowd RLE, polygons, an empty image);
    with ``images_dir``, the images are written there as real PNG files."""
    coco = {"info": {"description": "test"}, "images": [], "annotations": [], "categories": copy.deepcopy(CATEGORIES)}
    for image_id, (file_name, h, w, objects) in IMAGES.items():
        coco["images"].append({"id": image_id, "file_name": file_name, "height": h, "width": w, "license": 1})
        if images_dir is not None:
            os.makedirs(os.path.dirname(os.path.join(images_dir, file_name)), exist_ok=True)
            write_image(os.path.join(images_dir, file_name), shapes_image(h, w, [], seed=image_id))
        for annotation_id, category_id, (x, y, bw, bh), iscrowd in objects:
            annotation = {
                "id": annotation_id, "image_id": image_id, "category_id": category_id, "bbox": [x, y, bw, bh],
                "area": bw * bh, "iscrowd": iscrowd,
                "segmentation": [[x, y, x + bw, y, x + bw, y + bh, x, y + bh]],
            }  # fmt: skip
            if iscrowd:
                annotation["segmentation"] = {"counts": [0, h * w], "size": [h, w]}
            coco["annotations"].append(annotation)
    return coco


def write_json(path, content) -> str:
    """Write ``content`` (bytes, text, or an object dumped as json) to ``path``; returns the path."""
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif isinstance(content, str):
        path.write_text(content, encoding="utf-8")
    else:
        path.write_text(json.dumps(content), encoding="utf-8")
    return str(path)


def perfect_predictions_ap(name: str, dicts: list[dict], output_dir) -> float:
    """COCOEvaluator's bbox AP for predictions equal to the loaded (non-crowd) boxes, in contiguous classes."""
    evaluator = COCOEvaluator(name, tasks=("bbox",), distributed=False, output_dir=str(output_dir))
    evaluator.reset()
    for d in dicts:
        objects = [a for a in d["annotations"] if not a["iscrowd"]]
        instances = Instances((d["height"], d["width"]))
        boxes = [BoxMode.convert(a["bbox"], BoxMode.XYWH_ABS, BoxMode.XYXY_ABS) for a in objects]
        instances.pred_boxes = Boxes(torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4))
        instances.scores = torch.ones(len(objects))
        instances.pred_classes = torch.tensor([a["category_id"] for a in objects], dtype=torch.int64)
        evaluator.process([{"image_id": d["image_id"]}], [{"instances": instances}])
    return evaluator.evaluate()["bbox"]["AP"]


@pytest.fixture
def names():
    """Dataset names a test registers; removed from the catalogs afterwards."""
    used: list[str] = []
    yield used
    for name in used:
        if name in DatasetCatalog:
            DatasetCatalog.remove(name)
        if name in MetadataCatalog:
            MetadataCatalog.remove(name)


@pytest.fixture
def log(caplog, monkeypatch):
    """caplog receiving this module's records (only once) even where a test before set propagate=False upstream."""
    logger = logging.getLogger("pix2seq_d2.data.datasets.coco")
    monkeypatch.setattr(logger, "propagate", False)
    logger.addHandler(caplog.handler)
    caplog.set_level(logging.INFO, logger="pix2seq_d2.data.datasets.coco")
    yield caplog
    logger.removeHandler(caplog.handler)


def boxes_of(dicts: list[dict]) -> list[tuple]:
    return [
        (d["file_name"], d["height"], d["width"], d["image_id"])
        + tuple(
            (tuple(float(v) for v in a["bbox"]), a["bbox_mode"], a["category_id"], a.get("iscrowd", 0))
            for a in d["annotations"]
        )
        for d in dicts
    ]


def test_a_valid_json_loads_like_detectron2_with_annotation_ids_and_metadata(tmp_path, names, log):
    json_file = write_json(tmp_path / "instances.json", valid_coco(tmp_path))
    ours, theirs = f"ours_{tmp_path.name}", f"theirs_{tmp_path.name}"
    names += [ours, theirs]
    dicts = load_coco_json_checked(json_file, str(tmp_path), ours)
    expected = load_coco_json(json_file, str(tmp_path), theirs)
    assert boxes_of(dicts) == boxes_of(expected)
    assert [d["image_id"] for d in dicts] == [2, 5, 9] and dicts[2]["annotations"] == []
    assert [a["id"] for d in dicts for a in d["annotations"]] == [21, 11, 12, 13]  # own ids kept, file order
    assert [a["iscrowd"] for a in dicts[1]["annotations"]] == [0, 0, 1]
    assert [a["category_id"] for a in dicts[1]["annotations"]] == [2, 0, 1]  # ids 7, 1, 3 -> 2, 0, 1
    assert all("segmentation" not in a for d in dicts for a in d["annotations"])
    meta, their_meta = MetadataCatalog.get(ours), MetadataCatalog.get(theirs)
    assert meta.thing_classes == their_meta.thing_classes == ["one", "three", "seven"]
    assert meta.thing_dataset_id_to_contiguous_id == their_meta.thing_dataset_id_to_contiguous_id == {1: 0, 3: 1, 7: 2}
    assert (meta.json_file, meta.image_root, meta.evaluator_type) == (json_file, str(tmp_path), "coco")
    assert not [r for r in log.records if r.name == "pix2seq_d2.data.datasets.coco" and r.levelno >= logging.WARNING]


@pytest.mark.parametrize(
    "encode",
    [
        pytest.param(lambda text: b"\xef\xbb\xbf" + text.encode("utf-8"), id="utf8_bom"),
        pytest.param(lambda text: text.encode("utf-16"), id="utf16_bom"),  # PowerShell's `>` writes this
        pytest.param(lambda text: json.dumps(json.loads(text), indent=2).encode("utf-8"), id="indented"),
    ],
)
def test_a_bom_or_another_unicode_encoding_loads_the_same(tmp_path, encode):
    coco = valid_coco()
    coco["categories"][0]["name"] = "sieben é"
    plain = load_coco_json_checked(write_json(tmp_path / "plain.json", coco), str(tmp_path))
    other = load_coco_json_checked(write_json(tmp_path / "other.json", encode(json.dumps(coco))), str(tmp_path))
    assert other == plain


def test_registered_dataset_is_evaluated_by_coco_evaluator_with_the_original_category_ids(tmp_path, names):
    """Perfect predictions in contiguous classes give AP 100 only if the id mapping and json_file are right."""
    name = f"eval_{tmp_path.name}"
    names.append(name)
    register_coco_json(name, write_json(tmp_path / "val.json", valid_coco(tmp_path)), tmp_path)
    dicts = DatasetCatalog.get(name)
    assert perfect_predictions_ap(name, dicts, tmp_path / "eval") == pytest.approx(100.0)


@pytest.mark.parametrize("bad", [None, "12", float("nan")], ids=["null", "string", "nan"])
def test_skipped_boxes_do_not_reach_coco_evaluation(tmp_path, names, bad):
    """pycocotools reads metadata.json_file itself: with boxes skipped, evaluation must use the
    checked annotations instead (a null or string coordinate would crash it deep inside)."""
    name = f"skip_eval_{tmp_path.name}"
    names.append(name)
    coco = valid_coco(tmp_path)
    coco["annotations"][0]["bbox"][2] = bad
    coco["annotations"][1].pop("area")
    register_coco_json(name, write_json(tmp_path / "val.json", coco), tmp_path)
    dicts = DatasetCatalog.get(name)
    assert not hasattr(MetadataCatalog.get(name), "json_file")
    # the skipped box is not a miss
    assert perfect_predictions_ap(name, dicts, tmp_path / "eval") == pytest.approx(100.0)


# ---- errors: one test per class of problem, each over concrete broken files ----


def _mutated(mutate):
    def build():
        coco = valid_coco()
        mutate(coco)
        return coco

    return build


def _image(coco, image_id):
    return next(i for i in coco["images"] if i["id"] == image_id)


def _annotation(coco, annotation_id):
    return next(a for a in coco["annotations"] if a["id"] == annotation_id)


def _set(getter, key, value):
    def mutate(coco):
        getter(coco)[key] = value

    return mutate


def _delete(getter, key):
    def mutate(coco):
        del getter(coco)[key]

    return mutate


def _load_error(tmp_path, content, dataset_name=None) -> tuple[str, str]:
    json_file = write_json(tmp_path / "broken.json", content() if callable(content) else content)
    with pytest.raises(CocoJsonError) as info:
        load_coco_json_checked(json_file, str(tmp_path), dataset_name)
    assert isinstance(info.value, ValueError)
    message = str(info.value)
    assert json_file in message
    return json_file, message


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        pytest.param(b"", ["is empty", "0 bytes"], id="empty"),
        pytest.param(b" \n\t\n", ["is empty"], id="whitespace"),
        pytest.param(b'{"images": [', ["not valid json", "line 1 column"], id="truncated"),
        pytest.param(b'{"images": [],}', ["not valid json"], id="trailing_comma"),
        pytest.param(b"{'images': []}", ["not valid json"], id="single_quotes"),
        pytest.param('{"images": "caf\xe9"}'.encode("latin-1"), ["not UTF-8"], id="latin1"),
        pytest.param(b"\xef\xbb\xbf", ["not valid json"], id="bom_only"),
        pytest.param([], ["top level is a json list", '"images"'], id="top_level_list"),
        pytest.param(
            [{"image_id": 5, "category_id": 1, "bbox": [1, 2, 3, 4], "score": 0.9}],
            ["top level is a json list", "detection results file"],
            id="results_file",
        ),
        pytest.param("just text", ["not valid json"], id="text"),
        pytest.param('"a string"', ["top level is a json str"], id="top_level_string"),
        pytest.param("null", ["top level is a json NoneType"], id="null"),
    ],
)
def test_a_file_that_is_not_a_json_object_is_an_error_naming_it(tmp_path, content, expected):
    _, message = _load_error(tmp_path, content)
    for text in expected:
        assert text in message


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        pytest.param(_delete(lambda c: c, "categories"), ['no "categories" list'], id="no_categories"),
        pytest.param(_delete(lambda c: c, "images"), ['no "images" list'], id="no_images_key"),
        pytest.param(_delete(lambda c: c, "annotations"), ['"annotations": []'], id="no_annotations_key"),
        pytest.param(_set(lambda c: c, "images", {"1": {}}), ['"images" is {"1": {}}, expected a list'], id="dict"),
        pytest.param(_set(lambda c: c, "categories", None), ['"categories" is null'], id="null_categories"),
        pytest.param(_set(lambda c: c, "annotations", "none"), ['"annotations" is "none" (a string)'], id="str"),
    ],
)
def test_missing_or_mistyped_top_level_lists_are_an_error(tmp_path, mutate, expected):
    _, message = _load_error(tmp_path, _mutated(mutate))
    for text in expected:
        assert text in message


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        pytest.param(_set(lambda c: c, "categories", []), ['"categories" is empty'], id="empty"),
        pytest.param(_delete(lambda c: c["categories"][1], "id"), ["category #1: 'id' is missing"], id="no_id"),
        pytest.param(_set(lambda c: c["categories"][1], "id", "1"), ['category #1 (id "1" (a string))'], id="str_id"),
        pytest.param(_set(lambda c: c["categories"][1], "id", 1.5), ["category #1 (id 1.5)"], id="float_id"),
        pytest.param(_set(lambda c: c["categories"][2], "id", 7), ["category #2 (id 7): duplicate"], id="dup_id"),
        pytest.param(_delete(lambda c: c["categories"][0], "name"), ["category #0 (id 7): 'name' is null"], id="name"),
        pytest.param(lambda c: c["categories"].append(3), ["category #3 is 3, expected an object"], id="not_obj"),
    ],
)
def test_a_category_without_a_usable_unique_id_or_name_is_an_error(tmp_path, mutate, expected):
    _, message = _load_error(tmp_path, _mutated(mutate))
    for text in expected:
        assert text in message


def test_a_json_without_images_is_an_error_naming_the_dataset(tmp_path, names):
    names.append(f"noimages_{tmp_path.name}")
    coco = valid_coco()
    coco["images"], coco["annotations"] = [], []
    _, message = _load_error(tmp_path, coco, names[0])
    assert f"dataset {names[0]!r}" in message and "no images" in message


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        pytest.param(_delete(lambda c: _image(c, 5), "height"), ["'a.png'", "'height' is missing"], id="no_height"),
        pytest.param(_delete(lambda c: _image(c, 2), "width"), ["'sub/b.png'", "'width' is missing"], id="no_width"),
        pytest.param(_delete(lambda c: _image(c, 5), "file_name"), ["(id 5)", "'file_name' is missing"], id="no_file"),
        pytest.param(_set(lambda c: _image(c, 5), "file_name", ""), ["(id 5", "'file_name' is \"\""], id="empty_file"),
        pytest.param(_set(lambda c: _image(c, 5), "file_name", 5), ["(id 5)", "'file_name' is 5"], id="int_file"),
        pytest.param(
            _set(lambda c: _image(c, 5), "height", "40"), ["'a.png'", "'height' is \"40\" (a string)"], id="s"
        ),
        pytest.param(_set(lambda c: _image(c, 5), "width", 0), ["'a.png'", "'width' is 0, expected a pos"], id="zero"),
        pytest.param(_set(lambda c: _image(c, 5), "height", -40), ["'a.png'", "'height' is -40"], id="negative"),
        pytest.param(_set(lambda c: _image(c, 5), "height", 40.5), ["'a.png'", "'height' is 40.5"], id="fraction"),
        pytest.param(_set(lambda c: _image(c, 5), "height", None), ["'a.png'", "'height' is null"], id="null"),
        pytest.param(_set(lambda c: _image(c, 5), "height", True), ["'a.png'", "'height' is true"], id="bool"),
        pytest.param(_delete(lambda c: _image(c, 5), "id"), ["(no 'id', 'a.png')", "'id' is missing"], id="no_id"),
        pytest.param(_set(lambda c: _image(c, 5), "id", "5"), ['(id "5" (a string)', "'a.png'"], id="str_id"),
        pytest.param(_set(lambda c: _image(c, 5), "id", 5.0), ["(id 5.0, 'a.png')", "'id' is 5.0"], id="float_id"),
        pytest.param(lambda c: c["images"].append(None), ["image #3 is null, expected an object"], id="not_object"),
    ],
)
def test_an_image_without_a_usable_id_file_name_or_size_is_an_error_naming_it(tmp_path, mutate, expected):
    _, message = _load_error(tmp_path, _mutated(mutate))
    assert 'in its "images"' in message
    for text in expected:
        assert text in message


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        pytest.param(
            _set(lambda c: _image(c, 9), "id", 5), ["'empty.png'", "duplicate image id (also 'a.png')"], id="id"
        ),
        pytest.param(
            _set(lambda c: _image(c, 9), "file_name", "a.png"), ["(id 9, 'a.png')", "duplicate file_name"], id="file"
        ),
    ],
)
def test_duplicate_image_ids_or_file_names_are_an_error(tmp_path, mutate, expected):
    _, message = _load_error(tmp_path, _mutated(mutate))
    for text in expected:
        assert text in message


def test_every_bad_image_is_listed_up_to_ten_with_the_total(tmp_path):
    coco = valid_coco()
    coco["images"] += [{"id": 100 + i, "file_name": f"x{i}.png", "width": 10} for i in range(12)]
    _, message = _load_error(tmp_path, coco)
    assert "12 problems" in message and "'x0.png'" in message and "'x9.png'" in message
    assert "'x10.png'" not in message and "and 2 more" in message


def test_every_bad_annotation_is_counted_and_long_id_lists_are_shortened(tmp_path):
    coco = valid_coco()
    coco["categories"] += [{"id": 100 + i, "name": f"extra{i}"} for i in range(50)]
    coco["annotations"] += [{"id": 100 + i, "image_id": 9, "category_id": 99, "bbox": [1, 1, 2, 2]} for i in range(12)]
    _, message = _load_error(tmp_path, coco)
    assert "12 problems" in message and "and 2 more" in message and "annotation id 109 of image empty.png" in message
    assert "'category_id' 99 is not among the categories' ids [1, 3, 7, 100, 101, 102, ..., 149] (53 ids)" in message


def test_categories_with_the_same_name_load_with_a_warning(tmp_path, log):
    coco = valid_coco()
    coco["categories"][2]["name"] = "one"
    dicts = load_coco_json_checked(write_json(tmp_path / "names.json", coco), str(tmp_path))
    assert sum(len(d["annotations"]) for d in dicts) == 4
    assert "several categories are named 'one'" in log.text


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        pytest.param(
            _delete(lambda c: _annotation(c, 12), "id"),
            ["annotation #1 of \"annotations\" (no 'id') of image a.png (id 5)", "'id' is missing"],
            id="no_id",
        ),
        pytest.param(
            _set(lambda c: _annotation(c, 12), "id", "12"), ["annotation #1", "'id' is not an integer"], id="str_id"
        ),
        pytest.param(
            _set(lambda c: _annotation(c, 21), "id", 11),
            [
                "annotation id 11 of image sub/b.png (id 2)",
                "duplicate annotation id (also the id of an annotation of image a.png (id 5))",
            ],
            id="duplicate_id",
        ),
        pytest.param(
            _set(lambda c: _annotation(c, 12), "image_id", 6),
            ["annotation id 12 of image id 6", "'image_id' 6 is not the id of an image"],
            id="unknown_image",
        ),
        pytest.param(
            _set(lambda c: _annotation(c, 12), "image_id", "5"), ["'image_id' \"5\" (a string)"], id="str_image_id"
        ),
        pytest.param(_delete(lambda c: _annotation(c, 12), "image_id"), ["'image_id' is missing"], id="no_image_id"),
        pytest.param(
            _set(lambda c: _annotation(c, 12), "category_id", 2),
            ["annotation id 12 of image a.png (id 5)", "'category_id' 2 is not among the categories' ids [1, 3, 7]"],
            id="unknown_category",
        ),
        pytest.param(
            _set(lambda c: _annotation(c, 12), "category_id", "1"),
            ["annotation id 12", "'category_id' \"1\" (a string) is not among"],
            id="str_category",
        ),
        pytest.param(_delete(lambda c: _annotation(c, 12), "category_id"), ["'category_id' missing"], id="no_category"),
        pytest.param(
            lambda c: c["annotations"].append([1, 2]), ['annotation #4 of "annotations" is [1, 2]'], id="not_object"
        ),
    ],
)
def test_an_annotation_without_a_usable_unique_id_image_or_category_is_an_error_naming_it(tmp_path, mutate, expected):
    _, message = _load_error(tmp_path, _mutated(mutate))
    assert 'in its "annotations"' in message
    for text in expected:
        assert text in message


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        pytest.param("iscrowd", "0", "'iscrowd' is \"0\" (a string), expected 0 or 1", id="iscrowd_str0"),
        pytest.param("iscrowd", "1", "'iscrowd' is \"1\" (a string)", id="iscrowd_str1"),
        pytest.param("iscrowd", 2, "'iscrowd' is 2, expected 0 or 1", id="iscrowd_2"),
        pytest.param("iscrowd", None, "'iscrowd' is null", id="iscrowd_null"),
        pytest.param("iscrowd", 0.5, "'iscrowd' is 0.5", id="iscrowd_half"),
        pytest.param("iscrowd", [0], "'iscrowd' is [0]", id="iscrowd_list"),
        pytest.param("ignore", 1, "'ignore' is 1, which detectron2 does not support", id="ignore_1"),
        pytest.param("ignore", "no", "'ignore' is \"no\" (a string), expected 0", id="ignore_str"),
    ],
)
def test_a_crowd_or_ignore_flag_other_than_0_or_1_is_an_error(tmp_path, key, value, expected):
    _, message = _load_error(tmp_path, _mutated(_set(lambda c: _annotation(c, 21), key, value)))
    assert "annotation id 21 of image sub/b.png (id 2)" in message and expected in message


@pytest.mark.parametrize(("value", "crowd"), [(True, 1), (False, 0), (1.0, 1), (0.0, 0)])
def test_json_booleans_and_integral_floats_are_valid_crowd_flags(tmp_path, value, crowd):
    coco = valid_coco()
    _annotation(coco, 21)["iscrowd"] = value
    del _annotation(coco, 11)["iscrowd"]  # missing: not a crowd
    dicts = load_coco_json_checked(write_json(tmp_path / "i.json", coco), str(tmp_path))
    assert dicts[0]["annotations"][0]["iscrowd"] == crowd and dicts[1]["annotations"][0]["iscrowd"] == 0


@pytest.mark.parametrize(
    ("bbox", "reason"),
    [
        pytest.param("missing", "no 'bbox'", id="missing"),
        pytest.param(None, "'bbox' is null, expected a list of 4 numbers", id="null"),
        pytest.param([], "'bbox' is [], expected a list of 4", id="empty"),
        pytest.param([30, 8, 25], "'bbox' is [30, 8, 25], expected a list of 4", id="three"),
        pytest.param([30, 8, 25, 20, 1], "'bbox' is [30, 8, 25, 20, 1]", id="five"),
        pytest.param("30,8,25,20", "'bbox' is \"30,8,25,20\" (a string)", id="string"),
        pytest.param({"x": 30}, "'bbox' is {\"x\": 30}", id="object"),
        pytest.param(
            [30, None, 25, 20], "'bbox' [30, null, 25, 20] has a coordinate that is not a finite number", id="null_x"
        ),
        pytest.param(
            [30, "8", 25, 20], "'bbox' [30, \"8\", 25, 20] has a coordinate that is not a finite", id="string_y"
        ),
        pytest.param([30, 8, True, 20], "'bbox' [30, 8, true, 20] has a coordinate", id="bool"),
        pytest.param([30, 8, float("nan"), 20], "'bbox' [30, 8, NaN, 20] has a coordinate", id="nan"),
        pytest.param([30, 8, 25, float("inf")], "'bbox' [30, 8, 25, Infinity] has a coordinate", id="inf"),
        pytest.param([30, 8, [25], 20], "'bbox' [30, 8, [25], 20] has a coordinate", id="nested"),
        pytest.param([30, 8, -25, 20], "'bbox' [30, 8, -25, 20] has a negative width or height", id="negative"),
        pytest.param([30, 8, 25, 0], "'bbox' [30, 8, 25, 0] has a zero width or height", id="zero"),
    ],
)
def test_an_unusable_box_is_skipped_with_a_warning_naming_it_and_the_rest_loads(tmp_path, log, bbox, reason):
    coco = valid_coco()
    if bbox == "missing":
        del _annotation(coco, 12)["bbox"]
    else:
        _annotation(coco, 12)["bbox"] = bbox
    json_file = write_json(tmp_path / "skip.json", coco)  # json.dumps writes NaN/Infinity, as Python's json reads
    dicts = load_coco_json_checked(json_file, str(tmp_path), None)
    assert [[a["id"] for a in d["annotations"]] for d in dicts] == [[21], [11, 13], []]
    assert all(math.isfinite(v) for d in dicts for a in d["annotations"] for v in a["bbox"])
    warnings = [r.getMessage() for r in log.records if r.levelno == logging.WARNING]
    expected = f"COCO json {json_file}: skipping annotation id 12 of image a.png (id 5): {reason}"
    assert any(expected in w for w in warnings), warnings
    assert any("skipped 1 of 4 annotations of 1 image whose box cannot be used" in w for w in warnings), warnings


def test_skipped_annotations_are_summarised_once_per_load(tmp_path, log):
    coco = valid_coco()
    coco["annotations"] += [
        {"id": 100 + i, "image_id": 9, "category_id": 1, "bbox": [1, 1, "2", 2], "iscrowd": 0, "area": 4}
        for i in range(12)
    ]
    _annotation(coco, 21)["bbox"] = [2, 3, 0, 12]
    json_file = write_json(tmp_path / "many.json", coco)
    dicts = load_coco_json_checked(json_file, str(tmp_path), None)
    assert sum(len(d["annotations"]) for d in dicts) == 3
    warnings = [r.getMessage() for r in log.records if r.levelno == logging.WARNING]
    assert len([w for w in warnings if "skipping annotation" in w]) == 10
    (summary,) = [w for w in warnings if "skipped 13" in w]
    assert f"COCO json {json_file}: skipped 13 of 16 annotations of 2 images" in summary
    assert "(12 with a non-numeric or non-finite coordinate, 1 with a zero width or height)" in summary
    assert "3 not listed above" in summary


def test_a_json_whose_every_box_is_unusable_is_an_error(tmp_path):
    coco = valid_coco()
    for annotation in coco["annotations"]:
        annotation["bbox"] = [str(v) for v in annotation["bbox"]]  # a converter that wrote strings
    _, message = _load_error(tmp_path, coco)
    assert "none of its 4 annotations has a usable box" in message
    assert "(4 with a non-numeric or non-finite coordinate)" in message and "annotation id 11 of image a.png" in message


def test_annotations_without_area_load_with_one_warning_about_evaluation(tmp_path, log):
    coco = valid_coco()
    for annotation in coco["annotations"]:
        del annotation["area"]
    dicts = load_coco_json_checked(write_json(tmp_path / "noarea.json", coco), str(tmp_path))
    assert sum(len(d["annotations"]) for d in dicts) == 4
    (warning,) = [r.getMessage() for r in log.records if r.levelno == logging.WARNING]
    assert "4 annotations have no 'area'" in warning and "COCO evaluation" in warning


def test_malformed_segmentation_and_keypoints_are_ignored(tmp_path):
    coco = valid_coco()
    _annotation(coco, 11)["segmentation"] = [[1, 2]]  # detectron2 drops this annotation
    _annotation(coco, 12)["segmentation"] = "garbage"
    _annotation(coco, 21)["keypoints"] = [None, "x"]
    dicts = load_coco_json_checked(write_json(tmp_path / "segm.json", coco), str(tmp_path))
    assert [[a["id"] for a in d["annotations"]] for d in dicts] == [[21], [11, 12, 13], []]


def test_a_missing_or_unreadable_json_file_is_an_error_naming_it(tmp_path):
    missing = str(tmp_path / "nope.json")
    with pytest.raises(CocoJsonError, match=f"COCO json file not found: {missing}"):
        load_coco_json_checked(missing, str(tmp_path))
    with pytest.raises(CocoJsonError, match="is a folder"):
        load_coco_json_checked(str(tmp_path), str(tmp_path))


# ---- DATASETS.COCO ----


def test_datasets_from_a_yaml_file_and_the_command_line_register_and_load(tmp_path, names, monkeypatch):
    data = tmp_path / "data"
    data.mkdir()
    write_json(data / "train.json", valid_coco(data))
    coco = valid_coco()
    coco["annotations"] = coco["annotations"][:1]
    write_json(data / "val.json", coco)
    train, val, cli = f"yaml_train_{tmp_path.name}", f"yaml_val_{tmp_path.name}", f"cli_{tmp_path.name}"
    names += [train, val, cli]
    config = tmp_path / "mydata.yaml"
    config.write_text(
        "DATASETS:\n"
        "  COCO:\n"
        f"    - [{train}, data/train.json, data]\n"  # relative: to the working directory
        f"    - [{val}, {data / 'val.json'}, {data}]\n"
        f"  TRAIN: ('{train}',)\n"
        f"  TEST: ('{val}',)\n"
    )
    monkeypatch.chdir(tmp_path)
    cfg = load_config(str(config))
    assert cfg.DATASETS.COCO == [[train, "data/train.json", "data"], [val, str(data / "val.json"), str(data)]]
    assert register_coco_datasets(cfg) == [train, val]
    names.append(f"d2_{tmp_path.name}")
    expected = load_coco_json(str(data / "train.json"), str(data), names[-1])
    assert boxes_of(DatasetCatalog.get(train)) == boxes_of(expected)
    assert MetadataCatalog.get(train).json_file == str(data / "train.json")  # stored absolute
    assert MetadataCatalog.get(train).image_root == str(data)
    assert len(DatasetCatalog.get(val)) == 3 and MetadataCatalog.get(val).thing_classes == ["one", "three", "seven"]
    assert register_coco_datasets(cfg) == [train, val]  # again: a no-op
    (tmp_path / "dumped.yaml").write_text(cfg.dump())  # train_net saves the config: it must load again
    assert load_config(str(tmp_path / "dumped.yaml")).DATASETS.COCO == cfg.DATASETS.COCO

    cfg = load_config(str(config), ["DATASETS.COCO", f"[['{cli}', 'data/val.json', 'data']]"])  # replaces the list
    assert cfg.DATASETS.COCO == [[cli, "data/val.json", "data"]]
    assert register_coco_datasets(cfg.clone()) == [cli]
    assert [d["file_name"] for d in DatasetCatalog.get(cli)] == [
        str(data / f) for f in ("sub/b.png", "a.png", "empty.png")
    ]
    assert load_config(None).DATASETS.COCO == [] and register_coco_datasets(load_config(None)) == []


def test_registering_the_same_name_again_is_a_no_op_and_another_dataset_under_it_an_error(tmp_path, names):
    name = f"twice_{tmp_path.name}"
    names.append(name)
    json_file = write_json(tmp_path / "a.json", valid_coco())
    write_json(tmp_path / "b.json", valid_coco())
    register_coco_json(name, json_file, tmp_path)
    loader = DatasetCatalog[name]
    register_coco_json(name, json_file, str(tmp_path) + "/")  # the same files
    assert DatasetCatalog[name] is loader
    with pytest.raises(ValueError, match=f"dataset '{name}' .*already registered with json {json_file}"):
        register_coco_json(name, tmp_path / "b.json", tmp_path)
    cfg = load_config(None, ["DATASETS.COCO", str([[name, json_file, str(tmp_path)], [name, "b.json", "."]])])
    with pytest.raises(ValueError, match=r"DATASETS.COCO entry #1.*already registered"):
        register_coco_datasets(cfg)


@pytest.mark.parametrize("builtin", ["coco_2017_val", "shapes_train"])
def test_a_name_registered_otherwise_is_an_error(tmp_path, builtin):
    json_file = write_json(tmp_path / "a.json", valid_coco())
    cfg = load_config(None, ["DATASETS.COCO", str([[builtin, json_file, str(tmp_path)]])])
    with pytest.raises(ValueError, match=f"'{builtin}' \\(DATASETS.COCO entry #0\\) is already registered"):
        register_coco_datasets(cfg)
    assert MetadataCatalog.get(builtin).get("json_file") != json_file  # the builtin is left as it was


def test_a_missing_json_or_image_folder_is_an_error_at_registration(tmp_path, names, monkeypatch):
    monkeypatch.chdir(tmp_path)
    names += ["missing_json", "missing_root"]
    cfg = load_config(None, ["DATASETS.COCO", "[['missing_json', 'nope/train.json', '.']]"])
    with pytest.raises(CocoJsonError) as info:
        register_coco_datasets(cfg)
    message = str(info.value)
    assert str(tmp_path / "nope" / "train.json") in message and "DATASETS.COCO entry #0" in message
    assert "does not exist" in message and f"relative to the working directory {tmp_path}" in message
    json_file = write_json(tmp_path / "a.json", valid_coco())
    cfg = load_config(None, ["DATASETS.COCO", str([["missing_root", json_file, "imgs"]])])
    with pytest.raises(CocoJsonError, match=f"image root {tmp_path / 'imgs'} .*is not a folder"):
        register_coco_datasets(cfg)
    assert "missing_json" not in DatasetCatalog and "missing_root" not in DatasetCatalog


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        pytest.param("['a', 'b.json', 'c']", "for one dataset write [['a', 'b.json', 'c']]", id="flat"),
        pytest.param(
            "[['a', 'b.json']]", "entry #0 is ['a', 'b.json'], expected [name, json_file, image_root]", id="2"
        ),
        pytest.param("[['a', 'b.json', 3]]", "entry #0 is ['a', 'b.json', 3]", id="not_str"),
    ],
)
def test_a_malformed_datasets_coco_entry_is_an_error(value, expected):
    with pytest.raises(ValueError) as info:
        register_coco_datasets(load_config(None, ["DATASETS.COCO", value]))
    assert expected in str(info.value)


def test_the_loaded_dicts_train_through_the_mapper_on_real_images(tmp_path):
    """The mapper's checks name the json's annotation ids; crowd boxes stay out of the sequence."""
    from pix2seq_d2 import Pix2SeqDatasetMapper
    from pix2seq_d2.data.annotation_checks import valid_annotations
    from tests.helpers import tiny_cfg

    dicts = load_coco_json_checked(write_json(tmp_path / "ok.json", valid_coco(tmp_path)), str(tmp_path))
    kept = valid_annotations(dicts[1]["annotations"], dicts[1]["file_name"], num_classes=3)
    assert [a["id"] for a in kept] == [11, 12, 13]
    mapper = Pix2SeqDatasetMapper(tiny_cfg("MODEL.PIX2SEQ.NUM_CLASSES", 3, "MODEL.PIX2SEQ.OBJECT_ORDER", "none"), True)
    mapped = [mapper(copy.deepcopy(d)) for d in dicts]
    assert [m["image"].shape[0] for m in mapped] == [3, 3, 3]
    assert [m["instances"].gt_classes.tolist() for m in mapped] == [[1], [2, 0], []]  # image a: crowd box left out


def test_the_class_names_of_a_registered_dataset_are_there_before_a_loader_is_built(tmp_path, names):
    """The predictor and the demo read thing_classes from the metadata without loading the dataset."""
    name = f"classes_{tmp_path.name}"
    names.append(name)
    register_coco_json(name, write_json(tmp_path / "val.json", valid_coco()), tmp_path)
    assert MetadataCatalog.get(name).get("thing_classes") is None  # registration does not parse the json
    assert ensure_coco_metadata(name).thing_classes == ["one", "three", "seven"]
    assert ensure_coco_metadata("coco_2017_val").thing_classes[0] == "person"  # others: as they are
