"""Checks on the annotations of training images: unusable boxes are dropped with a warning naming the file
and the annotation; a category id outside the model's classes is an error naming them.

* Annotations with a NaN/infinite coordinate or a negative width/height are dropped with a warning
  naming the file and the annotation (:func:`valid_annotations`), once per annotation;
* a category id outside ``0..NUM_CLASSES-1`` stops with an error naming them and ``NUM_CLASSES``
  (:func:`check_category_ids` before training, :func:`valid_annotations` per image);
* a dataset whose function calls detectron2's ``load_coco_json`` and fails is explained by the checked COCO
  reader (:func:`explain_dataset_error`).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable

import numpy as np
from detectron2.data import MetadataCatalog
from detectron2.structures import BoxMode
from detectron2.utils.logger import log_first_n

from pix2seq_d2.data.datasets.coco import CocoJsonError, load_coco_json_checked

__all__ = ["check_category_ids", "drop_invalid_annotations", "explain_dataset_error", "valid_annotations"]


def _annotation_name(obj: dict, position: int) -> str:
    return f"annotation id {obj['id']}" if "id" in obj else f"annotation #{position} (no 'id')"


def _is_known_class(category: object, num_classes: int) -> bool:
    """Whether ``category`` is a contiguous class id of the model: an integer in ``0..num_classes-1``."""
    return isinstance(category, (int, np.integer)) and 0 <= category < num_classes


def _warn_once(message: str) -> None:
    """Warn once per message (it names the file and the annotation): not again every epoch."""
    log_first_n(logging.WARNING, message, n=1, key="message")


def valid_annotations(annotations: list[dict], file_name: str, num_classes: int | None = None) -> list[dict]:
    """The annotations whose box can be used; the others are dropped with a warning naming them.

    Dropped: a box that is missing, has a NaN/infinite value, or a negative width/height
    (in its own ``bbox_mode``). Raises ``ValueError`` for a ``category_id`` outside
    ``0..num_classes-1`` (a dataset/config mismatch, not a bad annotation).
    """
    kept = []
    for position, obj in enumerate(annotations):
        name = _annotation_name(obj, position)
        box = obj.get("bbox")
        if box is None or len(box) != 4:
            _warn_once(f"Skipping {name} of {file_name}: 'bbox' must have 4 numbers, got {box!r}")
            continue
        values = [float(v) for v in box]
        if not all(math.isfinite(v) for v in values):
            _warn_once(f"Skipping {name} of {file_name}: its box {box} has NaN or infinite values")
            continue
        mode = obj.get("bbox_mode", BoxMode.XYWH_ABS)
        if mode in (BoxMode.XYWH_ABS, BoxMode.XYWH_REL):
            width, height = values[2], values[3]
        else:
            width, height = values[2] - values[0], values[3] - values[1]
        if width < 0 or height < 0:
            _warn_once(
                f"Skipping {name} of {file_name}: its box {box} ({BoxMode(mode).name}) has a negative width or height"
            )
            continue
        if num_classes is not None:
            category = obj.get("category_id")
            if not _is_known_class(category, num_classes):
                raise ValueError(
                    f"{name} of {file_name} has category_id={category!r}, outside 0..{num_classes - 1} "
                    f"(MODEL.PIX2SEQ.NUM_CLASSES={num_classes}): set NUM_CLASSES to the dataset's number of "
                    "classes (len(thing_classes)), or fix the annotation"
                )
        kept.append(obj)
    return kept


def drop_invalid_annotations(dataset_dict: dict, num_classes: int | None = None) -> None:
    """Replace ``dataset_dict["annotations"]`` (if any) by its :func:`valid_annotations`."""
    if dataset_dict.get("annotations") is not None:
        file_name = dataset_dict.get("file_name", "?")
        dataset_dict["annotations"] = valid_annotations(dataset_dict["annotations"], file_name, num_classes)


def check_category_ids(dataset_dicts: list[dict], num_classes: int, dataset_names: Iterable[str] = ()) -> None:
    """Raise a ``ValueError`` naming the first annotation whose ``category_id`` is not in
    ``0..num_classes-1`` (and how many there are), before any training starts."""
    bad = [
        (d.get("file_name"), position, obj)
        for d in dataset_dicts
        for position, obj in enumerate(d.get("annotations", ()))
        if not _is_known_class(obj.get("category_id"), num_classes)
    ]
    if bad:
        file_name, position, obj = bad[0]
        ids = sorted({str(o.get("category_id")) for _, _, o in bad})
        raise ValueError(
            f"{len(bad)} annotations of the training set {tuple(dataset_names)} have a category id outside "
            f"0..{num_classes - 1} (MODEL.PIX2SEQ.NUM_CLASSES={num_classes}); ids {', '.join(ids[:10])}. "
            f"First: {_annotation_name(obj, position)} of {file_name}. Set MODEL.PIX2SEQ.NUM_CLASSES to the "
            "dataset's number of classes (len(thing_classes))."
        )


def explain_dataset_error(dataset_names: Iterable[str]) -> str | None:
    """After a ``KeyError`` while loading datasets (detectron2's ``load_coco_json`` on an annotation whose
    category is not in the json, naming neither the file nor the annotation): what the checked COCO reader
    finds wrong with their metadata's json files. None: nothing."""
    found = []
    for name in dataset_names:
        meta = MetadataCatalog.get(name)
        json_file = meta.get("json_file")
        if json_file:
            try:
                load_coco_json_checked(json_file, meta.get("image_root", ""), allow_empty=True)
            except CocoJsonError as e:
                found.append(str(e))
    return "; ".join(found) or None
