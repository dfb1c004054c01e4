"""Validation of a parsed COCO instances json: which problems are errors and which boxes are skipped.

What each kind of problem does. An *error* is a :class:`CocoJsonError` (a ``ValueError``) whose
message names the json file, the image (file name and id) and the annotation (its ``"id"``, or
its position when it has none), says what is wrong and what is expected, and lists up to 10
problems of the same part of the file with their total count. A *skip* drops the annotation
with a warning naming the json file, the image and the annotation id (the first 10 one by one)
and one summary per load ("skipped 3 of 120 annotations of 2 images whose box cannot be used
(2 with a non-numeric or non-finite coordinate, 1 with a zero width or height)").

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

Skips (one bad box, the rest of the image is fine): ``bbox`` missing, not a list of 4, with an
element that is not a finite real number (null, a string, a bool, NaN, infinity), or with a
negative or zero width or height.

Fine: an image without annotations (an image with no objects); a missing ``area`` (one warning);
malformed or missing
``segmentation``/``keypoints`` (not loaded); several categories with the same name (a warning).
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections import Counter
from typing import Any

from detectron2.structures import BoxMode

from pix2seq_d2.utils.errors import UserError

__all__ = [
    "CocoJsonError",
    "check_top_level",
    "describe_value",
    "parse_annotations",
    "parse_categories",
    "parse_images",
]

logger = logging.getLogger(__name__)

_MAX_LISTED = 10  # problems listed one by one in an error, skipped annotations warned one by one
_TOP_LEVEL = ("images", "annotations", "categories")


class CocoJsonError(UserError, ValueError):
    """A COCO json file that cannot be used as a dataset; the message names the file and the item."""


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_real(value: Any) -> bool:
    """A finite int or float (not a bool, string or null)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def describe_value(value: Any) -> str:
    """``value`` as json shows it, with its type where the text alone would mislead (``"0"``)."""
    if isinstance(value, str):
        return f"{json.dumps(value)} (a string)"
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    text = json.dumps(value) if isinstance(value, (int, float, list, dict)) else repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _zero_or_one(value: Any) -> int | None:
    """0 or 1 for a json 0/1 (int, float or bool), else None."""
    if isinstance(value, (int, float)) and value in (0, 1):  # bools are ints: false/true pass
        return int(value)
    return None


class _Problems:
    """Problems found in one part of a json: the first few in full, all counted."""

    def __init__(self) -> None:
        self.listed: list[str] = []
        self.count = 0

    def append(self, message: str) -> None:
        self.count += 1
        if len(self.listed) < _MAX_LISTED:
            self.listed.append(message)

    def raise_if_any(self, json_file: str, where: str, expected: str = "") -> None:
        if not self.count:
            return
        listed = "\n".join(f"  - {p}" for p in self.listed)
        more = f"\n  ... and {self.count - len(self.listed)} more" if self.count > len(self.listed) else ""
        count = "1 problem" if self.count == 1 else f"{self.count} problems"
        hint = f"\n{expected}" if expected else ""
        raise CocoJsonError(f"COCO json {json_file}: {count} in its {where}:\n{listed}{more}{hint}")


def check_top_level(data: Any, json_file: str) -> None:
    if not isinstance(data, dict):
        hint = ""
        if isinstance(data, list) and data and isinstance(data[0], dict) and "score" in data[0]:
            hint = " (this looks like a detection results file, not a dataset)"
        raise CocoJsonError(
            f"COCO json {json_file}: the top level is a json {type(data).__name__}{hint}, expected an object "
            'with "images", "annotations" and "categories" lists'
        )
    problems = _Problems()
    for key in _TOP_LEVEL:
        if key not in data:
            extra = ' (a dataset without objects needs "annotations": [])' if key == "annotations" else ""
            problems.append(f'no "{key}" list{extra}')
        elif not isinstance(data[key], list):
            problems.append(f'"{key}" is {describe_value(data[key])}, expected a list')
    problems.raise_if_any(json_file, "top-level object", 'Expected "images", "annotations" and "categories" lists.')


def parse_categories(categories: list, json_file: str) -> tuple[list[int], list[str]]:
    """The sorted category ids and their names; a CocoJsonError for a bad category."""
    problems = _Problems()
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
        logger.warning(f"COCO json {json_file}: several categories are named {', '.join(map(repr, repeated))}")
    return ids, names


def _image_size(image: dict, key: str) -> int | None:
    value = image.get(key)
    if _is_real(value) and value == int(value) and value > 0:
        return int(value)
    return None


def parse_images(images: list, json_file: str, image_root: str) -> tuple[dict[int, dict], dict[int, str]]:
    """Image id -> dataset dict (no annotations yet) and image id -> the json's file_name; a
    CocoJsonError for a bad image."""
    problems = _Problems()
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


class _Skipped:
    """Annotations dropped for their box: the first few named, all counted by kind and image."""

    def __init__(self) -> None:
        self.listed: list[tuple[str, str]] = []  # (annotation name, reason)
        self.kinds: Counter[str] = Counter()
        self.image_ids: set = set()

    def append(self, name: str, kind: str, reason: str, image_id: Any) -> None:
        self.kinds[kind] += 1
        self.image_ids.add(image_id)
        if len(self.listed) < _MAX_LISTED:
            self.listed.append((name, reason))

    @property
    def count(self) -> int:
        return sum(self.kinds.values())

    def kinds_text(self) -> str:
        return ", ".join(f"{n} {kind}" for kind, n in self.kinds.most_common())

    def warn(self, json_file: str, dataset_name: str | None, total: int) -> None:
        for name, reason in self.listed:
            logger.warning(f"COCO json {json_file}: skipping {name}: {reason}")
        num_images = len(self.image_ids)
        dataset = f" (dataset {dataset_name})" if dataset_name else ""
        more = f"; {self.count - len(self.listed)} not listed above" if self.count > len(self.listed) else ""
        logger.warning(
            f"COCO json {json_file}{dataset}: skipped {self.count} of {total} annotations of {num_images} "
            f"image{'s' if num_images != 1 else ''} whose box cannot be used ({self.kinds_text()}){more}. COCO "
            "evaluation reads the json itself and still sees them: fix the json before evaluating on it."
        )


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


def parse_annotations(
    annotations: list,
    json_file: str,
    images: dict[int, dict],
    file_names: dict[int, str],
    id_map: dict[int, int],
    dataset_name: str | None,
) -> bool:
    """Append each usable annotation to its image's ``"annotations"``; errors and skips as documented.
    Returns whether COCO evaluation needs a cleaned copy of the json (boxes skipped, or ``area`` missing)."""
    problems, skipped = _Problems(), _Skipped()
    seen: dict[int, Any] = {}  # annotation id -> its image id
    missing_area = kept = 0
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
        missing_area += "area" not in annotation
        kept += 1
        images[image_id]["annotations"].append(
            {
                "id": annotation_id,
                "iscrowd": _zero_or_one(annotation.get("iscrowd", 0)),
                "bbox": [float(v) for v in annotation["bbox"]],
                "category_id": id_map[annotation["category_id"]],
                "bbox_mode": BoxMode.XYWH_ABS,
            }
        )
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
    if skipped.count:
        skipped.warn(json_file, dataset_name, len(annotations))
    if missing_area:
        logger.warning(
            f"COCO json {json_file}: {missing_area} annotations have no 'area'. Training does not need it; COCO "
            "evaluation (pycocotools) needs it, so evaluation uses a cleaned copy of the json (see below)."
        )
    return bool(skipped.count or missing_area)
