"""An embedded, deterministic synthetic detection dataset ("pix2seq shapes").

The quickstart and the tests need a detection dataset that is small, needs no
download, and is still a fair learning problem.  This module draws one: filled
circles, squares and triangles of random colours and sizes on noisy, textured
backgrounds (with thin distractor lines that are not annotated).  A split is
written on first use as ``<root>/<split>/XXXXXX.jpg`` images plus a COCO
instances json at ``<root>/annotations/<split>.json``, so that every standard
Detectron2 tool (``load_coco_json``, ``COCOEvaluator``, the visualizer) works on
it unchanged; it is loaded by the checked reader (:mod:`.coco`), like every COCO json.

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

import io
import json
import logging
import os
from typing import Any

import numpy as np
from PIL import Image
from tqdm import tqdm

from pix2seq_d2.utils.file_io import atomic_write_bytes

from .coco import load_coco_json_checked
from .shapes_scenes import (
    DEFAULT_OBJECTS,
    DEFAULT_REL_SIZE,
    GENERATOR_VERSION,
    JPEG_QUALITY,
    SHAPE_CLASSES,
    SUPERSAMPLE,
    ShapesSplitSpec,
    generate_image,
)

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
        **({"objects": list(spec.objects)} if spec.objects != DEFAULT_OBJECTS else {}),
        **({"rel_size": list(spec.rel_size)} if spec.rel_size != DEFAULT_REL_SIZE else {}),
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
        pixels, shapes, visible = generate_image(rng, spec)
        file_name = f"{image_id:06d}.jpg"
        buffer = io.BytesIO()
        Image.fromarray(pixels, "RGB").save(buffer, "JPEG", quality=JPEG_QUALITY, subsampling=0)
        atomic_write_bytes(os.path.join(image_root, file_name), buffer.getvalue())
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
                    "area": area / float(SUPERSAMPLE**2),
                    "iscrowd": 0,
                }
            )
    dataset = {
        "info": _info(spec),
        "images": images,
        "annotations": annotations,
        "categories": [{"id": i + 1, "name": name, "supercategory": "shape"} for i, name in enumerate(SHAPE_CLASSES)],
    }
    atomic_write_bytes(json_file, json.dumps(dataset, separators=(",", ":")).encode("utf-8"))
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
        json_file, image_root = self.generate()
        return load_coco_json_checked(json_file, image_root, self.name)

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
