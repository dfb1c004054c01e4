"""`Pix2SeqPredictor`: a trained Pix2Seq on numpy images, in the manner of detectron2's ``DefaultPredictor``.

It builds the model from a config, loads ``MODEL.WEIGHTS``, switches to eval mode and
resizes every image as at test time (``INPUT.MIN_SIZE_TEST`` / ``INPUT.MAX_SIZE_TEST``).
Images are ``HxWx3`` uint8 arrays in BGR (detectron2's and OpenCV's default) or RGB order;
detections come back as ``Instances`` in the original image's pixel coordinates::

    predictor = Pix2SeqPredictor(cfg)
    instances = predictor(cv2.imread("image.jpg"))["instances"]
    outputs = predictor.predict_batch([image_a, image_b])  # one decoder batch
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from detectron2.config import CfgNode
from detectron2.data import Metadata
from detectron2.modeling import build_model

from pix2seq_d2.checkpoint import load_inference_weights
from pix2seq_d2.config import prepare_config
from pix2seq_d2.data.datasets import ensure_coco_metadata
from pix2seq_d2.data.image_io import IMAGE_FORMATS
from pix2seq_d2.data.transforms import build_test_resize

__all__ = ["Pix2SeqPredictor"]


class Pix2SeqPredictor:
    """End-to-end single-device inference from a config: numpy image(s) in, ``{"instances": ...}`` out.

    Attributes:
        cfg: a frozen copy of the config.
        model: the Pix2Seq model, in eval mode, on ``MODEL.DEVICE``.
        metadata: the metadata of ``DATASETS.TEST[0]`` (class names), or an empty ``Metadata``.
        input_format: the channel order the model expects (``INPUT.FORMAT``).
    """

    def __init__(self, cfg: CfgNode):
        self.cfg = cfg.clone()
        self.cfg.defrost()  # a copy: auto settings (NUM_CLASSES 0) are resolved in it
        prepare_config(self.cfg, for_training=False)  # DATASETS.COCO registered: their class names are known
        self.cfg.freeze()
        cfg = self.cfg
        self.model = build_model(self.cfg)
        self.model.eval()
        load_inference_weights(self.cfg, self.model)
        self.metadata = ensure_coco_metadata(cfg.DATASETS.TEST[0]) if len(cfg.DATASETS.TEST) else Metadata()
        self.aug = build_test_resize(cfg)
        self.input_format = cfg.INPUT.FORMAT  # one of IMAGE_FORMATS (checked by prepare_config)

    def preprocess(self, image: np.ndarray, format: str = "BGR") -> dict:
        """One image -> the model's input dict: ``image`` (CHW float tensor, resized, in
        ``INPUT.FORMAT``), ``height`` and ``width`` (the original size)."""
        if format not in IMAGE_FORMATS:
            raise ValueError(f"format must be one of {IMAGE_FORMATS}, got {format!r}")
        image = np.asarray(image)
        if image.ndim == 2:  # grayscale: the same value in every channel
            image = np.repeat(image[:, :, None], 3, axis=2)
        if image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"expected an HxWx3 (or HxW) image, got shape {image.shape}")
        if format != self.input_format:
            image = image[:, :, ::-1]
        height, width = image.shape[:2]
        resized = self.aug.get_transform(image).apply_image(image)
        tensor = torch.as_tensor(np.ascontiguousarray(resized.astype("float32").transpose(2, 0, 1)))
        return {"image": tensor.to(self.model.device), "height": height, "width": width}

    @torch.no_grad()
    def __call__(self, image: np.ndarray, format: str = "BGR") -> dict:
        """Detect objects in one ``HxWx3`` image -> ``{"instances": Instances}`` (original pixels)."""
        return self.model([self.preprocess(image, format)])[0]

    @torch.no_grad()
    def predict_batch(self, images: Sequence[np.ndarray], format: str = "BGR") -> list[dict]:
        """Detect objects in several images (any sizes) in one batch -> one output dict per image."""
        if len(images) == 0:
            return []
        return self.model([self.preprocess(image, format) for image in images])
