"""Validation of a parsed COCO instances json: which problems are errors, which boxes are skipped, and
which are only warned about.

What each kind of problem does. An *error* is a :class:`CocoJsonError` (a ``ValueError``) whose
message names the json file, the image (file name and id) and the annotation (its ``"id"``, or
its position when it has none), says what is wrong and what is expected, and lists up to 10
problems of the same part of the file with their total count. A *skip* drops the annotation
with a warning naming the json file, the image and the annotation id (the first 10 one by one)
and one summary ("skipped 3 of 120 annotations of 2 images whose box cannot be used
(2 with a non-numeric or non-finite coordinate, 1 with a zero width or height)"). Warnings are
logged once per process (the same file loaded again, or read again by the evaluator, does not
repeat them). How errors and warnings are worded and counted: :mod:`.coco_reports`.

Errors (the dataset cannot be used as it is, or would silently give wrong boxes or classes):

- the json file is missing, unreadable, a folder, or empty;
- it is not json (the error gives line and column) or not UTF-8/16/32 text (a BOM is fine);
- its top level is not an object (a list gets the hint "a detection results file?");
- ``images``, ``annotations`` or ``categories`` is missing or not a list (a dataset without
  objects needs ``"annotations": []``); ``images`` is empty (the error names the dataset);
- ``categories`` is empty; a category is not an object, has no integer ``id`` or no string
  ``name``, or repeats an id;
- an image is not an object, has no integer ``id``, no non-empty string ``file_name``, or a
  ``height``/``width`` that is missing or not a positive integer (480.0 counts as 480);
- two images share an id (one image's boxes would land on the other) or a ``file_name`` (its
  boxes would be split between two copies);
- an annotation is not an object, has no integer ``id`` (named by image and position), repeats
  an id (COCO evaluation indexes the json by id: one would hide the other), has an ``image_id``
  that is no image's id (ids out of step: boxes lost) or a ``category_id`` that is no
  category's id;
- ``iscrowd`` is not 0 or 1 (``"0"``, 2, null, ...: a truthy string would silently make the box
  a crowd region; true/false and 0.0/1.0 are fine, a missing one is 0); ``ignore`` is not 0
  (detectron2 refuses ``ignore`` too);
- every annotation of the file is skipped (below): a systematic conversion bug, not a few bad
  boxes.

With ``allow_empty`` (datasets registered by detectron2's ``register_coco_instances``, which keep
detectron2's reading of these two cases) a missing ``annotations`` list is a test set's image-info
file (images without objects; a warning) and an empty ``images`` list an empty dataset, which the
code that uses it reports.

Skips (one bad box, the rest of the image is fine): ``bbox`` missing, not a list of 4, with an
element that is not a finite real number (null, a string, a bool, NaN, infinity), or with a
negative or zero width or height.

Warnings (the box is kept): a box reaching beyond its image by more than
:data:`OUTSIDE_TOLERANCE_PIXELS` or :data:`OUTSIDE_TOLERANCE_FRACTION` of the image's width (left,
right) or height (top, bottom), whichever is larger (boxes in another resolution than the image, or
``[x0, y0, x1, y1]`` read as ``[x, y, width, height]``): training clips it to the image, as it clips
every box, and drops it when nothing is left; COCO evaluation compares predictions with it as it is
in the file. An ``area`` that is missing or not a number >= 0 (one warning; COCO evaluation uses the
box's area). Several categories with the same name.

Fine: an image without annotations (an image with no objects); malformed or missing
``segmentation``/``keypoints`` (not loaded).

Loading ``segmentation`` and ``keypoints``: their checks go next to the box's
(:func:`parse_annotations`, which returns the usable annotations as they are in the file), and
their dataset-dict fields next to the box's in the reader's ``annotation_record``.
"""

from __future__ import annotations

import math
import os
from collections import Counter
from dataclasses import dataclass
from typing import Any

from .coco_reports import CocoJsonError, Findings, Problems, describe_value, warn_once

__all__ = [
    "OUTSIDE_TOLERANCE_FRACTION",
    "OUTSIDE_TOLERANCE_PIXELS",
    "CheckedAnnotations",
    "check_top_level",
    "crowd_flag",
    "parse_annotations",
    "parse_categories",
    "parse_images",
    "usable_area",
]

_TOP_LEVEL = ("images", "annotations", "categories")
# A box may reach this far beyond its image without a warning (rounding, inclusive pixel coordinates):
OUTSIDE_TOLERANCE_PIXELS = 2.0
OUTSIDE_TOLERANCE_FRACTION = 0.01  # of the image's width (x) or height (y), where that is more


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_real(value: Any) -> bool:
    """A finite int or float (not a bool, string or null)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _zero_or_one(value: Any) -> int | None:
    """0 or 1 for a json 0/1 (int, float or bool), else None."""
    if isinstance(value, (int, float)) and value in (0, 1):  # bools are ints: false/true pass
        return int(value)
    return None


def check_top_level(data: Any, json_file: str, *, allow_empty: bool = False) -> None:
    """A CocoJsonError unless ``data`` is an object with the three lists (``allow_empty``: ``annotations``
    may be missing)."""
    if not isinstance(data, dict):
        hint = ""
        if isinstance(data, list) and data and isinstance(data[0], dict) and "score" in data[0]:
            hint = " (this looks like a detection results file, not a dataset)"
        raise CocoJsonError(
            f"COCO json {json_file}: the top level is a json {type(data).__name__}{hint}, expected an object "
            'with "images", "annotations" and "categories" lists'
        )
    problems = Problems()
    for key in _TOP_LEVEL:
        if key not in data:
            if key == "annotations" and allow_empty:
                warn_once(
                    f'COCO json {json_file} has no "annotations" list: loaded as a test set (images without '
                    "objects); COCO evaluation on it writes the predictions only"
                )
                continue
            extra = ' (a dataset without objects needs "annotations": [])' if key == "annotations" else ""
            problems.append(f'no "{key}" list{extra}')
        elif not isinstance(data[key], list):
            problems.append(f'"{key}" is {describe_value(data[key])}, expected a list')
    problems.raise_if_any(json_file, "top-level object", 'Expected "images", "annotations" and "categories" lists.')


def parse_categories(categories: list, json_file: str) -> tuple[list[int], list[str]]:
    """The sorted category ids and their names; a CocoJsonError for a bad category."""
    problems = Problems()
    by_id: dict[int, str] = {}
    if not categories:
        problems.append('"categories" is empty: a detection dataset needs at least one category')
    for position, category in enumerate(categories):
        name = f"category #{position}"
        if not isinstance(category, dict):
            problems.append(f"{name} is {describe_value(category)}, expected an object")
            continue
        category_id = category.get("id")
        if "id" in category:
            name += f" (id {describe_value(category_id)})"
        if not _is_int(category_id):
            problems.append(f"{name}: 'id' is {'missing' if 'id' not in category else 'not an integer'}")
            continue
        if not isinstance(category.get("name"), str):
            problems.append(f"{name}: 'name' is {describe_value(category.get('name'))}, expected a string")
            continue
        if category_id in by_id:
            problems.append(f"{name}: duplicate category id (also {by_id[category_id]!r})")
            continue
        by_id[category_id] = category["name"]
    problems.raise_if_any(json_file, '"categories"', 'Expected objects with an integer "id" and a "name".')
    ids = sorted(by_id)
    names = [by_id[i] for i in ids]
    repeated = sorted(n for n, c in Counter(names).items() if c > 1)
    if repeated:
        warn_once(f"COCO json {json_file}: several categories are named {', '.join(map(repr, repeated))}")
    return ids, names


def _image_size(image: dict, key: str) -> int | None:
    value = image.get(key)
    if _is_real(value) and value == int(value) and value > 0:
        return int(value)
    return None


def parse_images(images: list, json_file: str, image_root: str) -> tuple[dict[int, dict], dict[int, str]]:
    """Image id -> dataset dict (no annotations yet) and image id -> the json's file_name; a
    CocoJsonError for a bad image."""
    problems = Problems()
    records: dict[int, dict] = {}
    names: dict[int, str] = {}
    ids: dict[str, int] = {}
    for position, image in enumerate(images):
        if not isinstance(image, dict):
            problems.append(f"image #{position} is {describe_value(image)}, expected an object")
            continue
        image_id, file_name = image.get("id"), image.get("file_name")
        name = f"image #{position}" + (f" (id {describe_value(image_id)}" if "id" in image else " (no 'id'")
        name += f", {file_name!r})" if isinstance(file_name, str) else ")"
        wrong = []
        if not _is_int(image_id):
            wrong.append(f"'id' is {'missing' if 'id' not in image else describe_value(image_id)}, expected an integer")
        if not isinstance(file_name, str) or not file_name:
            missing = "missing" if "file_name" not in image else describe_value(file_name)
            wrong.append(f"'file_name' is {missing}, expected the image's path under the image root")
        sizes = {key: _image_size(image, key) for key in ("height", "width")}
        for key, size in sizes.items():
            if size is None:
                missing = "missing" if key not in image else describe_value(image[key])
                wrong.append(f"'{key}' is {missing}, expected a positive integer number of pixels")
        if wrong:
            problems.append(f"{name}: {'; '.join(wrong)}")
            continue
        if image_id in records:
            problems.append(f"{name}: duplicate image id (also {names[image_id]!r})")
            continue
        if file_name in ids:
            problems.append(f"{name}: duplicate file_name (also image id {ids[file_name]})")
            continue
        ids[file_name], names[image_id] = image_id, file_name
        records[image_id] = {
            "file_name": os.path.join(image_root, file_name),
            "height": sizes["height"],
            "width": sizes["width"],
            "image_id": image_id,
            "annotations": [],
        }
    problems.raise_if_any(
        json_file, '"images"',
        'Expected objects with a unique integer "id", a unique "file_name" and positive integer "height"/"width".',
    )  # fmt: skip
    return records, names


def _bad_box_reason(annotation: dict) -> tuple[str, str] | None:
    """``(kind, reason)``: why the annotation's box cannot be used, or None."""
    if "bbox" not in annotation:
        return "without 'bbox'", "no 'bbox'"
    box = annotation["bbox"]
    if not isinstance(box, list) or len(box) != 4:
        kind = "with a 'bbox' that is not a list of 4 numbers"
        return kind, f"'bbox' is {describe_value(box)}, expected a list of 4 numbers [x, y, width, height]"
    if not all(_is_real(v) for v in box):
        kind = "with a non-numeric or non-finite coordinate"
        return kind, f"'bbox' {describe_value(box)} has a coordinate that is not a finite number"
    for sign, bad in (("negative", box[2] < 0 or box[3] < 0), ("zero", box[2] == 0 or box[3] == 0)):
        if bad:
            return f"with a {sign} width or height", f"'bbox' {describe_value(box)} has a {sign} width or height"
    return None


def _annotation_name(annotation: dict, position: int, file_names: dict[int, str]) -> str:
    """'annotation id 7 of image a.png (id 3)', naming the position where it has no usable id."""
    if _is_int(annotation.get("id")):
        name = f"annotation id {annotation['id']}"
    else:
        name = f"annotation #{position} of \"annotations\" ('id' {describe_value(annotation.get('id'))})"
        if "id" not in annotation:
            name = f"annotation #{position} of \"annotations\" (no 'id')"
    image_id = annotation.get("image_id")
    if _is_int(image_id) and image_id in file_names:
        name += f" of image {file_names[image_id]} (id {image_id})"
    elif "image_id" in annotation:
        name += f" of image id {describe_value(image_id)}"
    return name


def _ids_text(ids: list[int]) -> str:
    return str(ids) if len(ids) <= 12 else f"[{', '.join(map(str, ids[:6]))}, ..., {ids[-1]}] ({len(ids)} ids)"


def _annotation_problems(
    annotation: dict, file_names: dict[int, str], id_map: dict[int, int], seen: dict[int, Any]
) -> list[str]:
    """What is wrong with an annotation's id, image, category and flags (not its box)."""
    wrong = []
    annotation_id = annotation.get("id")
    if not _is_int(annotation_id):
        wrong.append("'id' is missing" if "id" not in annotation else "'id' is not an integer")
    elif annotation_id in seen:
        other = seen[annotation_id]
        other = f"{file_names[other]} (id {other})" if other in file_names else f"id {describe_value(other)}"
        wrong.append(f"duplicate annotation id (also the id of an annotation of image {other})")
    image_id = annotation.get("image_id")
    if not (_is_int(image_id) and image_id in file_names):
        if "image_id" not in annotation:
            wrong.append("'image_id' is missing")
        else:
            wrong.append(f"'image_id' {describe_value(image_id)} is not the id of an image in \"images\"")
    category_id = annotation.get("category_id")
    if not (_is_int(category_id) and category_id in id_map):
        shown = "missing" if "category_id" not in annotation else describe_value(category_id)
        wrong.append(f"'category_id' {shown} is not among the categories' ids {_ids_text(sorted(id_map))}")
    if _zero_or_one(annotation.get("iscrowd", 0)) is None:
        wrong.append(f"'iscrowd' is {describe_value(annotation['iscrowd'])}, expected 0 or 1")
    ignore = _zero_or_one(annotation.get("ignore", 0))
    if ignore is None:
        wrong.append(f"'ignore' is {describe_value(annotation['ignore'])}, expected 0")
    elif ignore:
        wrong.append("'ignore' is 1, which detectron2 does not support: use \"iscrowd\": 1 for regions to ignore")
    return wrong


@dataclass
class CheckedAnnotations:
    """What :func:`parse_annotations` found: the usable annotations, as they are in the file and in its
    order, and how many were skipped or have no ``area``."""

    kept: list[dict]
    skipped: int
    missing_area: int


def crowd_flag(annotation: dict) -> int:
    """0 or 1: the ``iscrowd`` of an annotation that :func:`parse_annotations` kept (missing: 0)."""
    flag = _zero_or_one(annotation.get("iscrowd", 0))
    if flag is None:
        raise ValueError(f"'iscrowd' is {describe_value(annotation.get('iscrowd'))}: not a checked annotation")
    return flag


def _has_area(annotation: dict) -> bool:
    """Whether the annotation's own ``area`` is a finite number >= 0 (COCO evaluation can use it)."""
    area = annotation.get("area")
    return _is_real(area) and area >= 0


def usable_area(annotation: dict) -> float:
    """The ``area`` of a kept annotation, or its box's where that is missing or not a finite number >= 0."""
    if _has_area(annotation):
        return annotation["area"]
    return float(annotation["bbox"][2]) * float(annotation["bbox"][3])


def _outside_reason(box: list, width: int, height: int) -> str | None:
    """Why a (usable) box lies beyond its image by more than the tolerance, or None."""
    x, y, w, h = (float(v) for v in box)
    size = f"the {width}x{height} (width x height) image"
    if x >= width or y >= height or x + w <= 0 or y + h <= 0:
        return f"'bbox' {describe_value(box)} lies entirely outside {size}: training drops it"
    right, bottom = x + w - width, y + h - height
    sides = (("left", -x, width), ("top", -y, height), ("right", right, width), ("bottom", bottom, height))
    beyond = [
        f"{amount:.4g} px beyond its {side} edge"
        for side, amount, side_length in sides
        if amount > max(OUTSIDE_TOLERANCE_PIXELS, OUTSIDE_TOLERANCE_FRACTION * side_length)
    ]
    if not beyond:
        return None
    return f"'bbox' {describe_value(box)} reaches {' and '.join(beyond)} of {size}: training clips it to the image"


def parse_annotations(
    annotations: list,
    json_file: str,
    images: dict[int, dict],
    file_names: dict[int, str],
    id_map: dict[int, int],
    dataset_name: str | None,
) -> CheckedAnnotations:
    """Check every annotation (``images``: image id -> a dict with its ``height`` and ``width``); errors,
    skips and warnings as documented in the module docstring. Returns the usable annotations."""
    problems, skipped, outside = Problems(), Findings(), Findings()
    seen: dict[int, Any] = {}  # annotation id -> its image id
    kept: list[dict] = []
    missing_area = 0
    for position, annotation in enumerate(annotations):
        if not isinstance(annotation, dict):
            shown = describe_value(annotation)
            problems.append(f'annotation #{position} of "annotations" is {shown}, expected an object')
            continue
        annotation_id, image_id = annotation.get("id"), annotation.get("image_id")
        wrong = _annotation_problems(annotation, file_names, id_map, seen)
        if _is_int(annotation_id) and annotation_id not in seen:
            seen[annotation_id] = image_id
        if wrong:
            problems.append(f"{_annotation_name(annotation, position, file_names)}: {'; '.join(wrong)}")
            continue
        if problems.count:
            continue  # an error is coming: only look for more problems
        bad_box = _bad_box_reason(annotation)
        if bad_box is not None:
            skipped.append(_annotation_name(annotation, position, file_names), *bad_box, image_id)
            continue
        image = images[image_id]
        beyond = _outside_reason(annotation["bbox"], image["width"], image["height"])
        if beyond is not None:
            outside.append(_annotation_name(annotation, position, file_names), "outside", beyond, image_id)
        missing_area += not _has_area(annotation)
        kept.append(annotation)
    problems.raise_if_any(
        json_file, '"annotations"',
        'Expected objects with a unique integer "id", the "image_id" of an image, the "category_id" of a category '
        'and "iscrowd" 0 or 1.',
    )  # fmt: skip
    if skipped.count and not kept:
        name, reason = skipped.listed[0]
        raise CocoJsonError(
            f"COCO json {json_file}: none of its {skipped.count} annotations has a usable box "
            f"({skipped.kinds_text()}); first: {name}: {reason}. "
            "Expected 'bbox': [x, y, width, height] of finite numbers (not strings) with positive width and height."
        )
    dataset = f" (dataset {dataset_name})" if dataset_name else ""
    if skipped.count:
        skipped.warn_each(json_file, "skipping ")
        warn_once(
            f"COCO json {json_file}{dataset}: skipped {skipped.count} of {len(annotations)} annotations of "
            f"{skipped.images_text()} whose box cannot be used ({skipped.kinds_text()}){skipped.more_text()}. "
            "COCO evaluation leaves them out too."
        )
    if outside.count:
        outside.warn_each(json_file)
        warn_once(
            f"COCO json {json_file}{dataset}: {outside.count} of {len(kept)} boxes of {outside.images_text()} reach "
            f"beyond their image by more than {OUTSIDE_TOLERANCE_PIXELS:g} px or {OUTSIDE_TOLERANCE_FRACTION:.0%} "
            f"of its width or height{outside.more_text()}. Are the boxes [x, y, width, height] in the pixels of the "
            "image file? Training clips them to the image; COCO evaluation compares predictions with them as they are."
        )
    if missing_area:
        warn_once(
            f"COCO json {json_file}: {missing_area} annotations have no 'area' (or one that is not a number >= 0). "
            "Training does not need it; COCO evaluation takes the area of their box."
        )
    return CheckedAnnotations(kept, skipped.count, missing_area)
