"""Pix2Seq image augmentation as detectron2 ``Augmentation``s, built from ``INPUT.*``.

:func:`build_pix2seq_augmentation` gives the list that
:class:`~pix2seq_d2.data.dataset_mapper.Pix2SeqDatasetMapper` applies to image and boxes:

* default config (``INPUT.LSJ`` and ``INPUT.COLOR_JITTER`` off): exactly detectron2's
  ``utils.build_augmentation`` (``ResizeShortestEdge`` + ``RandomFlip``);
* ``INPUT.LSJ.ENABLED``, large-scale jitter (the paper's and ViTDet's order): ``RandomFlip``
  (``INPUT.RANDOM_FLIP``), ``ResizeScale`` (fit the image into a square of ``IMAGE_SIZE * s``,
  ``s ~ U(MIN_SCALE, MAX_SCALE)``, aspect ratio kept), :class:`RandomFixedSizeCrop` (a random
  window of at most ``IMAGE_SIZE x IMAGE_SIZE``);
* ``INPUT.COLOR_JITTER.ENABLED``: :class:`ColorJitter` last (brightness, contrast, saturation,
  hue, in random order; channel order from ``INPUT.FORMAT``).

No pixel padding to ``IMAGE_SIZE x IMAGE_SIZE`` happens here: ``Pix2Seq`` pads the batch
itself and masks the padding (encoder attention and position encoding), and box tokens are
normalised by each image's own size. Padding with pixels would make the training coordinates
relative to the padded square while inference (and ``detector_postprocess``) works relative to
the image, so the two would disagree. In a batch that holds one image of scale >= 1 every
image is padded to ``IMAGE_SIZE x IMAGE_SIZE`` anyway.

Test time (``INPUT.RESIZE_TEST``): detectron2's ``ResizeShortestEdge(MIN_SIZE_TEST, MAX_SIZE_TEST)``,
or the official release's resize (longest side ``MAX_SIZE_TEST``, antialiased bilinear on float
pixels: :class:`ResizeLongestSide`), no random ops,
the same resize the predictors use. LSJ configs set ``MIN_SIZE_TEST = MAX_SIZE_TEST =
IMAGE_SIZE``, which resizes the longest side to ``IMAGE_SIZE`` (what LSJ does at scale 1).
"""

from __future__ import annotations

import logging

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from detectron2.config import CfgNode
from detectron2.data import detection_utils as utils
from detectron2.data import transforms as T

__all__ = ["build_pix2seq_augmentation", "ColorJitter", "ColorJitterTransform", "RandomFixedSizeCrop"]

logger = logging.getLogger(__name__)

# ITU-R BT.601 luma weights of (R, G, B), as PIL's "L" conversion and torchvision use.
_LUMA_RGB = np.array([0.299, 0.587, 0.114], np.float32)
COLOR_FORMATS = ("RGB", "BGR")


class RandomFixedSizeCrop(T.Augmentation):
    """A random window of ``crop_size`` (h, w); a side shorter than the window is kept whole.

    detectron2's ``FixedSizeCrop`` draws one offset fraction for both axes, so its windows
    only slide along the image's diagonal; here the x and y offsets are drawn independently.
    Nothing is padded.
    """

    def __init__(self, crop_size: tuple[int, int]):
        super().__init__()
        self.crop_size = tuple(crop_size)

    def get_transform(self, image: np.ndarray) -> T.Transform:
        h, w = image.shape[:2]
        crop_h, crop_w = min(h, self.crop_size[0]), min(w, self.crop_size[1])
        if (crop_h, crop_w) == (h, w):
            return T.NoOpTransform()
        y0 = int(np.random.randint(h - crop_h + 1))
        x0 = int(np.random.randint(w - crop_w + 1))
        return T.CropTransform(x0, y0, crop_w, crop_h, w, h)


def _luma(img: np.ndarray, image_format: str) -> np.ndarray:
    """float ``[H, W, 3]`` in ``image_format`` -> luma ``[H, W, 1]``."""
    weights = _LUMA_RGB if image_format == "RGB" else _LUMA_RGB[::-1]
    return (img @ weights)[..., None]


def _brightness(img: np.ndarray, factor: float, image_format: str) -> np.ndarray:
    return img * factor


def _contrast(img: np.ndarray, factor: float, image_format: str) -> np.ndarray:
    mean = float(_luma(img, image_format).mean())
    return mean + factor * (img - mean)


def _saturation(img: np.ndarray, factor: float, image_format: str) -> np.ndarray:
    gray = _luma(img, image_format)
    return gray + factor * (img - gray)


def _hue(img: np.ndarray, shift: float, image_format: str) -> np.ndarray:
    """Rotate the HSV hue by ``shift`` turns (value and saturation unchanged)."""
    to_hsv, from_hsv = (
        (cv2.COLOR_RGB2HSV, cv2.COLOR_HSV2RGB) if image_format == "RGB" else (cv2.COLOR_BGR2HSV, cv2.COLOR_HSV2BGR)
    )
    hsv = cv2.cvtColor(np.ascontiguousarray(img / 255.0, dtype=np.float32), to_hsv)  # H in degrees [0, 360)
    hsv[..., 0] = np.mod(hsv[..., 0] + 360.0 * shift, 360.0)
    return cv2.cvtColor(hsv, from_hsv) * 255.0


_COLOR_OPS = {"brightness": _brightness, "contrast": _contrast, "saturation": _saturation, "hue": _hue}


class ColorJitterTransform(T.Transform):
    """Photometric ops applied in the given order, each clipped to [0, 255]; coordinates unchanged.

    ``ops`` are ``(name, value)`` pairs: "brightness"/"contrast"/"saturation" blend the image
    with black / its mean luma / its per-pixel luma (``value`` 1: unchanged), "hue" rotates the
    hue by ``value`` turns. Channel order (for luma and hue) follows ``image_format``.
    """

    def __init__(self, ops: list[tuple[str, float]], image_format: str = "BGR"):
        super().__init__()
        if image_format not in COLOR_FORMATS:
            raise ValueError(f"colour jitter needs INPUT.FORMAT in {COLOR_FORMATS}, got {image_format!r}")
        unknown = [name for name, _ in ops if name not in _COLOR_OPS]
        if unknown:
            raise ValueError(f"unknown colour ops {unknown}; known: {sorted(_COLOR_OPS)}")
        self._set_attributes({"ops": list(ops), "image_format": image_format})

    def apply_image(self, img: np.ndarray) -> np.ndarray:
        out = img.astype(np.float32)  # [H, W, 3]
        for name, value in self.ops:
            out = np.clip(_COLOR_OPS[name](out, value, self.image_format), 0.0, 255.0)
        return np.rint(out).astype(np.uint8) if img.dtype == np.uint8 else out

    def apply_coords(self, coords: np.ndarray) -> np.ndarray:
        return coords

    def apply_segmentation(self, segmentation: np.ndarray) -> np.ndarray:
        return segmentation

    def inverse(self) -> T.Transform:
        return T.NoOpTransform()


class ColorJitter(T.Augmentation):
    """Random brightness, contrast and saturation factors in ``[max(0, 1 - x), 1 + x]`` and a hue
    shift in ``[-hue, hue]`` turns, applied in random order (torchvision's ``ColorJitter``); 0 turns
    an op off."""

    def __init__(
        self,
        brightness: float = 0.0,
        contrast: float = 0.0,
        saturation: float = 0.0,
        hue: float = 0.0,
        image_format: str = "BGR",
    ):
        super().__init__()
        for name, value in (("brightness", brightness), ("contrast", contrast), ("saturation", saturation)):
            if value < 0:
                raise ValueError(f"colour jitter {name} must be >= 0, got {value}")
        if not 0 <= hue <= 0.5:
            raise ValueError(f"colour jitter hue must lie in [0, 0.5] (turns of the colour wheel), got {hue}")
        if image_format not in COLOR_FORMATS:
            raise ValueError(f"colour jitter needs INPUT.FORMAT in {COLOR_FORMATS}, got {image_format!r}")
        self._init(locals())

    def get_transform(self, image: np.ndarray) -> T.Transform:
        ops = []
        for name in ("brightness", "contrast", "saturation"):
            x = getattr(self, name)
            if x > 0:
                ops.append((name, float(np.random.uniform(max(0.0, 1.0 - x), 1.0 + x))))
        if self.hue > 0:
            ops.append(("hue", float(np.random.uniform(-self.hue, self.hue))))
        ops = [ops[i] for i in np.random.permutation(len(ops))]
        return ColorJitterTransform(ops, self.image_format)


def _random_flip(cfg: CfgNode) -> list[T.Augmentation]:
    """``INPUT.RANDOM_FLIP`` as detectron2 reads it ("none", "horizontal", "vertical")."""
    flip = cfg.INPUT.RANDOM_FLIP
    return [] if flip == "none" else [T.RandomFlip(horizontal=flip == "horizontal", vertical=flip == "vertical")]


class AntialiasedResizeTransform(T.ResizeTransform):
    """detectron2's ``ResizeTransform`` (same box and inverse maths) whose image resize is
    antialiased bilinear on float pixels (``torch.nn.functional.interpolate(antialias=True)``,
    as ``tf.image.resize(antialias=True)``); returns float32 images, no uint8 rounding."""

    def __init__(self, h: int, w: int, new_h: int, new_w: int):
        super().__init__(h, w, new_h, new_w)

    def apply_image(self, img: np.ndarray, interp=None) -> np.ndarray:
        assert img.shape[:2] == (self.h, self.w), f"image of size {img.shape[:2]} given to a resize of {self.h, self.w}"
        x = torch.from_numpy(np.ascontiguousarray(img, dtype=np.float32))
        x = x[:, :, None] if x.ndim == 2 else x
        out = F.interpolate(
            x.permute(2, 0, 1)[None],
            size=(self.new_h, self.new_w),
            mode="bilinear",
            antialias=True,
            align_corners=False,
        )
        out = out[0].permute(1, 2, 0).numpy()
        return out[:, :, 0] if img.ndim == 2 else out


class ResizeLongestSide(T.Augmentation):
    """The official Pix2Seq eval resize: the longest side becomes ``size``, aspect ratio kept, each
    side ``round(side * size / longest)`` rounded half to even (as TensorFlow), antialiased."""

    def __init__(self, size: int):
        super().__init__()
        if size < 1:
            raise ValueError(f"resize size must be >= 1, got {size}")
        self.size = size

    def get_transform(self, image: np.ndarray) -> T.Transform:
        h, w = image.shape[:2]
        scale = min(self.size / h, self.size / w)
        new_h, new_w = (max(int(round(side * scale)), 1) for side in (h, w))
        return AntialiasedResizeTransform(h, w, new_h, new_w)


TEST_RESIZES = ("shortest_edge", "longest_side")


def build_test_resize(cfg: CfgNode) -> T.Augmentation:
    """The test-time resize of ``INPUT.RESIZE_TEST`` (mapper, predictor and demos use this one)."""
    if cfg.INPUT.RESIZE_TEST == "shortest_edge":
        return T.ResizeShortestEdge(cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MAX_SIZE_TEST, "choice")
    if cfg.INPUT.RESIZE_TEST == "longest_side":
        return ResizeLongestSide(cfg.INPUT.MAX_SIZE_TEST)
    raise ValueError(f"unknown INPUT.RESIZE_TEST {cfg.INPUT.RESIZE_TEST!r}; known: {TEST_RESIZES}")


def build_pix2seq_augmentation(cfg: CfgNode, is_train: bool) -> list[T.Augmentation]:
    """The mapper's augmentations from ``INPUT.*`` (see the module docstring).

    Default config: ``utils.build_augmentation(cfg, is_train)`` unchanged. Test time: only
    :func:`build_test_resize` (no random ops), whatever ``INPUT.LSJ`` / ``INPUT.COLOR_JITTER`` say.
    """
    lsj, color = cfg.INPUT.LSJ, cfg.INPUT.COLOR_JITTER
    if not is_train:
        shortest = cfg.INPUT.RESIZE_TEST == "shortest_edge"
        if lsj.ENABLED and (
            cfg.INPUT.MAX_SIZE_TEST != lsj.IMAGE_SIZE or (shortest and cfg.INPUT.MIN_SIZE_TEST < lsj.IMAGE_SIZE)
        ):
            logger.warning(
                f"INPUT.LSJ.IMAGE_SIZE={lsj.IMAGE_SIZE} but test images are resized with "
                f"MIN_SIZE_TEST={cfg.INPUT.MIN_SIZE_TEST}, MAX_SIZE_TEST={cfg.INPUT.MAX_SIZE_TEST}; set both to "
                "IMAGE_SIZE to test at the training scale (longest side IMAGE_SIZE)"
            )
        return [build_test_resize(cfg)]
    if lsj.ENABLED:
        if not 0 < lsj.MIN_SCALE <= lsj.MAX_SCALE:
            raise ValueError(f"INPUT.LSJ needs 0 < MIN_SCALE <= MAX_SCALE, got {lsj.MIN_SCALE}, {lsj.MAX_SCALE}")
        if lsj.IMAGE_SIZE < 1:
            raise ValueError(f"INPUT.LSJ.IMAGE_SIZE must be >= 1, got {lsj.IMAGE_SIZE}")
        size = lsj.IMAGE_SIZE
        augs = _random_flip(cfg) + [
            T.ResizeScale(lsj.MIN_SCALE, lsj.MAX_SCALE, target_height=size, target_width=size),
            RandomFixedSizeCrop((size, size)),
        ]
    else:
        augs = utils.build_augmentation(cfg, is_train=True)
    if color.ENABLED:
        augs.append(ColorJitter(color.BRIGHTNESS, color.CONTRAST, color.SATURATION, color.HUE, cfg.INPUT.FORMAT))
    return augs
