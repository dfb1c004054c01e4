"""The Pix2Seq meta-architecture: training loss, gradients, and the full inference path."""

from __future__ import annotations

import os
import sys

import pytest
import torch
from detectron2.data import build_detection_test_loader
from detectron2.evaluation import inference_on_dataset
from detectron2.modeling import build_model
from detectron2.structures import Boxes, BoxMode, pairwise_iou

from pix2seq_d2 import Pix2SeqDatasetMapper
from pix2seq_d2.engine.distributed import leave_process_group
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


def test_loss_is_the_weighted_mean_over_tokens_of_the_batch():
    logits = torch.randn(2, 3, 7)
    target = torch.randint(0, 7, (2, 3))
    weight = torch.tensor([[1.0, 1.0, 0.5], [1.0, 0.0, 0.0]])
    ce = torch.nn.functional.cross_entropy(logits.flatten(0, 1), target.flatten(), reduction="none")
    expected = (ce * weight.flatten()).sum() / weight.sum()
    from pix2seq_d2.modeling.losses import sequence_loss

    torch.testing.assert_close(sequence_loss(logits, target, weight), expected)


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


def _loss_worker(rank: int, world_size: int, init_file: str, shards: list, out_dir: str) -> None:
    """One GLOO worker: its shard's loss through a shared parameter, gradients averaged as DDP does."""
    import torch.distributed as dist

    from pix2seq_d2.modeling.losses import sequence_loss

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size)
    features, target, weight = shards[rank]
    projection = torch.nn.Parameter(torch.linspace(-1, 1, 8 * 5).reshape(8, 5))
    sequence_loss(features @ projection, target, weight).backward()
    dist.all_reduce(projection.grad)
    projection.grad /= world_size
    torch.save(projection.grad, os.path.join(out_dir, f"grad{rank}.pt"))
    leave_process_group()  # barrier, drop detectron2's cached group handle, destroy


def test_loss_normalisation_across_workers_matches_one_process_over_the_whole_batch(tmp_path):
    """Two real GLOO workers with unequal token weights: the averaged gradient must equal the
    gradient of one process computing the weighted mean over both workers' tokens."""
    gen = torch.Generator().manual_seed(0)
    shards = []
    for batch, length in ((3, 6), (1, 2)):  # worker 1 has far fewer tokens than worker 0
        features = torch.randn(batch, length, 8, generator=gen)
        target = torch.randint(0, 5, (batch, length), generator=gen)
        weight = torch.rand(batch, length, generator=gen)
        shards.append((features, target, weight))
    torch.multiprocessing.spawn(
        _loss_worker, args=(2, str(tmp_path / "init"), shards, str(tmp_path)), nprocs=2, join=True
    )
    grads = [torch.load(tmp_path / f"grad{rank}.pt") for rank in range(2)]
    torch.testing.assert_close(grads[0], grads[1])

    projection = torch.nn.Parameter(torch.linspace(-1, 1, 8 * 5).reshape(8, 5))
    logits = torch.cat([(f @ projection).flatten(0, 1) for f, _, _ in shards])
    target = torch.cat([t.flatten() for _, t, _ in shards])
    weight = torch.cat([w.flatten() for _, _, w in shards])
    ce = torch.nn.functional.cross_entropy(logits, target, reduction="none")
    ((ce * weight).sum() / weight.sum()).backward()
    torch.testing.assert_close(grads[0], projection.grad)
