"""Datasets: the checked COCO json reader (the one reader of COCO json files: datasets, ground truth, categories),
registration by name (``DATASETS.COCO``), the same reader for datasets registered by detectron2's
``register_coco_instances``, and the embedded synthetic shapes dataset of the quickstart."""

from .coco import CocoJsonError, load_coco_ground_truth, load_coco_json_checked, read_coco_categories
from .register_coco import (
    EmptyDatasetError,
    checked_dataset_dicts,
    coco_ground_truth,
    ensure_coco_metadata,
    is_registered_by_register_coco_instances,
    register_coco_datasets,
    register_coco_json,
    use_checked_coco_loader,
)
from .shapes import SHAPES_SPLITS, register_shapes_datasets, shapes_split_paths

__all__ = [
    "CocoJsonError",
    "EmptyDatasetError",
    "SHAPES_SPLITS",
    "checked_dataset_dicts",
    "coco_ground_truth",
    "ensure_coco_metadata",
    "is_registered_by_register_coco_instances",
    "load_coco_ground_truth",
    "load_coco_json_checked",
    "read_coco_categories",
    "register_coco_datasets",
    "register_coco_json",
    "register_shapes_datasets",
    "shapes_split_paths",
    "use_checked_coco_loader",
]
