"""Pix2SeqDatasetMapper on real image files: boxes, filtering, ordering, odd images."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from pix2seq_d2 import Pix2SeqDatasetMapper
from pix2seq_d2.tasks.detection import TOKENS_PER_OBJECT
from tests.helpers import box_annotation, tiny_cfg, write_image


def mapper(is_train: bool = True, *opts) -> Pix2SeqDatasetMapper:
    """Short side resized to 64 px (the long side is free), no flips."""
    cfg = tiny_cfg("INPUT.RANDOM_FLIP", "none", "INPUT.MAX_SIZE_TRAIN", 1000, "INPUT.MAX_SIZE_TEST", 1000, *opts)
    return Pix2SeqDatasetMapper(cfg, is_train=is_train)


def dataset_dict(path: str, h: int, w: int, annotations: list[dict]) -> dict:
    return {"file_name": path, "height": h, "width": w, "image_id": 1, "annotations": annotations}


@pytest.fixture
def rgb_file(tmp_path):
    return write_image(str(tmp_path / "img.png"), np.full((64, 96, 3), 90, np.uint8))


def test_outputs_and_box_scaling(rgb_file):
    # A 64x96 image is resized so that its short side is 64: no change.
    out = mapper(True)(dataset_dict(rgb_file, 64, 96, [box_annotation(10, 20, 40, 50, 1)]))
    assert out["image"].shape == (3, 64, 96) and out["image"].dtype == torch.uint8
    assert out["instances"].gt_boxes.tensor.tolist() == [[10, 20, 40, 50]]
    assert out["seq_input"].shape == out["seq_target"].shape == out["seq_weight"].shape == (6,)
    assert "annotations" not in out


def test_image_without_objects_gives_start_and_eos(rgb_file):
    m = mapper(True)
    out = m(dataset_dict(rgb_file, 64, 96, []))
    assert out["seq_input"].tolist() == [m.task.tokenizer.START]
    assert out["seq_target"].tolist() == [m.task.tokenizer.EOS]


def test_crowd_degenerate_and_outside_boxes_are_dropped_partial_boxes_clipped(rgb_file):
    annotations = [
        box_annotation(5, 5, 20, 20, 0),  # kept
        box_annotation(5, 5, 20, 20, 1, iscrowd=1),  # crowd
        box_annotation(30, 30, 30, 45, 2),  # zero width
        box_annotation(200, 10, 260, 40, 0),  # entirely right of the image
        box_annotation(-20, -10, -5, 30, 0),  # entirely left of the image
        box_annotation(80, 50, 120, 90, 2),  # partly outside: clipped
    ]
    out = mapper(True, "MODEL.PIX2SEQ.OBJECT_ORDER", "none")(dataset_dict(rgb_file, 64, 96, annotations))
    inst = out["instances"]
    assert inst.gt_boxes.tensor.tolist() == [[5, 5, 20, 20], [80, 50, 96, 64]]
    assert inst.gt_classes.tolist() == [0, 2]
    assert len(out["seq_target"]) == 2 * TOKENS_PER_OBJECT + 1


def test_more_objects_than_max_objects_keeps_a_random_subset(rgb_file):
    annotations = [box_annotation(i, i, i + 10, i + 10, i % 3) for i in range(15)]
    m = mapper(True, "MODEL.PIX2SEQ.MAX_OBJECTS", 10)
    outs = [m(dataset_dict(rgb_file, 64, 96, annotations)) for _ in range(5)]
    for out in outs:
        assert len(out["instances"]) == 10
        assert len(out["seq_input"]) == 10 * TOKENS_PER_OBJECT + 1
    # random order: the kept objects and their order change between loads
    firsts = {tuple(out["instances"].gt_boxes.tensor[0].tolist()) for out in outs}
    assert len(firsts) > 1


def test_test_mode_keeps_file_order_and_drops_annotations(rgb_file):
    m = mapper(False)
    out = m(dataset_dict(rgb_file, 64, 96, [box_annotation(1, 1, 9, 9)]))
    assert "seq_input" not in out and "annotations" not in out
    assert out["height"] == 64 and out["width"] == 96


def test_resize_scales_boxes_with_the_image(tmp_path):
    path = write_image(str(tmp_path / "big.png"), np.zeros((128, 192, 3), np.uint8))
    out = mapper(True)(dataset_dict(path, 128, 192, [box_annotation(20, 40, 100, 120)]))
    assert out["image"].shape == (3, 64, 96)
    assert out["instances"].gt_boxes.tensor.tolist() == [[10, 20, 50, 60]]


def test_grayscale_image_becomes_three_channels(tmp_path):
    path = write_image(str(tmp_path / "gray.png"), np.full((64, 64), 200, np.uint8))
    out = mapper(True)(dataset_dict(path, 64, 64, [box_annotation(1, 1, 30, 30)]))
    assert out["image"].shape == (3, 64, 64)
    assert out["image"].float().mean().item() == pytest.approx(200, abs=1)


def test_exif_rotated_image_is_read_upright_and_boxes_match_it(tmp_path):
    # Stored pixels: 64 wide x 96 tall with a bright block at the top-left. EXIF orientation 6
    # ("rotate 90 degrees clockwise to display") turns it into a 96 wide x 64 tall image
    # whose bright block sits at the top-right.
    stored = np.zeros((96, 64, 3), np.uint8)
    stored[0:20, 0:30] = 255
    exif = Image.Exif()
    exif[0x0112] = 6
    path = write_image(str(tmp_path / "rotated.jpg"), stored, exif=exif, quality=100)
    out = mapper(True)(dataset_dict(path, 64, 96, [box_annotation(76, 0, 96, 30)]))
    image = out["image"].float().mean(0)  # [64, 96]
    assert image.shape == (64, 96)
    x0, y0, x1, y1 = (int(v) for v in out["instances"].gt_boxes.tensor[0].tolist())
    assert image[y0:y1, x0:x1].mean() > 240  # the annotated box covers the bright block
    assert image[:, :70].mean() < 15  # and nothing bright is elsewhere
