"""The Pix2Seq meta-architecture: training loss, gradients, and the full inference path."""

from __future__ import annotations

import sys

import pytest
import torch
from detectron2.data import build_detection_test_loader
from detectron2.evaluation import inference_on_dataset
from detectron2.modeling import build_model
from detectron2.structures import Boxes, BoxMode, pairwise_iou

from pix2seq_d2 import Pix2SeqDatasetMapper
from pix2seq_d2.evaluation.coco_evaluation import COCOEvaluatorWithRecall
from pix2seq_d2.solver.build import build_optimizer
from tests.helpers import tiny_cfg


def test_training_forward_gives_finite_loss_and_gradients_reach_the_backbone(two_images):
    cfg = tiny_cfg()
    model = build_model(cfg).train()
    batch = [Pix2SeqDatasetMapper(cfg, is_train=True)(d) for d in two_images[1]]
    losses = model(batch)
    assert set(losses) == {"loss_seq"}
    assert torch.isfinite(losses["loss_seq"])
    losses["loss_seq"].backward()
    stem_grad = model.backbone.stem.conv1.weight.grad
    assert stem_grad is not None and stem_grad.abs().sum() > 0
    assert model.decoder.token_embed.weight.grad.abs().sum() > 0


def test_training_without_sequence_inputs_raises_a_clear_error():
    model = build_model(tiny_cfg()).train()
    with pytest.raises(ValueError, match="Pix2SeqDatasetMapper"):
        model([{"image": torch.zeros(3, 64, 64, dtype=torch.uint8)}])


def test_overfit_two_images_then_decode_their_boxes_and_classes_end_to_end(two_images):
    """Train on two images, then run the inference path on the original files: boxes come back
    in original image coordinates (IoU > 0.9) with the right classes, each image stops at its
    own EOS, and COCOEvaluator on the json dataset agrees. This is the test that coordinate and
    category conventions agree from annotation file to evaluation."""
    dataset_name, dataset_dicts = two_images
    cfg = tiny_cfg(
        "INPUT.RANDOM_FLIP", "none",
        "MODEL.PIX2SEQ.OBJECT_ORDER", "none",
        "MODEL.PIX2SEQ.HIDDEN_DIM", 64,
        "MODEL.PIX2SEQ.DIM_FEEDFORWARD", 128,
        "MODEL.PIX2SEQ.DROPOUT", 0.0,
        "MODEL.PIX2SEQ.IN_FEATURE", "res4",
        "MODEL.SMALL_RESNET.OUT_FEATURES", ["res4"],
        "SOLVER.BASE_LR", 2e-3,
        "SOLVER.CLIP_GRADIENTS.ENABLED", False,
    )  # fmt: skip
    model = build_model(cfg)
    optimizer = build_optimizer(cfg, model)
    train_batch = [Pix2SeqDatasetMapper(cfg, is_train=True)(d) for d in dataset_dicts]
    model.train()
    for _ in range(300):
        loss = model(train_batch)["loss_seq"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert loss.item() < 0.05

    model.eval()
    test_batch = [Pix2SeqDatasetMapper(cfg, is_train=False)(d) for d in dataset_dicts]
    assert test_batch[0]["image"].shape == (3, 43, 64)  # resized, so outputs must be scaled back
    outputs = model(test_batch)
    for d, out in zip(dataset_dicts, outputs):
        inst = out["instances"]
        assert inst.image_size == (80, 120)
        gt = [BoxMode.convert(a["bbox"], a["bbox_mode"], BoxMode.XYXY_ABS) for a in d["annotations"]]
        gt_classes = [a["category_id"] for a in d["annotations"]]  # contiguous ids 0..2
        assert len(inst) == len(gt_classes)  # stopped at its own EOS
        iou = pairwise_iou(Boxes(torch.tensor(gt, dtype=torch.float32)), inst.pred_boxes)  # [gt, pred]
        assert (iou.diagonal() > 0.9).all(), iou
        assert inst.pred_classes.tolist() == gt_classes
        assert ((inst.scores > 0.5) & (inst.scores <= 1)).all()

    loader = build_detection_test_loader(dataset_dicts, mapper=Pix2SeqDatasetMapper(cfg, is_train=False), batch_size=2)
    results = inference_on_dataset(model, loader, COCOEvaluatorWithRecall(dataset_name, tasks=("bbox",)))
    assert results["bbox"]["AP50"] == pytest.approx(100.0)
    assert results["bbox"]["AP"] > 60
    # recall averaged over IoU 0.5..0.95; every object is found at IoU 0.5 (AP50 = 100)
    assert 60 < results["bbox"]["AR@100"] <= 100
    assert "detectron2._C" not in sys.modules  # nothing on this path needs the C++ extension
