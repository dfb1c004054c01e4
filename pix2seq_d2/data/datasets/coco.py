"""The one reader of COCO instances json files: :func:`load_coco_json_checked` loads a dataset with errors
that name the json file and the item (see :mod:`~pix2seq_d2.data.datasets.coco_validation` for what is
an error, what a skipped box and what a warning), :func:`load_coco_ground_truth` reads the same file,
with the same checks, as the ground truth of COCO evaluation, and :func:`read_coco_categories` reads
only the categories of a file, without parsing the rest (start-up checks of ``NUM_CLASSES``).

:func:`load_coco_json_checked` replaces detectron2's ``load_coco_json`` for boxes: the same dataset
dicts (``file_name`` joined with the image root, ``height``, ``width``, ``image_id``, annotations
with ``bbox`` in ``XYWH_ABS``, ``category_id`` mapped to 0..C-1 in sorted category-id order,
``iscrowd``; images sorted by id, annotations in file order) and the same metadata
(``thing_classes``, ``thing_dataset_id_to_contiguous_id``), plus each annotation's own ``"id"``
so that warnings can name it. Segmentation and keypoints are not loaded yet (Pix2Seq's box task
does not use them), so a malformed polygon does no harm (detectron2 drops an annotation whose
polygons all have fewer than 3 points; this loader keeps its box). They belong in
:func:`annotation_record`, their checks in :func:`~.coco_validation.parse_annotations`.

COCO evaluation: :func:`load_coco_ground_truth` gives the file's images, categories and usable
annotations as they are in the file (ids, ``area``, boxes), for the COCO API (pycocotools reads a
json with a UTF-8 BOM or in UTF-16 not at all, and crashes or counts as misses the boxes skipped
here); a missing ``area`` is the box's, a missing ``iscrowd`` 0. ``COCOEvaluatorWithRecall`` reads its
ground truth this way. Detectron2's own ``COCOEvaluator`` reads the metadata's ``json_file`` with
pycocotools itself: when a load skipped boxes, found ``area`` missing, or the file is not plain UTF-8,
``json_file`` is removed from the dataset's metadata, so that ``COCOEvaluator`` writes the loaded
annotations to ``<output dir>/<name>_coco_format.json`` and evaluates on those (logged).
"""

from __future__ import annotations

import contextlib
import functools
import gc
import json
import logging
import mmap
import os
import re
from collections.abc import Iterator
from typing import Any, NamedTuple

from detectron2.data import MetadataCatalog
from detectron2.structures import BoxMode
from detectron2.utils.file_io import PathManager

from .coco_reports import CocoJsonError, describe_value, warn_once
from .coco_validation import (
    CheckedAnnotations,
    check_top_level,
    crowd_flag,
    parse_annotations,
    parse_categories,
    parse_images,
    usable_area,
)

__all__ = ["CocoJsonError", "annotation_record", "load_coco_ground_truth", "load_coco_json_checked",
           "read_coco_categories"]  # fmt: skip

logger = logging.getLogger(__name__)


def _read_json(json_file: str) -> tuple[Any, str]:
    """The parsed json and the encoding it was written in ("utf-8": plain UTF-8, as pycocotools reads it)."""
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
        encoding = json.detect_encoding(raw)
        text = raw.decode(encoding, "surrogatepass")
    except UnicodeDecodeError as e:
        raise CocoJsonError(
            f"COCO json {json_file} is not UTF-8 text (undecodable byte at offset {e.start}): save it as UTF-8"
        ) from e
    del raw
    try:
        return json.loads(text), encoding
    except json.JSONDecodeError as e:
        near = text[max(0, e.pos - 30) : e.pos + 30].replace("\n", " ")
        raise CocoJsonError(
            f"COCO json {json_file} is not valid json: {e.msg} at line {e.lineno} column {e.colno} (near {near!r})"
        ) from e
    except RecursionError as e:
        raise CocoJsonError(f"COCO json {json_file} is nested too deeply to parse") from e


_CATEGORIES = re.compile(rb'"categories"\s*:\s*\[')


def _decode_array(buffer: mmap.mmap, start: int) -> Any:
    window = 1 << 16
    decoder = json.JSONDecoder()
    while True:
        chunk = buffer[start : start + window].decode("utf-8", errors="replace")
        try:
            return decoder.raw_decode(chunk)[0]
        except json.JSONDecodeError:
            if start + window >= len(buffer):
                return None
            window *= 8


def _categories_of_whole_file(path: str) -> tuple[tuple[int, str], ...] | None:
    try:
        data, _ = _read_json(path)
        check_top_level(data, path, allow_empty=True)
        ids, names = parse_categories(data["categories"], path)
    except CocoJsonError:
        return None
    return tuple(zip(ids, names))


@functools.lru_cache(maxsize=64)
def _json_categories_cached(path: str, mtime: float, size: int) -> tuple[tuple[int, str], ...] | None:
    with open(path, "rb") as f:
        head = f.read(4)
    if json.detect_encoding(head) not in ("utf-8", "utf-8-sig"):  # UTF-16/32: the byte search cannot see the key
        return _categories_of_whole_file(path)
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as buffer:
        for match in _CATEGORIES.finditer(buffer):
            value = _decode_array(buffer, match.end() - 1)
            if isinstance(value, list) and all(
                isinstance(c, dict) and isinstance(c.get("id"), int) and not isinstance(c.get("id"), bool)
                for c in value
            ):
                return tuple(sorted((c["id"], str(c.get("name", c["id"]))) for c in value))
    return None


def read_coco_categories(path: Any) -> tuple[tuple[int, str], ...] | None:
    """``(id, name)`` of the ``categories`` of a local COCO json, sorted by id, without parsing the
    rest of the file (a memory map is searched for the key; a UTF-16/32 file is read whole); None when
    they cannot be read."""
    try:
        path = os.fspath(path)
        stat = os.stat(path)
        if not os.path.isfile(path) or stat.st_size == 0:
            return None
        return _json_categories_cached(path, stat.st_mtime, stat.st_size)
    except (OSError, TypeError, ValueError):
        return None


def _set_metadata(dataset_name: str, json_file: str, image_root: str | None, **values: Any) -> None:
    """Set ``values`` (an error if the metadata already holds other ones) and, with ``image_root``, where
    not set yet, the ``json_file``, ``image_root`` and ``evaluator_type`` that ``COCOEvaluator`` reads."""
    meta = MetadataCatalog.get(dataset_name)
    for key, value in values.items():
        old = getattr(meta, key, None)
        if old is not None and old != value:
            raise CocoJsonError(
                f"COCO json {json_file}: the metadata of dataset {dataset_name!r} already has other {key} "
                f"({describe_value(old)}; the json gives {describe_value(value)}): was the json changed while the "
                "program ran, or is the name used for two datasets?"
            )
        setattr(meta, key, value)
    locations = (("json_file", json_file), ("image_root", image_root), ("evaluator_type", "coco"))
    for key, value in locations if image_root is not None else ():
        if getattr(meta, key, None) is None:
            setattr(meta, key, value)


class _CheckedJson(NamedTuple):
    """A COCO json that passed the checks: the parsed file and what the checks made of it."""

    data: dict
    encoding: str
    images: dict[int, dict]  # image id -> dataset dict (no annotations yet)
    thing_classes: list[str]
    id_map: dict[int, int]  # category id -> contiguous class
    annotations: CheckedAnnotations


@contextlib.contextmanager
def _without_gc() -> Iterator[None]:
    """Python's cyclic garbage collector off while a json is read: the allocations of parsing and checking
    trigger full passes over the millions of objects of a large json, which take longer than the reading
    itself (a 35,000-box json: 2.2 s instead of 4.3 s), and reading makes no reference cycles to collect."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _check(json_file: str, image_root: str, dataset_name: str | None, allow_empty: bool) -> _CheckedJson:
    data, encoding = _read_json(json_file)
    check_top_level(data, json_file, allow_empty=allow_empty)
    category_ids, thing_classes = parse_categories(data["categories"], json_file)
    id_map = {category_id: i for i, category_id in enumerate(category_ids)}
    if not data["images"] and not allow_empty:
        dataset = f"dataset {dataset_name!r}: " if dataset_name else ""
        raise CocoJsonError(f'{dataset}COCO json {json_file} has no images (its "images" list is empty)')
    images, file_names = parse_images(data["images"], json_file, image_root)
    annotations = parse_annotations(data.get("annotations", []), json_file, images, file_names, id_map, dataset_name)
    return _CheckedJson(data, encoding, images, thing_classes, id_map, annotations)


def annotation_record(annotation: dict, id_map: dict[int, int]) -> dict:
    """The detectron2 annotation dict of an annotation that passed the checks (``id_map``: category id ->
    contiguous class)."""
    return {
        "id": annotation["id"],
        "iscrowd": crowd_flag(annotation),
        "bbox": [float(v) for v in annotation["bbox"]],
        "category_id": id_map[annotation["category_id"]],
        "bbox_mode": BoxMode.XYWH_ABS,
    }


def load_coco_json_checked(
    json_file: str | os.PathLike[str],
    image_root: str | os.PathLike[str],
    dataset_name: str | None = None,
    *,
    allow_empty: bool = False,
) -> list[dict]:
    """Load a COCO instances json as detectron2 dataset dicts (boxes only), like detectron2's
    ``load_coco_json``, with a :class:`CocoJsonError` naming the file and the item for a broken
    file and a warning for each unusable box (see the module docstring for what is which).

    With ``dataset_name``, sets its metadata ``thing_classes`` (category names in sorted-id order)
    and ``thing_dataset_id_to_contiguous_id``, and ``json_file``, ``image_root`` and
    ``evaluator_type="coco"`` where not set yet. ``allow_empty``: a missing ``annotations`` list and
    an empty ``images`` list load (images without objects; no images), as with detectron2's loader.
    """
    json_file, image_root = os.fspath(json_file), os.fspath(image_root)
    with _without_gc():
        checked = _check(json_file, image_root, dataset_name, allow_empty)
        images, id_map = checked.images, checked.id_map
        for annotation in checked.annotations.kept:
            images[annotation["image_id"]]["annotations"].append(annotation_record(annotation, id_map))
    if dataset_name is not None:
        _set_metadata(
            dataset_name, json_file, image_root, thing_classes=checked.thing_classes,
            thing_dataset_id_to_contiguous_id=id_map,
        )  # fmt: skip
        found = checked.annotations.skipped or checked.annotations.missing_area
        meta = MetadataCatalog.get(dataset_name)
        registered = getattr(meta, "json_file", None)
        if (found or checked.encoding != "utf-8") and registered is not None and os.fspath(registered) == json_file:
            # Detectron2's COCOEvaluator reads metadata.json_file with pycocotools, which cannot read a BOM or
            # UTF-16 and crashes on (or counts as misses) the skipped boxes; without json_file it writes a COCO
            # json of these (checked) dicts instead. COCOEvaluatorWithRecall reads the json through this reader.
            delattr(meta, "json_file")
            why = "boxes were skipped or have no 'area'" if found else f"it is {checked.encoding}, not plain UTF-8"
            warn_once(
                f"dataset {dataset_name!r}: {json_file} cannot be read by pycocotools as it is ({why}): detectron2's "
                f"COCOEvaluator evaluates on the annotations as loaded here (written to <output dir>/{dataset_name}"
                "_coco_format.json); COCOEvaluatorWithRecall reads the json through the checked reader"
            )
    logger.info(f"Loaded {len(images)} images in COCO format from {json_file}")
    return [images[image_id] for image_id in sorted(images)]


def load_coco_ground_truth(json_file: str | os.PathLike[str], dataset_name: str | None = None) -> dict:
    """The ground truth of a COCO instances json for the COCO API (``COCO.dataset``), read with the checks of
    :func:`load_coco_json_checked` (the same errors and warnings): its images and categories as in the file,
    its usable annotations with their own ids, boxes, ``area`` (the box's where missing) and ``iscrowd``
    (0 where missing). Without an ``annotations`` list (a test set) the result has none either.

    With ``dataset_name``, sets its metadata ``thing_classes`` and ``thing_dataset_id_to_contiguous_id``
    (as loading it does), which map the model's classes back to the category ids.
    """
    json_file = os.fspath(json_file)
    with _without_gc():
        return _ground_truth(_check(json_file, "", dataset_name, allow_empty=True), json_file, dataset_name)


def _ground_truth(checked: _CheckedJson, json_file: str, dataset_name: str | None) -> dict:
    if dataset_name is not None:
        _set_metadata(
            dataset_name, json_file, None, thing_classes=checked.thing_classes,
            thing_dataset_id_to_contiguous_id=checked.id_map,
        )  # fmt: skip
    ground_truth = {key: checked.data[key] for key in ("info", "licenses") if key in checked.data}
    sizes = checked.images  # image id -> its checked height and width (480.0 is 480)
    ground_truth["images"] = [
        {**image, "height": sizes[image["id"]]["height"], "width": sizes[image["id"]]["width"]}
        for image in checked.data["images"]
    ]
    ground_truth["categories"] = checked.data["categories"]
    if "annotations" in checked.data:
        ground_truth["annotations"] = [
            {**a, "iscrowd": crowd_flag(a), "area": usable_area(a)} for a in checked.annotations.kept
        ]
    return ground_truth
