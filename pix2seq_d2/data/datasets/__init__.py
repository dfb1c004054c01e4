"""Datasets: the checked COCO json reader and registration by name (``DATASETS.COCO``), and the embedded
synthetic shapes dataset of the quickstart."""

from .coco import CocoJsonError, load_coco_json_checked, read_coco_categories
from .register_coco import ensure_coco_metadata, register_coco_datasets, register_coco_json
from .shapes import SHAPES_SPLITS, register_shapes_datasets, shapes_split_paths

__all__ = [
    "CocoJsonError",
    "SHAPES_SPLITS",
    "ensure_coco_metadata",
    "load_coco_json_checked",
    "read_coco_categories",
    "register_coco_datasets",
    "register_coco_json",
    "register_shapes_datasets",
    "shapes_split_paths",
]
