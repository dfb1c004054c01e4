"""Every yaml under configs/ loads and builds its model (weights and datasets left out)."""

from __future__ import annotations

import dataclasses
import glob
import os

import pytest
import torch
from detectron2.config import get_cfg
from detectron2.modeling import build_model

from pix2seq_d2 import add_pix2seq_config

from .conftest import REPO_ROOT

CONFIGS = sorted(glob.glob(os.path.join(REPO_ROOT, "configs", "**", "*.yaml"), recursive=True))


def load(path: str):
    cfg = get_cfg()
    add_pix2seq_config(cfg)
    cfg.merge_from_file(path)
    cfg.merge_from_list(["MODEL.WEIGHTS", "", "MODEL.DEVICE", "cpu"])
    return cfg


def test_configs_are_found():
    names = {os.path.relpath(p, REPO_ROOT) for p in CONFIGS}
    assert {"configs/Base-Pix2Seq.yaml", "configs/pix2seq_R50.yaml", "configs/quickstart/pix2seq_shapes.yaml"} <= names


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: os.path.relpath(p, REPO_ROOT))
def test_config_builds_a_model_that_runs(path):
    cfg = load(path)
    model = build_model(cfg).eval()
    assert type(model).__name__ == "Pix2Seq"
    assert model.tokenizer.num_bins == cfg.MODEL.PIX2SEQ.NUM_BINS
    size = cfg.INPUT.MIN_SIZE_TEST // 4  # a small image keeps the test fast for every config
    with torch.no_grad():
        model.decoding = dataclasses.replace(model.decoding, max_objects=1)
        out = model([{"image": torch.zeros(3, size, size, dtype=torch.uint8), "height": 20, "width": 20}])
    assert out[0]["instances"].image_size == (20, 20)


def test_r50_config_has_the_papers_sizes():
    cfg = load(os.path.join(REPO_ROOT, "configs", "pix2seq_R50.yaml"))
    p = cfg.MODEL.PIX2SEQ
    assert (p.HIDDEN_DIM, p.NUM_HEADS, p.ENC_LAYERS, p.DEC_LAYERS, p.DIM_FEEDFORWARD) == (256, 8, 6, 6, 1024)
    assert (p.NUM_BINS, p.NUM_CLASSES, cfg.INPUT.MAX_SIZE_TRAIN) == (1000, 80, 640)
    assert cfg.MODEL.RESNETS.DEPTH == 50
    assert cfg.DATASETS.TRAIN == ("coco_2017_train",) and cfg.DATASETS.TEST == ("coco_2017_val",)
    model = build_model(cfg)
    assert len(model.encoder.layers) == 6 and len(model.decoder.layers) == 6


def test_in_feature_that_the_backbone_lacks_is_a_clear_error():
    cfg = load(os.path.join(REPO_ROOT, "configs", "quickstart", "pix2seq_shapes.yaml"))
    cfg.MODEL.PIX2SEQ.IN_FEATURE = "res5"  # the quickstart backbone only outputs res4
    with pytest.raises(ValueError, match="IN_FEATURE='res5'"):
        build_model(cfg)
