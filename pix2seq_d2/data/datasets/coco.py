"""The one reader of COCO instances json files: :func:`load_coco_json_checked` loads a dataset with errors
that name the json file and the item (see :mod:`~pix2seq_d2.data.datasets.coco_validation` for what is
an error and what a skipped box), and :func:`read_coco_categories` reads only the categories of a file,
without parsing the rest (start-up checks of ``NUM_CLASSES``).

:func:`load_coco_json_checked` replaces detectron2's ``load_coco_json`` for boxes: the same dataset
dicts (``file_name`` joined with the image root, ``height``, ``width``, ``image_id``, annotations
with ``bbox`` in ``XYWH_ABS``, ``category_id`` mapped to 0..C-1 in sorted category-id order,
``iscrowd``; images sorted by id, annotations in file order) and the same metadata
(``thing_classes``, ``thing_dataset_id_to_contiguous_id``), plus each annotation's own ``"id"``
so that warnings can name it. Segmentation and keypoints are not loaded (Pix2Seq does not use
them), so a malformed polygon does no harm (detectron2 drops an annotation whose polygons all
have fewer than 3 points; this loader keeps its box).

COCO evaluation: ``COCOEvaluator`` reads the metadata's ``json_file`` itself, where a skipped box
would crash pycocotools or count as a miss, and a missing ``area`` makes it fail. When a load
skipped boxes or found ``area`` missing, ``json_file`` is removed from the dataset's metadata, so
that ``COCOEvaluator`` writes the checked annotations to ``<output dir>/<name>_coco_format.json``
and evaluates on those (logged).
"""

from __future__ import annotations

import functools
import json
import logging
import mmap
import os
import re
from typing import Any

from detectron2.data import MetadataCatalog
from detectron2.utils.file_io import PathManager

from .coco_validation import (
    CocoJsonError,
    check_top_level,
    describe_value,
    parse_annotations,
    parse_categories,
    parse_images,
)

__all__ = ["CocoJsonError", "load_coco_json_checked", "read_coco_categories"]

logger = logging.getLogger(__name__)


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


@functools.lru_cache(maxsize=64)
def _json_categories_cached(path: str, mtime: float, size: int) -> tuple[tuple[int, str], ...] | None:
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
    rest of the file (a memory map is searched for the key); None when they cannot be read."""
    try:
        path = os.fspath(path)
        stat = os.stat(path)
        if not os.path.isfile(path) or stat.st_size == 0:
            return None
        return _json_categories_cached(path, stat.st_mtime, stat.st_size)
    except (OSError, TypeError, ValueError):
        return None


def _set_metadata(dataset_name: str, json_file: str, image_root: str, **values: Any) -> None:
    """Set ``values`` (an error if the metadata already holds other ones) and, where not set yet,
    the ``json_file``, ``image_root`` and ``evaluator_type`` that ``COCOEvaluator`` reads."""
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
    check_top_level(data, json_file)
    category_ids, thing_classes = parse_categories(data["categories"], json_file)
    id_map = {category_id: i for i, category_id in enumerate(category_ids)}
    if not data["images"]:
        dataset = f"dataset {dataset_name!r}: " if dataset_name else ""
        raise CocoJsonError(f'{dataset}COCO json {json_file} has no images (its "images" list is empty)')
    images, file_names = parse_images(data["images"], json_file, image_root)
    needs_clean_copy = parse_annotations(data["annotations"], json_file, images, file_names, id_map, dataset_name)
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
