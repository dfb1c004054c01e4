"""Sequence augmentation: noise objects, their targets and weights, input class corruption, orders."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pix2seq_d2 import Pix2SeqDatasetMapper
from pix2seq_d2.tasks.detection import CLASS_SLOT, TOKENS_PER_OBJECT
from pix2seq_d2.tasks.sequence_augmentation import CLASS_CORRUPTIONS, SequenceAugmentation
from pix2seq_d2.tasks.tokenizer import Pix2SeqTokenizer
from tests.helpers import box_annotation, detection_task, tiny_cfg, write_image

TOK = Pix2SeqTokenizer(num_classes=5, num_bins=100, eos_weight=0.1)
REAL_BOXES = torch.tensor([[10.0, 20.0, 50.0, 60.0], [0.0, 0.0, 30.0, 10.0], [70.0, 40.0, 120.0, 80.0]])
REAL_CLASSES = torch.tensor([3, 0, 4])
HW = (80, 120)


def encode(corruption="rand_n_fake_cls", max_objects=10, boxes=REAL_BOXES, classes=REAL_CLASSES, seed=0):
    aug = SequenceAugmentation(max_objects=max_objects, noise_class_weight=0.7, class_corruption=corruption)
    return aug.encode(detection_task(TOK), boxes, classes, HW, torch.Generator().manual_seed(seed))


def objects(seq: torch.Tensor) -> torch.Tensor:
    return seq.reshape(-1, TOKENS_PER_OBJECT)


def test_noise_objects_fill_the_sequence_with_noise_targets_and_weights():
    out = encode(max_objects=10)
    assert out.input.shape == out.target.shape == out.weight.shape == (10 * TOKENS_PER_OBJECT + 1,)
    assert out.input[0] == TOK.START and out.target[-1] == TOK.EOS
    assert out.weight[-1].item() == pytest.approx(0.1)  # EOS weight
    targets, weights = objects(out.target[:-1]), objects(out.weight[:-1])
    # real objects first, unchanged, full weight
    assert torch.equal(targets[:3], objects(detection_task(TOK).encode(REAL_BOXES, REAL_CLASSES, HW).target[:-1]))
    assert (weights[:3] == 1).all()
    # then 7 noise objects: NOISE class target with its weight, coordinates without loss
    assert (targets[3:, CLASS_SLOT] == TOK.NOISE).all()
    assert (weights[3:, CLASS_SLOT] == pytest.approx(0.7)) and (weights[3:, :CLASS_SLOT] == 0).all()
    coord_lo, coord_hi = TOK.coord_token_range()
    assert ((targets[:, :CLASS_SLOT] >= coord_lo) & (targets[:, :CLASS_SLOT] < coord_hi)).all()


def test_noise_boxes_lie_inside_the_image_and_mix_random_jittered_and_duplicated_boxes():
    aug = SequenceAugmentation(max_objects=10)
    noise = aug.noise_boxes(REAL_BOXES, HW, 3000, torch.Generator().manual_seed(0))
    h, w = HW
    assert (noise[:, 0] >= 0).all() and (noise[:, 1] >= 0).all()
    assert (noise[:, 2] <= w).all() and (noise[:, 3] <= h).all()
    assert ((noise[:, 2:] - noise[:, :2]) >= 1 - 1e-5).all()
    # about a third are near duplicates of a real box (IoU > 0.7 with one of them)
    from detectron2.structures import Boxes, pairwise_iou

    best_iou = pairwise_iou(Boxes(noise), Boxes(REAL_BOXES)).max(1).values
    near_duplicates = (best_iou > 0.7).float().mean().item()
    assert 0.25 < near_duplicates < 0.55
    assert (best_iou < 0.3).float().mean() > 0.25  # random boxes mostly miss the real ones


def test_without_real_objects_every_object_is_noise():
    out = encode(boxes=torch.zeros(0, 4), classes=torch.zeros(0, dtype=torch.long), max_objects=4)
    assert (objects(out.target[:-1])[:, CLASS_SLOT] == TOK.NOISE).all()
    assert (objects(out.weight[:-1])[:, :CLASS_SLOT] == 0).all()


def test_more_real_objects_than_max_objects_are_truncated_without_noise():
    out = encode(max_objects=2)
    assert torch.equal(
        objects(out.target[:-1]), objects(detection_task(TOK).encode(REAL_BOXES[:2], REAL_CLASSES[:2], HW).target[:-1])
    )


MANY = 300
MANY_BOXES = torch.tensor([[10.0, 10.0, 40.0, 30.0]]).repeat(MANY, 1)
MANY_CLASSES = torch.arange(MANY) % 5

# mode -> expected rates over real objects: (input is NOISE, input equals the target class)
EXPECTED_RATES = {
    "none": (0.0, 1.0),
    "rand_cls": (0.0, 1 / 5),
    "real_n_fake_cls": (1 / 2, 1 / 2),
    "rand_n_fake_cls": (1 / 2, 1 / 2 * 1 / 5),
    "real_n_rand_n_fake_cls": (1 / 3, 1 / 3 + 1 / 3 * 1 / 5),
}


@pytest.mark.parametrize("corruption", CLASS_CORRUPTIONS)
def test_class_corruption_changes_exactly_the_input_class_tokens_it_should(corruption):
    out = encode(corruption, max_objects=MANY, boxes=MANY_BOXES, classes=MANY_CLASSES)
    reference = encode("none", max_objects=MANY, boxes=MANY_BOXES, classes=MANY_CLASSES)
    assert torch.equal(out.target, reference.target) and torch.equal(out.weight, reference.weight)
    inputs, targets = objects(out.input[1:]), objects(out.target[:-1])
    assert torch.equal(inputs[:, :CLASS_SLOT], targets[:, :CLASS_SLOT])  # coordinates untouched
    given, wanted = inputs[:, CLASS_SLOT], targets[:, CLASS_SLOT]
    lo, hi = TOK.class_token_range()
    assert (((given >= lo) & (given < hi)) | (given == TOK.NOISE)).all()
    if corruption in ("none", "real_n_fake_cls"):  # never a class other than the target's
        assert ((given == wanted) | (given == TOK.NOISE)).all()
    noise_rate, same_rate = EXPECTED_RATES[corruption]
    assert (given == TOK.NOISE).float().mean().item() == pytest.approx(noise_rate, abs=0.08)
    assert (given == wanted).float().mean().item() == pytest.approx(same_rate, abs=0.08)


@pytest.mark.parametrize("corruption", CLASS_CORRUPTIONS)
def test_noise_objects_inputs_follow_the_same_corruption(corruption):
    out = encode(corruption, max_objects=MANY, boxes=torch.zeros(0, 4), classes=torch.zeros(0, dtype=torch.long))
    given = objects(out.input[1:])[:, CLASS_SLOT]
    noise_rate = {"none": 1.0, "rand_cls": 0.0, "real_n_fake_cls": 1.0, "rand_n_fake_cls": 0.5}.get(corruption, 2 / 3)
    assert (given == TOK.NOISE).float().mean().item() == pytest.approx(noise_rate, abs=0.08)


def test_unknown_corruption_is_rejected():
    with pytest.raises(ValueError, match="class corruption"):
        SequenceAugmentation(max_objects=3, class_corruption="flip")


# ---- in the mapper ---------------------------------------------------------------------------
@pytest.fixture
def image_with_objects(tmp_path):
    path = write_image(str(tmp_path / "img.png"), np.zeros((64, 96, 3), np.uint8))
    annotations = [
        box_annotation(50, 30, 60, 40, 0),  # area 100, top-left 58 px from the origin
        box_annotation(5, 5, 45, 45, 1),  # area 1600, 7 px
        box_annotation(10, 40, 30, 60, 2),  # area 400, 41 px
        box_annotation(0, 0, 8, 8, 0),  # area 64, 0 px
    ]
    return {"file_name": path, "height": 64, "width": 96, "image_id": 1, "annotations": annotations}


@pytest.mark.parametrize(
    "order, expected_x0", [("area", [5, 10, 50, 0]), ("distance", [0, 5, 10, 50]), ("none", [50, 5, 10, 0])]
)
def test_object_orders(image_with_objects, order, expected_x0):
    cfg = tiny_cfg("INPUT.RANDOM_FLIP", "none", "INPUT.MAX_SIZE_TRAIN", 1000, "MODEL.PIX2SEQ.OBJECT_ORDER", order)
    for _ in range(3):  # deterministic
        out = Pix2SeqDatasetMapper(cfg, is_train=True)(image_with_objects)
        assert out["instances"].gt_boxes.tensor[:, 0].tolist() == expected_x0


def test_random_order_changes_between_loads(image_with_objects):
    cfg = tiny_cfg("INPUT.RANDOM_FLIP", "none", "INPUT.MAX_SIZE_TRAIN", 1000, "MODEL.PIX2SEQ.OBJECT_ORDER", "random")
    mapper = Pix2SeqDatasetMapper(cfg, is_train=True)
    orders = {tuple(mapper(image_with_objects)["instances"].gt_boxes.tensor[:, 0].tolist()) for _ in range(20)}
    assert len(orders) > 5


def test_mapper_applies_sequence_augmentation_in_training_only(image_with_objects):
    cfg = tiny_cfg("MODEL.PIX2SEQ.SEQ_AUG.ENABLED", True, "MODEL.PIX2SEQ.MAX_OBJECTS", 6, "INPUT.MAX_SIZE_TRAIN", 1000)
    train = Pix2SeqDatasetMapper(cfg, is_train=True)(image_with_objects)
    assert train["seq_target"].shape == (6 * TOKENS_PER_OBJECT + 1,)
    train_classes = objects(train["seq_target"][:-1])[:, CLASS_SLOT]
    assert (train_classes[:4] != TOK.NOISE).all() and (train_classes[4:] == TOK.NOISE).all()
    test = Pix2SeqDatasetMapper(cfg, is_train=False, use_annotations=True)(image_with_objects)
    assert test["seq_target"].shape == (4 * TOKENS_PER_OBJECT + 1,)  # no noise objects at test time
