"""An embedded, deterministic synthetic detection dataset ("pix2seq shapes").

The quickstart and the tests need a detection dataset that is small, needs no
download, and is still a fair learning problem.  This module draws one: filled
circles, squares and triangles of random colours and sizes on noisy, textured
backgrounds (with thin distractor lines that are not annotated).  A split is
written on first use as ``<root>/<split>/XXXXXX.jpg`` images plus a COCO
instances json at ``<root>/annotations/<split>.json``, so that every standard
Detectron2 tool (``load_coco_json``, ``COCOEvaluator``, the visualizer) works on
it unchanged.

Generation is deterministic: a split is fully defined by its
:class:`ShapesSplitSpec` (seed, number of images, image size) and
:data:`GENERATOR_VERSION`; the same spec always gives a byte-identical json and
identical pixels.  These parameters are recorded under the json's ``"info"`` key,
and a split whose json already records them is not generated again.

Scene rules (what a detector has to learn):

* ``image_size`` x ``image_size`` RGB, 1 to 4 objects per image (uniform).
* Bounding-box sides are uniform in [0.1, 0.5] of the image side.  Circles and
  squares have aspect ratio 1; triangles are isosceles, pointing up, with
  height / width in [0.8, 1.25].  Colour is independent of the class, so only
  the shape tells the classes apart.
* Objects lie fully inside the image; later objects are drawn over earlier
  ones.  A placement is rejected (and a new size and position drawn) when it
  would hide more than half of an earlier object or hide any part of the
  outermost 0.5 px of an earlier object's box, so every annotated object is
  clearly visible and its box is tight both on the geometry and on the visible
  pixels.  If no valid placement is found after a fixed number of tries, that
  object is not drawn at all (so an image never has fewer than 1 object, and
  only rarely fewer than it drew).
* Boxes are ``[x, y, w, h]`` floats in pixels of the final image, computed from
  the drawn geometry (shapes are drawn on a 4x supersampled canvas, so boxes
  are multiples of 0.25 px), then downsampled with a Lanczos filter.  Gaussian
  pixel noise (sigma 8 to 15 on 0..255) is added last.
"""

from __future__ import annotations

import colorsys
import io
import json
import logging
import math
import os
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image, ImageDraw
from tqdm import tqdm

__all__ = [
    "GENERATOR_VERSION",
    "SHAPES_SPLITS",
    "SHAPE_CLASSES",
    "ShapesSplitSpec",
    "default_shapes_root",
    "ensure_shapes_generated",
    "generate_shapes_split",
    "register_shapes_datasets",
    "shapes_split_paths",
]

logger = logging.getLogger(__name__)

SHAPE_CLASSES: tuple[str, ...] = ("circle", "square", "triangle")
"""Class names; COCO category ids are ``1 + index``."""

GENERATOR_VERSION: int = 1
"""Bump whenever the drawing code changes what a given seed produces."""


_DEFAULT_OBJECTS = (1, 4)
_DEFAULT_REL_SIZE = (0.1, 0.5)


@dataclass(frozen=True)
class ShapesSplitSpec:
    """Everything that defines the content of one split."""

    num_images: int
    seed: int
    image_size: int
    objects: tuple[int, int] = _DEFAULT_OBJECTS  # attempted objects per image, inclusive range
    rel_size: tuple[float, float] = _DEFAULT_REL_SIZE  # box side / image side


SHAPES_SPLITS: dict[str, ShapesSplitSpec] = {
    "shapes_train": ShapesSplitSpec(num_images=4000, seed=0, image_size=96),
    "shapes_val": ShapesSplitSpec(num_images=300, seed=1, image_size=96),
    # Crowded scenes (6-12 smaller objects attempted; fewer where occlusion limits forbid one),
    # where a model that ends its sequence too early loses recall.
    "shapes_dense_train": ShapesSplitSpec(
        num_images=4000, seed=2, image_size=96, objects=(6, 12), rel_size=(0.08, 0.3)
    ),
    "shapes_dense_val": ShapesSplitSpec(num_images=300, seed=3, image_size=96, objects=(6, 12), rel_size=(0.08, 0.3)),
}
"""The registered splits: dataset name -> spec (validation uses another seed)."""

# --- scene parameters -------------------------------------------------------
_SUPERSAMPLE = 4  # shapes are drawn at this many times the final resolution
_JPEG_QUALITY = 95
_TRIANGLE_ASPECT = (0.8, 1.25)  # height / width
_MAX_OCCLUDED_FRACTION = 0.5  # of an earlier object's area, hidden by later ones
_MAX_EXTENT_LOSS_PX = 0.5  # an earlier object's visible extent may shrink by this
_PLACEMENT_TRIES = 25
_COLOUR_TRIES = 20
_MIN_COLOUR_DISTANCE = 90.0  # RGB euclidean, object vs local background / neighbours
_NOISE_SIGMA = (8.0, 15.0)
_MAX_LINES = 3  # distractor lines per image (not annotated)
_LINE_WIDTH_PX = (1, 2)


# --- paths --------------------------------------------------------------------
def default_shapes_root() -> str:
    """Where the splits live by default: ``$DETECTRON2_DATASETS/pix2seq_shapes``."""
    return os.path.join(os.getenv("DETECTRON2_DATASETS", "datasets"), "pix2seq_shapes")


def shapes_split_paths(root: str | os.PathLike[str], split: str) -> tuple[str, str]:
    """Return ``(json_file, image_root)`` of a split under ``root``, without generating it."""
    root = os.fspath(root)
    return (
        os.path.join(root, "annotations", f"{split}.json"),
        os.path.join(root, split),
    )


# --- drawing ------------------------------------------------------------------
@dataclass(frozen=True)
class _Shape:
    """One object, in supersampled pixels: it covers ``[x0, x1) x [y0, y1)``."""

    category: int  # index into SHAPE_CLASSES
    x0: int
    y0: int
    x1: int
    y1: int
    color: tuple[int, int, int]

    def mask(self) -> np.ndarray:
        """Boolean ``(y1 - y0, x1 - x0)`` mask of the filled shape inside its box."""
        w, h = self.x1 - self.x0, self.y1 - self.y0
        canvas = Image.new("L", (w, h), 0)
        draw = ImageDraw.Draw(canvas)
        # PIL boxes and polygon vertices are inclusive pixel coordinates.
        name = SHAPE_CLASSES[self.category]
        if name == "circle":
            draw.ellipse([0, 0, w - 1, h - 1], fill=255)
        elif name == "square":
            draw.rectangle([0, 0, w - 1, h - 1], fill=255)
        elif name == "triangle":
            draw.polygon([(0, h - 1), (w - 1, h - 1), ((w - 1) / 2, 0)], fill=255)
        else:  # pragma: no cover - SHAPE_CLASSES and this function go together
            raise ValueError(f"no drawing code for shape {name!r}")
        return np.asarray(canvas) > 0

    def bbox_xywh(self, supersample: int = _SUPERSAMPLE) -> list[float]:
        """The tight box ``[x, y, w, h]`` in pixels of the final image."""
        s = float(supersample)
        return [
            self.x0 / s,
            self.y0 / s,
            (self.x1 - self.x0) / s,
            (self.y1 - self.y0) / s,
        ]


@dataclass(frozen=True)
class _Line:
    """A thin distractor line (supersampled pixels)."""

    xy: tuple[float, float, float, float]
    width: int
    color: tuple[int, int, int]


def _hsv_color(h: float, s: float, v: float) -> tuple[int, int, int]:
    r, g, b = colorsys.hsv_to_rgb(h, s, v)
    return (round(r * 255), round(g * 255), round(b * 255))


def _sample_background(rng: np.random.Generator, image_size: int) -> np.ndarray:
    """A smooth random colour gradient plus a low-frequency texture, uint8 ``(S, S, 3)``.

    Returned at supersampled resolution ``S = image_size * _SUPERSAMPLE``; its colours
    are muted (low saturation) so that the saturated objects stand out.
    """
    c0 = np.array(_hsv_color(rng.random(), rng.uniform(0.0, 0.5), rng.uniform(0.2, 0.9)), float)
    c1 = np.array(_hsv_color(rng.random(), rng.uniform(0.0, 0.5), rng.uniform(0.2, 0.9)), float)
    angle = rng.uniform(0.0, 2.0 * math.pi)
    coords = (np.arange(image_size, dtype=np.float64) + 0.5) / image_size
    ramp = math.cos(angle) * coords[None, :] + math.sin(angle) * coords[:, None]
    ramp = (ramp - ramp.min()) / max(float(ramp.max() - ramp.min()), 1e-6)
    background = c0 + (c1 - c0) * ramp[..., None]
    for _ in range(3):  # a few soft plane waves, 0.5 to 2.5 periods per image
        freq = rng.uniform(0.5, 2.5)
        theta = rng.uniform(0.0, 2.0 * math.pi)
        phase = rng.uniform(0.0, 2.0 * math.pi)
        amplitude = rng.uniform(-12.0, 12.0, size=3)
        u = 2.0 * math.pi * freq * coords
        wave = np.sin(math.cos(theta) * u[None, :] + math.sin(theta) * u[:, None] + phase)
        background += wave[..., None] * amplitude
    small = Image.fromarray(np.clip(np.rint(background), 0, 255).astype(np.uint8), "RGB")
    size = image_size * _SUPERSAMPLE
    return np.asarray(small.resize((size, size), Image.Resampling.BILINEAR)).copy()


def _sample_lines(rng: np.random.Generator, image_size: int) -> list[_Line]:
    """0 to ``_MAX_LINES`` long thin lines of any colour, drawn under the objects."""
    lines = []
    for _ in range(int(rng.integers(0, _MAX_LINES + 1))):
        cx, cy = rng.uniform(0.0, image_size, size=2)
        theta = rng.uniform(0.0, math.pi)
        half = 0.5 * rng.uniform(0.5, 1.5) * image_size
        dx, dy = half * math.cos(theta), half * math.sin(theta)
        width = int(rng.integers(_LINE_WIDTH_PX[0], _LINE_WIDTH_PX[1] + 1))
        color = _hsv_color(rng.random(), rng.random(), rng.uniform(0.2, 1.0))
        s = _SUPERSAMPLE
        lines.append(
            _Line(
                ((cx - dx) * s, (cy - dy) * s, (cx + dx) * s, (cy + dy) * s),
                width * s,
                color,
            )
        )
    return lines


def _pick_color(rng: np.random.Generator, references: Sequence[np.ndarray]) -> tuple[int, int, int]:
    """A saturated colour far from every reference colour (best of a few draws)."""
    best, best_distance = (255, 0, 0), -1.0
    for _ in range(_COLOUR_TRIES):
        color = _hsv_color(rng.random(), rng.uniform(0.6, 1.0), rng.uniform(0.55, 1.0))
        rgb = np.array(color, float)
        distance = min((float(np.linalg.norm(rgb - ref)) for ref in references), default=1e9)
        if distance > best_distance:
            best, best_distance = color, distance
        if distance >= _MIN_COLOUR_DISTANCE:
            break
    return best


def _visible_extent_ok(visible: np.ndarray, tolerance: int) -> bool:
    """Whether a visible mask still reaches (within ``tolerance``) all four box sides."""
    cols, rows = visible.any(axis=0), visible.any(axis=1)
    if not cols.any():
        return False
    return (
        int(np.argmax(cols)) <= tolerance
        and int(np.argmax(cols[::-1])) <= tolerance
        and int(np.argmax(rows)) <= tolerance
        and int(np.argmax(rows[::-1])) <= tolerance
    )


def _place_shapes(
    rng: np.random.Generator, background: np.ndarray, spec: ShapesSplitSpec
) -> tuple[list[_Shape], list[int]]:
    """Draw the objects of one image; return them and their visible areas (supersampled px)."""
    image_size = spec.image_size
    min_rel_size, max_rel_size = spec.rel_size
    s = _SUPERSAMPLE
    size = image_size * s
    tolerance = round(_MAX_EXTENT_LOSS_PX * s)
    # index of the object on top at each supersampled pixel (-1: background)
    owner = np.full((size, size), -1, dtype=np.int16)
    shapes: list[_Shape] = []
    visible: list[int] = []
    full: list[int] = []
    for _ in range(int(rng.integers(spec.objects[0], spec.objects[1] + 1))):
        category = int(rng.integers(len(SHAPE_CLASSES)))
        for _try in range(_PLACEMENT_TRIES):
            # Draws happen in the same order whatever the class, so the stream stays aligned.
            side = rng.uniform(min_rel_size, max_rel_size) * image_size
            aspect = math.exp(rng.uniform(math.log(_TRIANGLE_ASPECT[0]), math.log(_TRIANGLE_ASPECT[1])))
            fx, fy = rng.random(), rng.random()
            w_px = side
            h_px = side
            if SHAPE_CLASSES[category] == "triangle":
                h_px = min(
                    max(side * aspect, min_rel_size * image_size),
                    max_rel_size * image_size,
                )
            w, h = max(1, round(w_px * s)), max(1, round(h_px * s))
            x0 = min(round(fx * (image_size - w_px) * s), size - w)
            y0 = min(round(fy * (image_size - h_px) * s), size - h)
            candidate = _Shape(category, x0, y0, x0 + w, y0 + h, (0, 0, 0))
            mask = candidate.mask()
            region = owner[y0 : y0 + h, x0 : x0 + w]
            hidden = region[mask]
            lost = np.bincount(hidden[hidden >= 0], minlength=len(shapes))
            if _occlusion_ok(shapes, visible, full, lost, owner, candidate, mask, tolerance):
                break
        else:
            continue  # no valid placement: this object is not drawn
        references = [background[y0 : y0 + h, x0 : x0 + w].reshape(-1, 3).mean(axis=0)]
        margin = 2 * s
        for other in shapes:  # earlier objects touching this one
            if (
                other.x0 < candidate.x1 + margin
                and candidate.x0 < other.x1 + margin
                and other.y0 < candidate.y1 + margin
                and candidate.y0 < other.y1 + margin
            ):
                references.append(np.array(other.color, float))
        shape = _Shape(category, x0, y0, x0 + w, y0 + h, _pick_color(rng, references))
        for index in np.nonzero(lost)[0]:
            visible[index] -= int(lost[index])
        region[mask] = len(shapes)
        area = int(mask.sum())
        shapes.append(shape)
        visible.append(area)
        full.append(area)
    return shapes, visible


def _occlusion_ok(
    shapes: Sequence[_Shape],
    visible: Sequence[int],
    full: Sequence[int],
    lost: np.ndarray,
    owner: np.ndarray,
    candidate: _Shape,
    mask: np.ndarray,
    tolerance: int,
) -> bool:
    """Whether drawing ``candidate`` keeps every earlier object clearly visible."""
    for index in np.nonzero(lost)[0]:
        if visible[index] - lost[index] < (1.0 - _MAX_OCCLUDED_FRACTION) * full[index]:
            return False
        other = shapes[index]
        still = owner[other.y0 : other.y1, other.x0 : other.x1] == index
        # Remove what the candidate would cover, in the other object's box coordinates.
        ix0, ix1 = max(other.x0, candidate.x0), min(other.x1, candidate.x1)
        iy0, iy1 = max(other.y0, candidate.y0), min(other.y1, candidate.y1)
        covered = mask[
            iy0 - candidate.y0 : iy1 - candidate.y0,
            ix0 - candidate.x0 : ix1 - candidate.x0,
        ]
        still[iy0 - other.y0 : iy1 - other.y0, ix0 - other.x0 : ix1 - other.x0] &= ~covered
        if not _visible_extent_ok(still, tolerance):
            return False
    return True


def _render(
    background: np.ndarray,
    lines: Sequence[_Line],
    shapes: Sequence[_Shape],
    image_size: int,
    noise_sigma: float,
    rng: np.random.Generator | None,
) -> np.ndarray:
    """Compose a scene (supersampled background, lines, objects) into a uint8 ``(S, S, 3)`` image.

    Objects are painted in order (later ones on top), the canvas is downsampled with
    a Lanczos filter, then Gaussian noise of ``noise_sigma`` is added (none if 0).
    """
    canvas = Image.fromarray(np.ascontiguousarray(background, dtype=np.uint8), "RGB")
    draw = ImageDraw.Draw(canvas)
    for line in lines:
        draw.line(line.xy, fill=line.color, width=line.width)
    pixels = np.array(canvas)
    for shape in shapes:
        pixels[shape.y0 : shape.y1, shape.x0 : shape.x1][shape.mask()] = shape.color
    small = Image.fromarray(pixels, "RGB").resize((image_size, image_size), Image.Resampling.LANCZOS)
    out = np.asarray(small, dtype=np.float32)
    if noise_sigma > 0:
        if rng is None:
            raise ValueError("noise needs a random generator")
        out = out + rng.normal(0.0, noise_sigma, size=out.shape).astype(np.float32)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def _generate_image(rng: np.random.Generator, spec: ShapesSplitSpec) -> tuple[np.ndarray, list[_Shape], list[int]]:
    """One random image: pixels, objects and their visible areas (supersampled px)."""
    image_size = spec.image_size
    background = _sample_background(rng, image_size)
    lines = _sample_lines(rng, image_size)
    shapes, visible = _place_shapes(rng, background, spec)
    sigma = rng.uniform(*_NOISE_SIGMA)
    return _render(background, lines, shapes, image_size, sigma, rng), shapes, visible


# --- files ----------------------------------------------------------------------
def _info(spec: ShapesSplitSpec) -> dict[str, Any]:
    return {
        "description": "pix2seq_d2 synthetic shapes",
        "generator": "pix2seq_d2.data.datasets.shapes",
        "generator_version": GENERATOR_VERSION,
        "seed": spec.seed,
        "num_images": spec.num_images,
        "image_size": spec.image_size,
        # Only where they differ from the defaults, so that existing splits stay up to date.
        **({"objects": list(spec.objects)} if spec.objects != _DEFAULT_OBJECTS else {}),
        **({"rel_size": list(spec.rel_size)} if spec.rel_size != _DEFAULT_REL_SIZE else {}),
    }


def _is_up_to_date(json_file: str, spec: ShapesSplitSpec) -> bool:
    try:
        with open(json_file, encoding="utf-8") as f:
            info = json.load(f).get("info", {})
    except (OSError, ValueError, AttributeError):
        return False
    expected = _info(spec)
    keys = ("generator_version", "seed", "num_images", "image_size", "objects", "rel_size")
    return all(info.get(key) == expected.get(key) for key in keys)


def _write_atomically(path: str, data: bytes) -> None:
    """Write ``data`` to a temporary file next to ``path``, then rename it into place."""
    folder, base = os.path.split(path)
    tmp = os.path.join(folder, f".{base}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def generate_shapes_split(root: str | os.PathLike[str], split: str, spec: ShapesSplitSpec) -> tuple[str, str]:
    """Write one split (images and COCO json) under ``root`` unless it is already there.

    Images go to ``<root>/<split>/XXXXXX.jpg`` (named by image id, from 1) and the
    annotations to ``<root>/annotations/<split>.json``.  The json is
    written last, through a temporary file and ``os.replace``, so it only exists
    once every image does; a json whose ``"info"`` records the same seed,
    ``num_images``, ``image_size`` and :data:`GENERATOR_VERSION` means the split is
    complete, and then nothing is done.

    Returns:
        ``(json_file, image_root)``.
    """
    json_file, image_root = shapes_split_paths(root, split)
    if _is_up_to_date(json_file, spec):
        return json_file, image_root
    if spec.num_images < 0 or spec.image_size < 8:
        raise ValueError(f"invalid spec for {split}: {spec}")
    os.makedirs(image_root, exist_ok=True)
    os.makedirs(os.path.dirname(json_file), exist_ok=True)
    logger.info("Generating synthetic split %s (%s) into %s", split, spec, image_root)

    rng = np.random.Generator(np.random.PCG64(spec.seed))
    images: list[dict[str, Any]] = []
    annotations: list[dict[str, Any]] = []
    for index in tqdm(range(spec.num_images), desc=f"generating {split}", unit="img"):
        image_id = index + 1
        pixels, shapes, visible = _generate_image(rng, spec)
        file_name = f"{image_id:06d}.jpg"
        buffer = io.BytesIO()
        Image.fromarray(pixels, "RGB").save(buffer, "JPEG", quality=_JPEG_QUALITY, subsampling=0)
        _write_atomically(os.path.join(image_root, file_name), buffer.getvalue())
        images.append(
            {
                "id": image_id,
                "file_name": file_name,
                "height": spec.image_size,
                "width": spec.image_size,
            }
        )
        for shape, area in zip(shapes, visible):
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": shape.category + 1,
                    "bbox": shape.bbox_xywh(),
                    "area": area / float(_SUPERSAMPLE**2),
                    "iscrowd": 0,
                }
            )
    dataset = {
        "info": _info(spec),
        "images": images,
        "annotations": annotations,
        "categories": [{"id": i + 1, "name": name, "supercategory": "shape"} for i, name in enumerate(SHAPE_CLASSES)],
    }
    _write_atomically(json_file, json.dumps(dataset, separators=(",", ":")).encode("utf-8"))
    return json_file, image_root


# --- detectron2 registration ------------------------------------------------------
class _LazyShapesLoader:
    """The function registered in ``DatasetCatalog``: generates the split on first use."""

    def __init__(self, name: str, root: str, spec: ShapesSplitSpec) -> None:
        self.name = name
        self.root = root
        self.spec = spec

    def generate(self) -> tuple[str, str]:
        return generate_shapes_split(self.root, self.name, self.spec)

    def __call__(self) -> list[dict[str, Any]]:
        from detectron2.data.datasets import load_coco_json

        json_file, image_root = self.generate()
        return load_coco_json(json_file, image_root, self.name)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, root={self.root!r}, spec={self.spec})"


def register_shapes_datasets(root: str | os.PathLike[str] | None = None) -> None:
    """Register every split of :data:`SHAPES_SPLITS` in Detectron2's catalogs.

    Each split is registered as a COCO instances dataset (metadata ``json_file``,
    ``image_root``, ``evaluator_type="coco"``, plus ``thing_classes`` and
    ``thing_dataset_id_to_contiguous_id`` known up front); its images and json are
    only generated when ``DatasetCatalog.get(name)`` is first called (or
    :func:`ensure_shapes_generated`).  Names already registered are left alone, so
    calling this twice is harmless.

    Args:
        root: folder holding the splits; :func:`default_shapes_root` if None.
    """
    from detectron2.data import DatasetCatalog
    from detectron2.data.datasets import register_coco_instances

    root = os.fspath(root) if root is not None else default_shapes_root()
    metadata = {
        "thing_classes": list(SHAPE_CLASSES),
        "thing_dataset_id_to_contiguous_id": {i + 1: i for i in range(len(SHAPE_CLASSES))},
    }
    for name, spec in SHAPES_SPLITS.items():
        if name in DatasetCatalog:
            continue
        json_file, image_root = shapes_split_paths(root, name)
        register_coco_instances(name, dict(metadata), json_file, image_root)
        DatasetCatalog.remove(name)
        DatasetCatalog.register(name, _LazyShapesLoader(name, root, spec))


def ensure_shapes_generated(name: str) -> None:
    """Generate a split registered by :func:`register_shapes_datasets` if it is not on disk yet.

    Useful before building a ``COCOEvaluator``, which reads the json file directly.

    Raises:
        KeyError: ``name`` is not registered.
        TypeError: ``name`` is registered, but not by :func:`register_shapes_datasets`.
    """
    from detectron2.data import DatasetCatalog

    if name not in DatasetCatalog:
        raise KeyError(f"dataset {name!r} is not registered")
    loader = DatasetCatalog[name]
    if not isinstance(loader, _LazyShapesLoader):
        raise TypeError(f"dataset {name!r} was not registered by register_shapes_datasets()")
    loader.generate()
