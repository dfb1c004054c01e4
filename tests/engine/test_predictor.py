"""Pix2SeqPredictor: weights, channel order, test-time resize, original-size outputs, batches."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.data.detection_utils import read_image
from detectron2.engine import DefaultPredictor
from detectron2.modeling import build_model

from pix2seq_d2 import Pix2SeqPredictor
from tests.helpers import tiny_cfg, write_image

# Decode exactly three objects per image (an untrained model would often stop at once).
FAST = ("MODEL.PIX2SEQ.MAX_OBJECTS_TEST", 3, "MODEL.PIX2SEQ.DECODE.STOP_AT_EOS", False)
# Hot sampling with a fixed seed: an untrained model then draws boxes of some size (greedy
# decoding of a fresh model tends to repeat one coordinate: empty boxes, dropped).
SAMPLED = (
    "MODEL.PIX2SEQ.DECODE.STRATEGY", "sample", "MODEL.PIX2SEQ.DECODE.TOP_P", 1.0,
    "MODEL.PIX2SEQ.DECODE.TEMPERATURE", 10.0, "MODEL.PIX2SEQ.DECODE.SEED", 0,
)  # fmt: skip


def random_image(h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(h, w, 3), dtype=np.uint8)


def assert_same_instances(a, b) -> None:
    assert a.image_size == b.image_size
    assert torch.allclose(a.pred_boxes.tensor, b.pred_boxes.tensor, atol=1e-4)
    assert torch.allclose(a.scores, b.scores, atol=1e-5)
    assert torch.equal(a.pred_classes, b.pred_classes)


def test_outputs_are_in_original_image_size_and_match_default_predictor(tmp_path):
    cfg = tiny_cfg(*FAST, *SAMPLED)
    image = read_image(write_image(str(tmp_path / "wide.png"), random_image(50, 120)), format="BGR")
    torch.manual_seed(3)
    ours = Pix2SeqPredictor(cfg)
    torch.manual_seed(3)
    reference = DefaultPredictor(cfg)  # detectron2's own flow, same random weights
    instances = ours(image)["instances"]
    assert instances.image_size == (50, 120)
    assert len(instances) > 0
    boxes = instances.pred_boxes.tensor
    assert (boxes[:, 0::2] >= 0).all() and (boxes[:, 0::2] <= 120).all()
    assert (boxes[:, 1::2] >= 0).all() and (boxes[:, 1::2] <= 50).all()
    assert_same_instances(instances, reference(image)["instances"])
    # The model saw the test-time size: shortest side 64, longest capped at MAX_SIZE_TEST 64.
    assert tuple(ours.preprocess(image)["image"].shape) == (3, 27, 64)
    assert not ours.model.training


def test_loads_model_weights_from_the_config(tmp_path):
    cfg = tiny_cfg(*FAST)
    torch.manual_seed(123)
    trained = build_model(cfg)
    DetectionCheckpointer(trained, save_dir=str(tmp_path)).save("model_x")
    cfg.MODEL.WEIGHTS = str(tmp_path / "model_x.pth")
    predictor = Pix2SeqPredictor(cfg)  # built from the default seed, then loaded
    for (name, expected), actual in zip(trained.state_dict().items(), predictor.model.state_dict().values()):
        assert torch.equal(expected, actual), name


def test_rgb_and_grayscale_inputs(tmp_path):
    cfg = tiny_cfg(*FAST)
    predictor = Pix2SeqPredictor(cfg)
    bgr = random_image(40, 40)
    from_bgr = predictor(bgr)["instances"]
    assert_same_instances(from_bgr, predictor(np.ascontiguousarray(bgr[:, :, ::-1]), format="RGB")["instances"])
    gray = bgr[:, :, 0]
    assert_same_instances(predictor(gray)["instances"], predictor(np.stack([gray] * 3, axis=2))["instances"])
    with pytest.raises(ValueError, match="format"):
        predictor(bgr, format="YUV")
    with pytest.raises(ValueError, match="HxWx3"):
        predictor(np.zeros((8, 8, 4), np.uint8))


def test_config_input_format_rgb_flips_bgr_inputs():
    bgr = random_image(32, 32)
    rgb_model = Pix2SeqPredictor(tiny_cfg(*FAST, "INPUT.FORMAT", "RGB"))
    image = rgb_model.preprocess(bgr, format="BGR")["image"]
    resized = rgb_model.aug.get_transform(bgr).apply_image(bgr)
    assert torch.equal(image[0], torch.from_numpy(resized[..., 2].copy()).float())  # red first
    assert torch.equal(rgb_model.preprocess(bgr[:, :, ::-1], format="RGB")["image"], image)


def test_predict_batch_matches_single_images():
    cfg = tiny_cfg(*FAST)
    predictor = Pix2SeqPredictor(cfg)
    with torch.no_grad():  # larger random weights: greedy boxes that depend on the image
        for weight in predictor.model.parameters():
            if weight.dim() > 1:
                weight.normal_(0, 0.3)
    # An image with detections (many random images give only empty boxes), so the comparison has content.
    a = next(im for im in (random_image(48, 64, seed=s) for s in range(50)) if len(predictor(im)["instances"]))
    b, c = random_image(48, 64, seed=100), random_image(30, 90, seed=101)
    same_size = predictor.predict_batch([a, b])
    assert_same_instances(same_size[0]["instances"], predictor(a)["instances"])
    assert_same_instances(same_size[1]["instances"], predictor(b)["instances"])
    mixed = predictor.predict_batch([a, c])
    assert [out["instances"].image_size for out in mixed] == [(48, 64), (30, 90)]
    assert predictor.predict_batch([]) == []
