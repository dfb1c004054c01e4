"""Reading image files for training, evaluation and the tools, with errors that name the file.

* Images that cannot be used (missing, unreadable, truncated, empty, a size that does not match the
  dataset's ``height``/``width``, or so elongated that resizing gives a zero side) raise
  :class:`BadInputError` naming the file. The resumable training loader
  (:mod:`pix2seq_d2.data.resumable_loader`) logs it and trains on another image; at test time it
  stops the evaluation.
* Grayscale, palette, CMYK, RGBA (alpha dropped) and 16-bit images are converted to 8-bit colour:
  :func:`read_image_file` (used by :func:`read_image_checked` in training and evaluation, and by
  ``tools/demo.py`` and ``tools/visualize_beliefs.py``) scales 16-bit pixels to 0..255 instead of
  clipping them (detectron2's ``read_image`` turns most 16-bit images white). A file that is not an
  image is named with what it looks like (text, an HTML page from a failed download, a git-lfs
  pointer, an archive, ...).
"""

from __future__ import annotations

import logging
import os
import struct
from collections.abc import Iterable

import numpy as np
from detectron2.data import detection_utils as utils
from detectron2.data import transforms as T
from detectron2.utils.file_io import PathManager
from PIL import Image, ImageOps, UnidentifiedImageError

from pix2seq_d2.utils.errors import UserError
from pix2seq_d2.utils.file_kinds import IMAGE_SIGNATURES, describe_file_start

__all__ = ["BadInputError", "IMAGE_FORMATS", "read_image_checked", "read_image_file"]

logger = logging.getLogger(__name__)

# The channel orders INPUT.FORMAT may name (images are read and fed to the model in this order).
IMAGE_FORMATS = ("BGR", "RGB")


class BadInputError(UserError, ValueError):
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
    if kind == "image" and what in IMAGE_SIGNATURES.values() or what == "a WebP image":
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
