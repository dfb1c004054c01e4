"""Checks on training inputs that turn bad files and annotations into clear, actionable errors.

What each kind of bad input does:

* Images that cannot be used (missing, unreadable, truncated, empty, a size that does not
  match the dataset's ``height``/``width``, or so elongated that resizing gives a zero side)
  raise :class:`BadInputError` naming the file. The resumable training loader
  (:mod:`pix2seq_d2.resumable_data`) logs it and trains on another image; at test time it
  stops the evaluation.
* Grayscale, palette, CMYK, RGBA (alpha dropped) and 16-bit images are converted to 8-bit
  colour: :func:`read_image_checked` scales 16-bit pixels to 0..255 instead of clipping
  them (detectron2's ``read_image`` turns most 16-bit images white).
* Annotations with a NaN/infinite coordinate or a negative width/height are dropped with a
  warning naming the file and the annotation (:func:`valid_annotations`); a category id
  outside ``0..NUM_CLASSES-1`` stops with an error naming them and ``NUM_CLASSES``.
* A config key that does not exist (in a yaml file, its ``_BASE_`` files or the command
  line) is an error naming the key, the file and the closest existing keys
  (:func:`merge_config_checked`).
* A non-finite training loss stops training with a ``FloatingPointError`` naming the
  iteration and the batch's files (:func:`check_finite_loss`).
"""

from __future__ import annotations

import difflib
import json
import logging
import math
import os
import re
from collections.abc import Iterable

import numpy as np
import torch
import yaml
from detectron2.config import CfgNode
from detectron2.data import MetadataCatalog
from detectron2.data import detection_utils as utils
from detectron2.data import transforms as T
from detectron2.structures import BoxMode
from detectron2.utils.events import get_event_storage
from detectron2.utils.file_io import PathManager
from PIL import Image, ImageOps, UnidentifiedImageError

__all__ = [
    "BadInputError",
    "read_image_checked",
    "valid_annotations",
    "drop_invalid_annotations",
    "check_category_ids",
    "explain_dataset_error",
    "check_finite_loss",
    "merge_config_checked",
]

logger = logging.getLogger(__name__)

# Annotations already warned about, as (file name, annotation key): warn once, not every epoch.
_WARNED: set[tuple[str, str]] = set()


class BadInputError(ValueError):
    """An input file that cannot be used; the message names it. Training skips such images."""


def _to_8bit(image: Image.Image) -> Image.Image:
    """A PIL image whose mode PIL converts to 8-bit colour without loss of range (16-bit and
    32-bit integer or float pixels scaled to 0..255; PIL itself would clip them)."""
    if image.mode.startswith("I;16") or image.mode == "I":
        pixels = np.asarray(image).astype(np.float64)
        # "I;16*" is 16-bit by definition; "I" (32-bit) is taken as 8-bit data unless it exceeds 255.
        if image.mode.startswith("I;16") or pixels.max(initial=0) > 255:
            pixels = pixels / 257.0
        return Image.fromarray(np.clip(np.rint(pixels), 0, 255).astype(np.uint8))
    if image.mode == "F":
        pixels = np.asarray(image).astype(np.float64)
        if pixels.max(initial=0) <= 1.0:  # floats in [0, 1]
            pixels = pixels * 255.0
        return Image.fromarray(np.clip(np.rint(np.nan_to_num(pixels)), 0, 255).astype(np.uint8))
    if image.mode == "P" and "transparency" in image.info:
        return image.convert("RGBA")  # avoids PIL's warning; the alpha is dropped below
    return image  # every other mode: PIL converts it to INPUT.FORMAT (RGBA: alpha dropped)


def _open_image(file_name: str) -> Image.Image:
    """Open and fully decode an image file, with EXIF orientation applied; BadInputError if impossible."""
    try:
        with PathManager.open(file_name, "rb") as f:
            image = Image.open(f)
            image.load()  # decode now: truncated files fail here, not later inside an augmentation
    except FileNotFoundError as e:
        raise BadInputError(f"image file not found: {file_name}") from e
    except UnidentifiedImageError as e:
        raise BadInputError(f"not a readable image (unknown format or corrupt): {file_name}") from e
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        raise BadInputError(f"cannot decode image {file_name} (truncated or corrupt?): {e}") from e
    try:
        image = ImageOps.exif_transpose(image)
    except Exception as e:  # a broken EXIF block: keep the stored orientation
        logger.warning(f"Ignoring unreadable EXIF orientation of {file_name}: {e}")
    return image


def _resize_zero_side(hw: tuple[int, int], augmentations: Iterable) -> tuple[int, int] | None:
    """The (h, w) a ``ResizeShortestEdge`` among ``augmentations`` could give with a zero side, or None."""
    if isinstance(augmentations, T.AugmentationList):
        augmentations = augmentations.augs
    for aug in augmentations:
        if isinstance(aug, T.AugmentationList):
            found = _resize_zero_side(hw, aug.augs)
            if found:
                return found
        if isinstance(aug, T.ResizeShortestEdge):
            lengths = aug.short_edge_length
            if aug.is_range:
                lengths = (min(lengths), max(lengths))
            for short in lengths:
                out = T.ResizeShortestEdge.get_output_shape(hw[0], hw[1], short, aug.max_size)
                if min(out) < 1:
                    return out
            return None  # later resizes work on this one's output
    return None


def read_image_checked(dataset_dict: dict, image_format: str, augmentations: Iterable = ()) -> np.ndarray:
    """Read ``dataset_dict["file_name"]`` as an HWC array in ``image_format`` (like detectron2's
    ``read_image`` + ``check_image_size``), with clear errors.

    Converts every PIL mode (16-bit scaled to 8 bits, alpha dropped) and fills in missing
    ``height``/``width``. Raises :class:`BadInputError` naming the file if it is missing,
    unreadable, truncated, empty, of another size than the dict says, or so elongated that a
    ``ResizeShortestEdge`` in ``augmentations`` would give it a zero side.
    """
    file_name = dataset_dict["file_name"]
    image = _to_8bit(_open_image(file_name))
    array = utils.convert_PIL_to_numpy(image, image_format)
    h, w = array.shape[:2]
    if h == 0 or w == 0:
        raise BadInputError(f"image {file_name} is empty ({w}x{h} pixels)")
    try:
        utils.check_image_size(dataset_dict, array)
    except utils.SizeMismatchError as e:
        raise BadInputError(
            f"image {file_name} is {w}x{h} (w x h) after EXIF orientation, but its dataset entry says "
            f"{dataset_dict.get('width')}x{dataset_dict.get('height')}: fix the annotation's width/height"
        ) from e
    zero = _resize_zero_side((h, w), augmentations)
    if zero is not None:
        raise BadInputError(
            f"image {file_name} is {w}x{h} (w x h): its aspect ratio is too extreme for the resize "
            f"(INPUT.MIN_SIZE_*/MAX_SIZE_*), which would make it {zero[1]}x{zero[0]}"
        )
    return array


def _annotation_name(obj: dict, position: int) -> str:
    return f"annotation id {obj['id']}" if "id" in obj else f"annotation #{position} (no 'id')"


def _warn_once(file_name: str, key: str, message: str) -> None:
    if (file_name, key) not in _WARNED:
        _WARNED.add((file_name, key))
        logger.warning(message)


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
            _warn_once(file_name, name, f"Skipping {name} of {file_name}: 'bbox' must have 4 numbers, got {box!r}")
            continue
        values = [float(v) for v in box]
        if not all(math.isfinite(v) for v in values):
            _warn_once(file_name, name, f"Skipping {name} of {file_name}: its box {box} has NaN or infinite values")
            continue
        mode = obj.get("bbox_mode", BoxMode.XYWH_ABS)
        if mode in (BoxMode.XYWH_ABS, BoxMode.XYWH_REL):
            width, height = values[2], values[3]
        else:
            width, height = values[2] - values[0], values[3] - values[1]
        if width < 0 or height < 0:
            _warn_once(
                file_name, name,
                f"Skipping {name} of {file_name}: its box {box} ({BoxMode(mode).name}) has a negative width or height",
            )  # fmt: skip
            continue
        if num_classes is not None:
            category = obj.get("category_id")
            if not isinstance(category, (int, np.integer)) or not 0 <= category < num_classes:
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
        if not (isinstance(obj.get("category_id"), (int, np.integer)) and 0 <= obj["category_id"] < num_classes)
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


def _unknown_coco_categories(json_file: str) -> str | None:
    """A description of the annotations of a COCO json whose category id is not in its 'categories'."""
    with PathManager.open(json_file) as f:
        coco = json.load(f)
    known = {c["id"] for c in coco.get("categories", [])}
    bad = [a for a in coco.get("annotations", []) if a.get("category_id") not in known]
    if not bad:
        return None
    first = bad[0]
    return (
        f"{json_file}: {len(bad)} annotations have a category_id that is not among its 'categories' "
        f"(ids {sorted(known)}); first: annotation id {first.get('id')} of image id {first.get('image_id')} "
        f"with category_id={first.get('category_id')}"
    )


def explain_dataset_error(dataset_names: Iterable[str], error: Exception) -> str | None:
    """For an error raised while loading datasets: which COCO json files hold annotations with
    unknown category ids (detectron2's ``load_coco_json`` names neither file nor annotation)."""
    if not isinstance(error, KeyError) or "category_id" not in str(error):
        return None
    found = []
    for name in dataset_names:
        json_file = MetadataCatalog.get(name).get("json_file")
        if json_file:
            try:
                found.append(_unknown_coco_categories(json_file))
            except (OSError, ValueError):
                continue
    found = [f for f in found if f]
    return "; ".join(found) or None


def _current_iteration() -> int | None:
    try:
        return get_event_storage().iter
    except (AssertionError, IndexError):  # not inside a training loop
        return None


def check_finite_loss(loss: torch.Tensor, batched_inputs: list[dict]) -> None:
    """Raise ``FloatingPointError`` naming the iteration and the batch's files if ``loss`` is NaN/inf."""
    if bool(torch.isfinite(loss.detach()).all()):
        return
    files = [x.get("file_name", "?") for x in batched_inputs]
    shown = ", ".join(dict.fromkeys(files))  # a multi-view batch repeats its files
    raise FloatingPointError(
        f"Non-finite training loss {loss.detach().float().cpu().tolist()} at iteration {_current_iteration()}; "
        f"batch files: {shown}. Lower SOLVER.BASE_LR, enable SOLVER.CLIP_GRADIENTS, or check these images' "
        "annotations."
    )


def _config_keys(cfg: CfgNode, prefix: str = "") -> list[str]:
    keys = []
    for k, v in cfg.items():
        keys.append(prefix + k)
        if isinstance(v, CfgNode):
            keys.extend(_config_keys(v, prefix + k + "."))
    return keys


def _yaml_has_key(data: dict, key: str) -> bool:
    for part in key.split("."):
        if not isinstance(data, dict) or part not in data:
            return False
        data = data[part]
    return True


def _file_with_key(config_file: str, key: str, depth: int = 0) -> str | None:
    """The file of ``config_file``'s ``_BASE_`` chain that sets ``key`` (the first one found)."""
    try:
        with PathManager.open(config_file) as f:
            data = yaml.safe_load(f) or {}
    except (OSError, yaml.YAMLError):
        return None
    if _yaml_has_key(data, key):
        return config_file
    base = data.get("_BASE_") if isinstance(data, dict) else None
    if not base or depth > 20:
        return None
    base = os.path.expanduser(base)
    if not os.path.isabs(base) and "://" not in base:
        base = os.path.join(os.path.dirname(config_file), base)
    return _file_with_key(base, key, depth + 1)


def _unknown_key_message(cfg: CfgNode, error: Exception, where: str) -> str | None:
    match = re.search(r"(?:Non-existent (?:config )?key|config key):? ([\w.]+)", str(error))
    if match is None:
        return None
    key = match.group(1)
    close = difflib.get_close_matches(key, _config_keys(cfg), n=3, cutoff=0.6)
    hint = f" Did you mean {' or '.join(close)}?" if close else ""
    if "Type mismatch" in str(error):
        return f"Config key {key} {where} has a value of the wrong type: {error}"
    return f"Unknown config key {key} {where}.{hint} (Pix2Seq's keys are defined in pix2seq_d2/config.py.)"


def merge_config_checked(cfg: CfgNode, config_file: str | None, opts: list | None = None) -> CfgNode:
    """``cfg.merge_from_file(config_file)`` then ``cfg.merge_from_list(opts)``, with a ``ValueError``
    naming the key and the file (or the command line) when a key does not exist or has the wrong type."""
    if config_file:
        try:
            cfg.merge_from_file(config_file)
        except (KeyError, AssertionError, ValueError) as e:
            key = re.search(r"key:? ([\w.]+)", str(e))
            found = _file_with_key(config_file, key.group(1)) if key else None
            where = f"in {found}" if found in (None, config_file) else f"in {found} (a _BASE_ of {config_file})"
            message = _unknown_key_message(cfg, e, where if found else f"in {config_file} or its _BASE_ files")
            if message is None:
                raise
            raise ValueError(message) from e
    if opts:
        try:
            cfg.merge_from_list(list(opts))
        except (KeyError, AssertionError, ValueError) as e:
            message = _unknown_key_message(cfg, e, "given on the command line")
            if message is None:
                raise
            raise ValueError(message) from e
    return cfg
