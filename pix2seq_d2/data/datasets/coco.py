"""COCO-format datasets from the config, loaded with errors that name the json file and the item.

Register your own COCO-format (instances json) datasets without writing Python::

    DATASETS:
      COCO:   # [name, json_file, image_root] per dataset
        - [mydata_train, /data/mydata/train.json, /data/mydata/images]
        - [mydata_val, /data/mydata/val.json, /data/mydata/images]
      TRAIN: ("mydata_train",)
      TEST: ("mydata_val",)

:func:`register_coco_datasets` registers every entry of ``DATASETS.COCO`` (relative paths are
resolved against the working directory, as detectron2's own paths are, and stored absolute). At
registration only the json file's existence (and the image folder's) is checked; the json is
parsed by :func:`load_coco_json_checked` on the first ``DatasetCatalog.get(name)``, i.e. when a
training or test loader is built (parsing a COCO-size json takes 10-20 s, as detectron2's does).

:func:`load_coco_json_checked` replaces detectron2's ``load_coco_json`` for boxes: the same dataset
dicts (``file_name`` joined with the image root, ``height``, ``width``, ``image_id``, annotations
with ``bbox`` in ``XYWH_ABS``, ``category_id`` mapped to 0..C-1 in sorted category-id order,
``iscrowd``; images sorted by id, annotations in file order) and the same metadata
(``thing_classes``, ``thing_dataset_id_to_contiguous_id``), plus each annotation's own ``"id"``
so that warnings can name it. Segmentation and keypoints are not loaded (Pix2Seq does not use
them), so a malformed polygon does no harm (detectron2 drops an annotation whose polygons all
have fewer than 3 points; this loader keeps its box).

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

Registration: a name registered twice with the same json file and image root is a no-op; with
other paths, or a name registered some other way (a detectron2 builtin such as ``coco_2017_val``,
the ``shapes_*`` datasets, ``register_coco_instances``) is a ``ValueError`` naming it; a missing
json file or image folder is a :class:`CocoJsonError` naming ``DATASETS.COCO`` and the path.

COCO evaluation: ``COCOEvaluator`` reads the metadata's ``json_file`` itself, where a skipped box
would crash pycocotools or count as a miss, and a missing ``area`` makes it fail. When a load
skipped boxes or found ``area`` missing, ``json_file`` is removed from the dataset's metadata, so
that ``COCOEvaluator`` writes the checked annotations to ``<output dir>/<name>_coco_format.json``
and evaluates on those (logged).
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections import Counter
from collections.abc import Sequence
from typing import Any

from detectron2.config import CfgNode
from detectron2.data import DatasetCatalog, Metadata, MetadataCatalog
from detectron2.structures import BoxMode
from detectron2.utils.file_io import PathManager

__all__ = [
    "CocoJsonError",
    "load_coco_json_checked",
    "register_coco_json",
    "register_coco_datasets",
    "ensure_coco_metadata",
]

logger = logging.getLogger(__name__)

_MAX_LISTED = 10  # problems listed one by one in an error, skipped annotations warned one by one
_TOP_LEVEL = ("images", "annotations", "categories")


class CocoJsonError(ValueError):
    """A COCO json file that cannot be used as a dataset; the message names the file and the item."""


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_real(value: Any) -> bool:
    """A finite int or float (not a bool, string or null)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _describe(value: Any) -> str:
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


def _read_json(json_file: str) -> Any:
    try:
        with PathManager.open(json_file, "rb") as f:
            raw = f.read()
    except FileNotFoundError as e:
        raise CocoJsonError(f"COCO json file not found: {json_file}") from e
    except IsADirectoryError as e:
        raise CocoJsonError(f"COCO json {json_file} is a folder, not a file") from e
    except OSError as e:
        raise CocoJsonError(f"cannot read COCO json {json_file}: {e}") from e
    if not raw.strip():
        raise CocoJsonError(f"COCO json {json_file} is empty ({len(raw)} bytes): expected a COCO instances json object")
    try:
        # json.detect_encoding: UTF-8 with or without a BOM, UTF-16/32 (as Windows tools may write)
        text = raw.decode(json.detect_encoding(raw), "surrogatepass")
    except UnicodeDecodeError as e:
        raise CocoJsonError(
            f"COCO json {json_file} is not UTF-8 text (undecodable byte at offset {e.start}): save it as UTF-8"
        ) from e
    del raw
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        near = text[max(0, e.pos - 30) : e.pos + 30].replace("\n", " ")
        raise CocoJsonError(
            f"COCO json {json_file} is not valid json: {e.msg} at line {e.lineno} column {e.colno} (near {near!r})"
        ) from e
    except RecursionError as e:
        raise CocoJsonError(f"COCO json {json_file} is nested too deeply to parse") from e


def _check_top_level(data: Any, json_file: str) -> None:
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
            problems.append(f'"{key}" is {_describe(data[key])}, expected a list')
    problems.raise_if_any(json_file, "top-level object", 'Expected "images", "annotations" and "categories" lists.')


def _parse_categories(categories: list, json_file: str) -> tuple[list[int], list[str]]:
    """The sorted category ids and their names; a CocoJsonError for a bad category."""
    problems = _Problems()
    by_id: dict[int, str] = {}
    if not categories:
        problems.append('"categories" is empty: a detection dataset needs at least one category')
    for position, category in enumerate(categories):
        name = f"category #{position}"
        if not isinstance(category, dict):
            problems.append(f"{name} is {_describe(category)}, expected an object")
            continue
        category_id = category.get("id")
        if "id" in category:
            name += f" (id {_describe(category_id)})"
        if not _is_int(category_id):
            problems.append(f"{name}: 'id' is {'missing' if 'id' not in category else 'not an integer'}")
            continue
        if not isinstance(category.get("name"), str):
            problems.append(f"{name}: 'name' is {_describe(category.get('name'))}, expected a string")
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


def _parse_images(images: list, json_file: str, image_root: str) -> tuple[dict[int, dict], dict[int, str]]:
    """Image id -> dataset dict (no annotations yet) and image id -> the json's file_name; a
    CocoJsonError for a bad image."""
    problems = _Problems()
    records: dict[int, dict] = {}
    names: dict[int, str] = {}
    ids: dict[str, int] = {}
    for position, image in enumerate(images):
        if not isinstance(image, dict):
            problems.append(f"image #{position} is {_describe(image)}, expected an object")
            continue
        image_id, file_name = image.get("id"), image.get("file_name")
        name = f"image #{position}" + (f" (id {_describe(image_id)}" if "id" in image else " (no 'id'")
        name += f", {file_name!r})" if isinstance(file_name, str) else ")"
        wrong = []
        if not _is_int(image_id):
            wrong.append(f"'id' is {'missing' if 'id' not in image else _describe(image_id)}, expected an integer")
        if not isinstance(file_name, str) or not file_name:
            missing = "missing" if "file_name" not in image else _describe(file_name)
            wrong.append(f"'file_name' is {missing}, expected the image's path under the image root")
        sizes = {key: _image_size(image, key) for key in ("height", "width")}
        for key, size in sizes.items():
            if size is None:
                missing = "missing" if key not in image else _describe(image[key])
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
        return kind, f"'bbox' is {_describe(box)}, expected a list of 4 numbers [x, y, width, height]"
    if not all(_is_real(v) for v in box):
        kind = "with a non-numeric or non-finite coordinate"
        return kind, f"'bbox' {_describe(box)} has a coordinate that is not a finite number"
    for sign, bad in (("negative", box[2] < 0 or box[3] < 0), ("zero", box[2] == 0 or box[3] == 0)):
        if bad:
            return f"with a {sign} width or height", f"'bbox' {_describe(box)} has a {sign} width or height"
    return None


def _annotation_name(annotation: dict, position: int, file_names: dict[int, str]) -> str:
    """'annotation id 7 of image a.png (id 3)', naming the position where it has no usable id."""
    if _is_int(annotation.get("id")):
        name = f"annotation id {annotation['id']}"
    else:
        name = f"annotation #{position} of \"annotations\" ('id' {_describe(annotation.get('id'))})"
        if "id" not in annotation:
            name = f"annotation #{position} of \"annotations\" (no 'id')"
    image_id = annotation.get("image_id")
    if _is_int(image_id) and image_id in file_names:
        name += f" of image {file_names[image_id]} (id {image_id})"
    elif "image_id" in annotation:
        name += f" of image id {_describe(image_id)}"
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
        other = f"{file_names[other]} (id {other})" if other in file_names else f"id {_describe(other)}"
        wrong.append(f"duplicate annotation id (also the id of an annotation of image {other})")
    image_id = annotation.get("image_id")
    if not (_is_int(image_id) and image_id in file_names):
        if "image_id" not in annotation:
            wrong.append("'image_id' is missing")
        else:
            wrong.append(f"'image_id' {_describe(image_id)} is not the id of an image in \"images\"")
    category_id = annotation.get("category_id")
    if not (_is_int(category_id) and category_id in id_map):
        shown = "missing" if "category_id" not in annotation else _describe(category_id)
        wrong.append(f"'category_id' {shown} is not among the categories' ids {_ids_text(sorted(id_map))}")
    if _zero_or_one(annotation.get("iscrowd", 0)) is None:
        wrong.append(f"'iscrowd' is {_describe(annotation['iscrowd'])}, expected 0 or 1")
    ignore = _zero_or_one(annotation.get("ignore", 0))
    if ignore is None:
        wrong.append(f"'ignore' is {_describe(annotation['ignore'])}, expected 0")
    elif ignore:
        wrong.append("'ignore' is 1, which detectron2 does not support: use \"iscrowd\": 1 for regions to ignore")
    return wrong


def _parse_annotations(
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
            problems.append(f'annotation #{position} of "annotations" is {_describe(annotation)}, expected an object')
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


def _set_metadata(dataset_name: str, json_file: str, image_root: str, **values: Any) -> None:
    """Set ``values`` (an error if the metadata already holds other ones) and, where not set yet,
    the ``json_file``, ``image_root`` and ``evaluator_type`` that ``COCOEvaluator`` reads."""
    meta = MetadataCatalog.get(dataset_name)
    for key, value in values.items():
        old = getattr(meta, key, None)
        if old is not None and old != value:
            raise CocoJsonError(
                f"COCO json {json_file}: the metadata of dataset {dataset_name!r} already has other {key} "
                f"({_describe(old)}; the json gives {_describe(value)}): was the json changed while the program "
                "ran, or is the name used for two datasets?"
            )
        setattr(meta, key, value)
    for key, value in (("json_file", json_file), ("image_root", image_root), ("evaluator_type", "coco")):
        if getattr(meta, key, None) is None:
            setattr(meta, key, value)


def load_coco_json_checked(
    json_file: str | os.PathLike[str], image_root: str | os.PathLike[str], dataset_name: str | None = None
) -> list[dict]:
    """Load a COCO instances json as detectron2 dataset dicts (boxes only), like detectron2's
    ``load_coco_json``, with a :class:`CocoJsonError` naming the file and the item for a broken
    file and a warning for each unusable box (see the module docstring for what is which).

    With ``dataset_name``, sets its metadata ``thing_classes`` (category names in sorted-id order)
    and ``thing_dataset_id_to_contiguous_id``, and ``json_file``, ``image_root`` and
    ``evaluator_type="coco"`` where not set yet.
    """
    json_file, image_root = os.fspath(json_file), os.fspath(image_root)
    data = _read_json(json_file)
    _check_top_level(data, json_file)
    category_ids, thing_classes = _parse_categories(data["categories"], json_file)
    id_map = {category_id: i for i, category_id in enumerate(category_ids)}
    if not data["images"]:
        dataset = f"dataset {dataset_name!r}: " if dataset_name else ""
        raise CocoJsonError(f'{dataset}COCO json {json_file} has no images (its "images" list is empty)')
    images, file_names = _parse_images(data["images"], json_file, image_root)
    needs_clean_copy = _parse_annotations(data["annotations"], json_file, images, file_names, id_map, dataset_name)
    if dataset_name is not None:
        _set_metadata(
            dataset_name, json_file, image_root, thing_classes=thing_classes, thing_dataset_id_to_contiguous_id=id_map
        )
        meta = MetadataCatalog.get(dataset_name)
        if needs_clean_copy and getattr(meta, "json_file", None) == json_file:
            # COCOEvaluator reads metadata.json_file itself, where the skipped boxes would crash pycocotools
            # or count as misses; without json_file it writes a COCO json of these (checked) dicts instead.
            delattr(meta, "json_file")
            logger.warning(
                f"dataset {dataset_name!r}: COCO evaluation uses the annotations as loaded here (COCOEvaluator "
                f"writes them to <output dir>/{dataset_name}_coco_format.json), not {json_file}"
            )
    logger.info(f"Loaded {len(images)} images in COCO format from {json_file}")
    return [images[image_id] for image_id in sorted(images)]


class _CocoJsonLoader:
    """The function registered in ``DatasetCatalog`` by :func:`register_coco_json`."""

    def __init__(self, name: str, json_file: str, image_root: str) -> None:
        self.name, self.json_file, self.image_root = name, json_file, image_root

    def __call__(self) -> list[dict]:
        return load_coco_json_checked(self.json_file, self.image_root, self.name)

    def __repr__(self) -> str:
        return f"load_coco_json_checked({self.json_file!r}, {self.image_root!r}, {self.name!r})"


def _resolve(path: str) -> str:
    path = os.path.expanduser(path)
    return path if "://" in path else os.path.abspath(path)


def register_coco_json(
    name: str, json_file: str | os.PathLike[str], image_root: str | os.PathLike[str], *, source: str = ""
) -> None:
    """Register a COCO instances json as dataset ``name``, loaded by :func:`load_coco_json_checked`.

    Relative paths are resolved against the working directory. The json file and the image folder
    must exist (a :class:`CocoJsonError` otherwise); the json is parsed on first use. Registering
    the same name with the same files again is a no-op; a name registered otherwise (other files,
    a detectron2 builtin, ``register_coco_instances``) is a ``ValueError``. ``source`` (e.g. the
    config key) is named in the errors.
    """
    where = f" ({source})" if source else ""
    if not isinstance(name, str) or not name:
        raise ValueError(f"dataset name{where} must be a non-empty string, got {_describe(name)}")
    json_path, root_path = _resolve(os.fspath(json_file)), _resolve(os.fspath(image_root))
    if name in DatasetCatalog:
        registered = DatasetCatalog[name]  # the registered function, not called
        if isinstance(registered, _CocoJsonLoader):
            if (registered.json_file, registered.image_root) == (json_path, root_path):
                return
            raise ValueError(
                f"dataset {name!r}{where} is already registered with json {registered.json_file} and image root "
                f"{registered.image_root}, not {json_path} and {root_path}: give each dataset its own name"
            )
        raise ValueError(
            f"dataset name {name!r}{where} is already registered ({registered!r}: a detectron2 builtin dataset or "
            "one registered by code): pick another name for your dataset"
        )
    relative = "" if os.path.isabs(os.fspath(json_file)) else f" (relative to the working directory {os.getcwd()})"
    if not PathManager.isfile(json_path):
        state = "is a folder, not a file" if PathManager.isdir(json_path) else "does not exist"
        raise CocoJsonError(f"COCO json file {json_path} of dataset {name!r}{where} {state}{relative}")
    if not PathManager.isdir(root_path):
        relative = "" if os.path.isabs(os.fspath(image_root)) else f" (relative to the working directory {os.getcwd()})"
        raise CocoJsonError(f"image root {root_path} of dataset {name!r}{where} is not a folder{relative}")
    meta = MetadataCatalog.get(name)
    for key, value in (("json_file", json_path), ("image_root", root_path), ("evaluator_type", "coco")):
        old = getattr(meta, key, None)
        if old is not None and old != value:
            raise ValueError(
                f"dataset {name!r}{where}: MetadataCatalog already holds {key}={old!r} for this name (not {value!r}): "
                "pick another name"
            )
    DatasetCatalog.register(name, _CocoJsonLoader(name, json_path, root_path))
    meta.set(json_file=json_path, image_root=root_path, evaluator_type="coco")


def _entries(value: Any) -> list[Sequence[str]]:
    if not isinstance(value, (list, tuple)):
        raise ValueError(f"DATASETS.COCO must be a list of [name, json_file, image_root] entries, got {value!r}")
    if len(value) == 3 and all(isinstance(v, str) for v in value):
        raise ValueError(
            f"DATASETS.COCO is {list(value)!r}: it is a list of [name, json_file, image_root] entries; for one "
            f"dataset write [{list(value)!r}]"
        )
    for position, entry in enumerate(value):
        if not (isinstance(entry, (list, tuple)) and len(entry) == 3 and all(isinstance(v, str) for v in entry)):
            raise ValueError(
                f"DATASETS.COCO entry #{position} is {entry!r}, expected [name, json_file, image_root] (3 strings)"
            )
    return list(value)


def register_coco_datasets(cfg: CfgNode) -> list[str]:
    """Register every ``[name, json_file, image_root]`` of ``cfg.DATASETS.COCO`` with
    :func:`register_coco_json`; returns the names (none if the config has no such key)."""
    names = []
    for position, (name, json_file, image_root) in enumerate(_entries(cfg.DATASETS.get("COCO", []))):
        register_coco_json(name, json_file, image_root, source=f"DATASETS.COCO entry #{position}")
        names.append(name)
    return names


def ensure_coco_metadata(name: str) -> Metadata:
    """``MetadataCatalog.get(name)``, with ``thing_classes`` and the category id mapping set: a dataset
    registered by :func:`register_coco_json` gets them when its json is loaded, so it is loaded here
    if it has not been yet (for the class names of a predictor or the demo). Other datasets: as is."""
    meta = MetadataCatalog.get(name)
    if name in DatasetCatalog and isinstance(DatasetCatalog[name], _CocoJsonLoader):
        if getattr(meta, "thing_classes", None) is None:
            DatasetCatalog.get(name)
    return meta
