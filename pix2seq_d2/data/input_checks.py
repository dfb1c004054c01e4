"""Checks on training inputs that turn bad files and annotations into clear, actionable errors.

What each kind of bad input does:

* Images that cannot be used (missing, unreadable, truncated, empty, a size that does not
  match the dataset's ``height``/``width``, or so elongated that resizing gives a zero side)
  raise :class:`BadInputError` naming the file. The resumable training loader
  (:mod:`pix2seq_d2.data.resumable_loader`) logs it and trains on another image; at test time it
  stops the evaluation.
* Grayscale, palette, CMYK, RGBA (alpha dropped) and 16-bit images are converted to 8-bit
  colour: :func:`read_image_file` (used by :func:`read_image_checked` in training and
  evaluation, and by ``tools/demo.py`` and ``tools/visualize_beliefs.py``) scales 16-bit
  pixels to 0..255 instead of clipping them (detectron2's ``read_image`` turns most 16-bit
  images white). A file that is not an image is named with what it looks like (text, an
  HTML page from a failed download, a git-lfs pointer, an archive, ...).
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
import struct
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
    "read_image_file",
    "describe_file_start",
    "valid_annotations",
    "drop_invalid_annotations",
    "check_category_ids",
    "explain_dataset_error",
    "check_finite_loss",
    "ConfigKeyError",
    "current_training_iteration",
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


_TEXT_CONTROL = set("\n\r\t\f\v")


def _looks_like_text(head: bytes) -> bool:
    """Whether ``head`` (a file's first bytes) is text: UTF-8 without NUL bytes, nearly all printable."""
    if not head or b"\x00" in head:
        return False
    for cut in range(4):  # the first bytes may end inside a multi-byte character
        try:
            text = head[: len(head) - cut].decode("utf-8")
            break
        except UnicodeDecodeError:
            continue
    else:
        return False
    text = text.lstrip("\ufeff")
    printable = sum(ch.isprintable() or ch in _TEXT_CONTROL for ch in text)
    return printable >= 0.95 * max(1, len(text))


def _text_start(head: bytes, limit: int = 60) -> str:
    """The first non-blank line of ``head`` (decoded leniently), shortened to ``limit`` characters."""
    text = head.decode("utf-8", errors="replace").lstrip("\ufeff \t\r\n")
    line = text.splitlines()[0] if text else ""
    return line if len(line) <= limit else line[: limit - 3] + "..."


_ARCHIVES = {
    b"\x1f\x8b": "gzip",
    b"BZh": "bzip2",
    b"\xfd7zXZ\x00": "xz",
    b"7z\xbc\xaf\x27\x1c": "7-Zip",
    b"Rar!\x1a\x07": "RAR",
}
_IMAGES = {
    b"\xff\xd8\xff": "a JPEG image",
    b"\x89PNG\r\n\x1a\n": "a PNG image",
    b"GIF87a": "a GIF image",
    b"GIF89a": "a GIF image",
    b"II*\x00": "a TIFF image",
    b"MM\x00*": "a TIFF image",
    b"BM": "a BMP image",
}


def describe_file_start(head: bytes, size: int | None = None) -> tuple[str, str] | None:
    """What a file that is not what was expected looks like, from its first bytes (``head``, at
    least 512 bytes where the file has them) and its ``size``: ``(kind, description)`` or None.

    Shared by the image reader and the checkpoint checks, to say *what* a wrong file is: empty,
    a git-lfs pointer, an HTML/XML page (a failed download), JSON/YAML/other text, an archive,
    an image, a video, a PDF, a safetensors/HDF5/NumPy/ONNX file. Kinds: ``empty``, ``git-lfs``,
    ``html``, ``xml``, ``json``, ``yaml``, ``text``, ``archive``, ``zip``, ``image``, ``video``,
    ``document``, ``safetensors``, ``hdf5``, ``numpy``, ``onnx``, ``pickle``. None: not one of
    these (binary of another kind).
    """
    if size == 0 or not head:
        return "empty", "an empty file (0 bytes)"
    if head.startswith(b"version https://git-lfs"):
        return "git-lfs", (
            f"a git-lfs pointer ({size if size is not None else len(head)} bytes of text standing in for the real "
            "file, which was never downloaded): run `git lfs pull` in its repository, or download the file itself"
        )
    stripped = head.lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    if stripped.startswith((b"<!doctype html", b"<html", b"<head", b"<!--")) or (
        stripped.startswith(b"<") and b"<html" in stripped[:1024]
    ):
        return "html", (
            "an HTML page, not the file itself: a failed download (an error, login or redirect page saved "
            f"under this name?); it starts with {_text_start(head)!r}"
        )
    if stripped.startswith(b"<svg") or (stripped.startswith(b"<?xml") and b"<svg" in stripped[:1024]):
        return "image", "an SVG (vector) image"
    if stripped.startswith(b"<?xml"):
        return "xml", (
            "an XML document, not the file itself: a failed download (a storage server's error response, such as "
            f"'AccessDenied' or 'NoSuchKey'?); it starts with {_text_start(head)!r}"
        )
    if head.startswith((b"PK\x03\x04", b"PK\x05\x06")):
        return "zip", "a zip archive"
    for magic, name in _ARCHIVES.items():
        if head.startswith(magic):
            return "archive", f"a {name}-compressed archive: extract it first"
    if len(head) > 262 and head[257:262] == b"ustar":
        return "archive", "a tar archive: extract it first"
    for magic, name in _IMAGES.items():
        if head.startswith(magic):
            return "image", name
    if head.startswith(b"RIFF") and head[8:12] == b"WEBP":
        return "image", "a WebP image"
    if head[4:8] == b"ftyp":
        brand = head[8:12]
        if brand in (b"heic", b"heix", b"hevc", b"heim", b"heis", b"mif1", b"msf1", b"avif", b"avis"):
            return "image", f"a HEIF/AVIF image ({brand.decode('ascii', 'replace')})"
        return "video", f"an MP4/QuickTime video ({brand.decode('ascii', 'replace').strip()})"
    if head.startswith(b"RIFF") and head[8:12] == b"AVI ":
        return "video", "an AVI video"
    if head.startswith(b"\x1a\x45\xdf\xa3"):
        return "video", "a Matroska/WebM video"
    if head.startswith(b"%PDF"):
        return "document", "a PDF document"
    if head.startswith((b"\xff\xfe", b"\xfe\xff")):
        return "text", "UTF-16 text, not binary data"
    if head.startswith(b"\x89HDF\r\n\x1a\n"):
        return "hdf5", "an HDF5 file (Keras/TensorFlow .h5 weights?)"
    if head.startswith(b"\x93NUMPY"):
        return "numpy", "a NumPy .npy array"
    if len(head) >= 9 and head[8:9] == b"{":
        header = int.from_bytes(head[:8], "little")
        if 2 <= header and (size is None or header <= size - 8) and head[8:].lstrip(b"{ ").startswith(b'"'):
            return "safetensors", "a safetensors file (Hugging Face's tensor format)"
    if head[:1] == b"\x80" and len(head) > 1 and 2 <= head[1] <= 5:
        return "pickle", "a Python pickle"
    if _looks_like_text(head[:4096]):
        start = _text_start(head)
        if stripped.startswith((b"{", b"[")):
            return "json", f"JSON text, not binary data (it starts with {start!r})"
        if re.search(rb"^(_BASE_|MODEL|SOLVER|INPUT|DATASETS)\s*:", head, re.MULTILINE):
            return "yaml", f"a YAML config file (it starts with {start!r})"
        return "text", f"text, not binary data (it starts with {start!r})"
    if len(head) > 3 and head[0] == 0x08 and 1 <= head[1] <= 20 and head[2] in (0x12, 0x1A, 0x22, 0x3A, 0x42):
        return "onnx", "an ONNX model (a protobuf, as exported for inference runtimes)"
    return None


def _local_path(file_name: str) -> bool:
    return "://" not in file_name


def _read_head(file_name: str, count: int = 4096) -> bytes:
    try:
        with PathManager.open(file_name, "rb") as f:
            return f.read(count)
    except OSError:
        return b""


def _unreadable_image_message(file_name: str) -> str:
    """``not a readable image ...`` naming ``file_name`` and, where its first bytes tell, what it is."""
    size = os.path.getsize(file_name) if _local_path(file_name) and os.path.isfile(file_name) else None
    described = describe_file_start(_read_head(file_name), size)
    if described is None:
        return f"not a readable image (unknown format or corrupt): {file_name}"
    kind, what = described
    if kind == "image" and what in _IMAGES.values() or what == "a WebP image":
        return f"not a readable image (corrupt?): {file_name} starts like {what}, but PIL cannot decode it"
    if kind == "image":
        return (
            f"not a readable image: {file_name} is {what}, a format PIL cannot decode here: convert it to PNG or JPEG"
        )
    return f"not a readable image: {file_name} is {what}"


def _open_image(file_name: str) -> Image.Image:
    """Open and fully decode an image file, with EXIF orientation applied; BadInputError if impossible."""
    if _local_path(file_name):
        if os.path.isdir(file_name):
            raise BadInputError(f"not a readable image: {file_name} is a folder, not an image file")
        if os.path.isfile(file_name) and os.path.getsize(file_name) == 0:
            raise BadInputError(f"not a readable image: {file_name} is an empty file (0 bytes)")
    try:
        f = PathManager.open(file_name, "rb")
    except FileNotFoundError as e:
        raise BadInputError(f"image file not found: {file_name}") from e
    except IsADirectoryError as e:
        raise BadInputError(f"not a readable image: {file_name} is a folder, not an image file") from e
    except OSError as e:  # permissions, a symlink loop, a network file system error, ...
        raise BadInputError(f"cannot open image file {file_name}: {e.strerror or e}") from e
    try:
        with f:
            image = Image.open(f)
            image.load()  # decode now: truncated files fail here, not later inside an augmentation
    except UnidentifiedImageError as e:
        raise BadInputError(_unreadable_image_message(file_name)) from e
    except Image.DecompressionBombError as e:
        raise BadInputError(f"image {file_name} is too large to decode safely: {e}") from e
    except (OSError, SyntaxError, ValueError, EOFError, IndexError, struct.error) as e:
        raise BadInputError(f"cannot decode image {file_name} (truncated or corrupt?): {e}") from e
    try:
        image = ImageOps.exif_transpose(image)
    except Exception as e:  # a broken EXIF block: keep the stored orientation
        logger.warning(f"Ignoring unreadable EXIF orientation of {file_name}: {e}")
    return image


def read_image_file(path: str, image_format: str) -> np.ndarray:
    """Read an image file as an HxWxC uint8 array in ``image_format`` (``"BGR"``, ``"RGB"``, ``"L"``, ...,
    as detectron2's ``read_image``), for every entry point that reads image files.

    * EXIF orientation is applied.
    * Every pixel mode becomes 8-bit colour: 16-bit (and 32-bit integer/float) pixels are scaled to
      0..255, not clipped (detectron2's ``read_image`` turns most 16-bit images white); the alpha of
      RGBA/LA/PA images is dropped; palette and grayscale images are expanded to colour.
    * A file that cannot be used raises :class:`BadInputError` naming it and saying why: missing,
      a folder, empty (0 bytes), unreadable, not an image (and what it looks like: text, an HTML page
      from a failed download, a git-lfs pointer, an archive, ...), truncated or corrupt, or 0 pixels
      wide or high. No PIL/OpenCV exception escapes.
    """
    image = _to_8bit(_open_image(path))
    try:
        array = utils.convert_PIL_to_numpy(image, image_format)
    except (ValueError, OSError, KeyError) as e:
        raise BadInputError(
            f"image {path} has pixel mode {image.mode!r}, which cannot be converted to {image_format}: {e}"
        ) from e
    h, w = array.shape[:2]
    if h == 0 or w == 0:
        raise BadInputError(f"image {path} is empty ({w}x{h} pixels)")
    return array


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

    The file is read by :func:`read_image_file` (EXIF orientation, every PIL mode to 8-bit colour,
    16-bit scaled, alpha dropped); fills in missing ``height``/``width``. Raises
    :class:`BadInputError` naming the file if it is missing, unreadable, truncated, empty, of
    another size than the dict says, or so elongated that a ``ResizeShortestEdge`` in
    ``augmentations`` would give it a zero side.
    """
    file_name = dataset_dict["file_name"]
    array = read_image_file(file_name, image_format)
    h, w = array.shape[:2]
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


def current_training_iteration() -> int | None:
    """The iteration of the running detectron2 trainer (its open ``EventStorage``), None outside one."""
    try:
        return get_event_storage().iter
    except (AssertionError, IndexError):  # detectron2 asserts that an EventStorage is open; none is
        return None


def check_finite_loss(loss: torch.Tensor, batched_inputs: list[dict]) -> None:
    """Raise ``FloatingPointError`` naming the iteration and the batch's files if ``loss`` is NaN/inf."""
    if bool(torch.isfinite(loss.detach()).all()):
        return
    files = [x.get("file_name", "?") for x in batched_inputs]
    shown = ", ".join(dict.fromkeys(files))  # a multi-view batch repeats its files
    raise FloatingPointError(
        f"Non-finite training loss {loss.detach().float().cpu().tolist()} at iteration {current_training_iteration()}; "
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


def _config_file_chain(config_file: str) -> list[tuple[str, dict]]:
    """``config_file`` and its ``_BASE_`` files (top first) with their yaml mappings; the chain ends
    at a file that cannot be read (``merge_from_file`` then reports it)."""
    chain: list[tuple[str, dict]] = []
    path: str | None = config_file
    while path and len(chain) <= 20:
        try:
            with PathManager.open(path) as f:
                data = yaml.safe_load(f) or {}
        except (OSError, yaml.YAMLError):
            break
        if not isinstance(data, dict):
            break
        chain.append((path, data))
        base = data.get("_BASE_")
        if not isinstance(base, str) or not base:
            break
        base = os.path.expanduser(base)
        path = base if os.path.isabs(base) or "://" in base else os.path.join(os.path.dirname(path), base)
    return chain


def _unknown_key(root: CfgNode, node: CfgNode, data: dict, prefix: str = "") -> str | None:
    """The first key of the yaml mapping ``data`` (merged into ``node`` of ``root``) that the config
    does not have; deprecated keys and nodes that take new keys are not unknown, and renamed keys are
    left to yacs (whose error names the new key)."""
    for key, value in data.items():
        full = f"{prefix}{key}"
        if (not prefix and key == "_BASE_") or root.key_is_deprecated(full) or root.key_is_renamed(full):
            continue
        if key not in node:
            if node.is_new_allowed():
                continue
            return full
        if isinstance(value, dict) and isinstance(node[key], CfgNode):
            found = _unknown_key(root, node[key], value, full + ".")
            if found:
                return found
    return None


def _unknown_key_message(cfg: CfgNode, key: str, where: str) -> str:
    close = difflib.get_close_matches(key, _config_keys(cfg), n=3, cutoff=0.6)
    hint = f" Did you mean {' or '.join(close)}?" if close else ""
    return f"Unknown config key {key} {where}.{hint} (Pix2Seq's keys are defined in pix2seq_d2/config/defaults.py.)"


class ConfigKeyError(ValueError):
    """A config file or command line sets a key that does not exist, or gives it a value of the wrong type."""


def merge_config_checked(cfg: CfgNode, config_file: str | None, opts: list | None = None) -> CfgNode:
    """``cfg.merge_from_file(config_file)`` then ``cfg.merge_from_list(opts)``. A key that does not
    exist is a ``ConfigKeyError`` naming it, its file (or the command line) and the closest keys,
    found by reading the files' keys before merging; whatever else the merge refuses (a value of
    the wrong type, a renamed key) is a ``ConfigKeyError`` with yacs's message and the file."""
    if config_file:
        for path, data in reversed(_config_file_chain(config_file)):  # _BASE_ files merge first
            if data.get("VERSION", cfg.VERSION) != cfg.VERSION:
                break  # an old-format config: detectron2 upgrades its keys while merging
            key = _unknown_key(cfg, cfg, data)
            if key:
                where = f"in {path}" if path == config_file else f"in {path} (a _BASE_ of {config_file})"
                raise ConfigKeyError(_unknown_key_message(cfg, key, where))
        try:
            cfg.merge_from_file(config_file)
        except (KeyError, AssertionError, ValueError) as e:
            raise ConfigKeyError(f"{config_file}: {e}") from e
    if opts:
        opts = list(opts)
        for key in opts[0::2]:
            data: dict = {}
            node = data
            *parents, last = str(key).split(".")
            for part in parents:
                node = node.setdefault(part, {})
            node[last] = None
            unknown = _unknown_key(cfg, cfg, data)
            if unknown:
                raise ConfigKeyError(_unknown_key_message(cfg, unknown, "given on the command line"))
        try:
            cfg.merge_from_list(opts)
        except (KeyError, AssertionError, ValueError) as e:
            raise ConfigKeyError(f"command-line setting: {e}") from e
    return cfg
