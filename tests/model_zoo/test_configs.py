"""Every yaml under configs/ loads and builds its model (weights and datasets left out)."""

from __future__ import annotations

import dataclasses
import glob
import os

import pytest
import torch
from detectron2.config import get_cfg
from detectron2.engine import DefaultTrainer
from detectron2.modeling import build_model

from pix2seq_d2 import add_pix2seq_config
from tests.helpers import REPO_ROOT

ALL_YAML = sorted(glob.glob(os.path.join(REPO_ROOT, "configs", "**", "*.yaml"), recursive=True))


def load(path: str):
    cfg = get_cfg()
    add_pix2seq_config(cfg)
    cfg.merge_from_file(path)
    cfg.merge_from_list(["MODEL.WEIGHTS", "", "MODEL.DEVICE", "cpu"])
    return cfg


# Fragments (a class list other configs take as _BASE_) are not models on their own.
FRAGMENTS = [p for p in ALL_YAML if load(p).MODEL.META_ARCHITECTURE != "Pix2Seq"]
CONFIGS = [p for p in ALL_YAML if p not in FRAGMENTS]
# The official 1024/1333 px configs differ from their 640 px one in size keys only; building their
# full-size models (ViT-L: 341 M parameters) takes minutes on 2 cores, so they run with -m slow.
LARGE = [p for p in CONFIGS if os.path.basename(p).endswith(("_1024.yaml", "_1333.yaml")) and "official" in p]


def test_fragments_are_only_bases():
    assert all(os.path.basename(p).startswith("Base-") for p in FRAGMENTS)


def test_configs_are_found():
    names = {os.path.relpath(p, REPO_ROOT) for p in CONFIGS}
    assert {"configs/Base-Pix2Seq.yaml", "configs/pix2seq_R50.yaml", "configs/quickstart/pix2seq_shapes.yaml"} <= names


@pytest.mark.parametrize(
    "path",
    [pytest.param(p, marks=pytest.mark.slow) if p in LARGE else p for p in CONFIGS],
    ids=lambda p: os.path.relpath(p, REPO_ROOT),
)
def test_config_builds_a_model_that_runs(path):
    cfg = load(path)
    size = cfg.INPUT.MIN_SIZE_TEST // 4  # a small image keeps the test fast for every config
    if cfg.MODEL.PIX2SEQ.PAD_TO_SQUARE:  # square-padded models: a small square too
        cfg.MODEL.PIX2SEQ.PAD_TO_SQUARE = size = 64
    model = build_model(cfg).eval()
    assert type(model).__name__ == "Pix2Seq"
    assert model.tokenizer.num_bins == cfg.MODEL.PIX2SEQ.NUM_BINS
    with torch.no_grad():
        model.decoding = dataclasses.replace(model.decoding, max_objects=1)
        out = model([{"image": torch.zeros(3, size, size, dtype=torch.uint8), "height": 20, "width": 20}])
    assert out[0]["instances"].image_size == (20, 20)


def test_r50_config_has_the_papers_sizes():
    cfg = load(os.path.join(REPO_ROOT, "configs", "pix2seq_R50.yaml"))
    p = cfg.MODEL.PIX2SEQ
    assert (p.HIDDEN_DIM, p.NUM_HEADS, p.ENC_LAYERS, p.DEC_LAYERS, p.DIM_FEEDFORWARD) == (256, 8, 6, 6, 1024)
    assert (p.NUM_BINS, p.NUM_CLASSES, cfg.INPUT.LSJ.IMAGE_SIZE, cfg.INPUT.MAX_SIZE_TEST) == (1000, 80, 640, 640)
    assert p.SEQ_AUG.ENABLED and p.DROP_PATH == 0.1 and not p.DECODE.STOP_AT_EOS
    assert cfg.MODEL.RESNETS.DEPTH == 50
    assert cfg.DATASETS.TRAIN == ("coco_2017_train",) and cfg.DATASETS.TEST == ("coco_2017_val",)
    model = build_model(cfg)
    assert len(model.encoder.layers) == 6 and len(model.decoder.layers) == 6


def test_in_feature_that_the_backbone_lacks_is_a_clear_error():
    cfg = load(os.path.join(REPO_ROOT, "configs", "quickstart", "pix2seq_shapes.yaml"))
    cfg.MODEL.PIX2SEQ.IN_FEATURE = "res5"  # the quickstart backbone only outputs res4
    with pytest.raises(ValueError, match="IN_FEATURE='res5'"):
        build_model(cfg)


@pytest.mark.parametrize(
    "name, bins, size, depth",
    [
        ("pix2seq_R50.yaml", 1000, 640, 50),
        ("pix2seq_R50_1333.yaml", 2000, 1333, 50),
        ("pix2seq_R101_1333.yaml", 2000, 1333, 101),
    ],
)
def test_paper_recipes_keep_300_epochs_of_batch_128_on_any_number_of_gpus(name, bins, size, depth):
    cfg = load(os.path.join(REPO_ROOT, "configs", name))
    assert (cfg.MODEL.PIX2SEQ.NUM_BINS, cfg.INPUT.LSJ.IMAGE_SIZE, cfg.INPUT.MIN_SIZE_TEST) == (bins, size, size)
    assert cfg.MODEL.RESNETS.DEPTH == depth
    epoch = 118_287 / 128  # iterations per epoch of COCO train2017 at batch 128
    assert cfg.SOLVER.IMS_PER_BATCH == 128 and abs(cfg.SOLVER.MAX_ITER / epoch - 300) < 1
    for gpus in (8, 4, 16):
        scaled = DefaultTrainer.auto_scale_workers(cfg, gpus)
        assert scaled.SOLVER.IMS_PER_BATCH == 16 * gpus
        assert scaled.SOLVER.BASE_LR == pytest.approx(0.003 * gpus / 8)
        epochs = scaled.SOLVER.MAX_ITER * scaled.SOLVER.IMS_PER_BATCH / 118_287
        assert abs(epochs - 300) < 1


def test_quickstart_keeps_the_plain_recipe():
    """The quickstart inherits Base-Pix2Seq.yaml, not the COCO recipe: no LSJ, no rescaling."""
    cfg = load(os.path.join(REPO_ROOT, "configs", "quickstart", "pix2seq_shapes.yaml"))
    assert not cfg.INPUT.LSJ.ENABLED and not cfg.MODEL.PIX2SEQ.SEQ_AUG.ENABLED
    assert cfg.SOLVER.REFERENCE_WORLD_SIZE == 0 and cfg.MODEL.PIX2SEQ.DROP_PATH == 0.0
