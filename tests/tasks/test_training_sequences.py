"""Training sequences made by the model from ``instances`` (any detectron2 mapper) = our mapper's."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from detectron2.data import DatasetMapper, build_detection_train_loader
from detectron2.engine import SimpleTrainer
from detectron2.modeling import build_model
from detectron2.structures import Boxes, Instances
from detectron2.utils.events import EventStorage

from pix2seq_d2 import Pix2SeqDatasetMapper
from pix2seq_d2.tasks import build_task
from pix2seq_d2.tasks.tokenizer import Pix2SeqTokenizer
from pix2seq_d2.tasks.training_sequences import OBJECT_ORDERS, ObjectBatch, TrainingSequenceBuilder
from pix2seq_d2.utils.events import current_training_iteration
from pix2seq_d2.utils.seeding import sequence_seed
from tests.helpers import box_annotation, detection_task, shapes_image, tiny_cfg, write_image

SEQ_AUG = ("MODEL.PIX2SEQ.SEQ_AUG.ENABLED", True, "MODEL.PIX2SEQ.EOS_WEIGHT", 0.1)


def random_objects(num_images: int, max_n: int, hw=(60, 90), num_classes=3, seed=0) -> ObjectBatch:
    g = torch.Generator().manual_seed(seed)
    instances = []
    for _ in range(num_images):
        n = int(torch.randint(0, max_n + 1, (), generator=g))
        xy = torch.rand(n, 2, generator=g) * torch.tensor([hw[1] - 10, hw[0] - 10])
        wh = 2 + torch.rand(n, 2, generator=g) * 20
        inst = Instances(hw, gt_boxes=Boxes(torch.cat([xy, xy + wh], 1)))
        inst.gt_classes = torch.randint(num_classes, (n,), generator=g)
        instances.append(inst)
    return ObjectBatch.from_instances(instances, num_classes=num_classes)


@pytest.mark.parametrize("order", sorted(OBJECT_ORDERS))
@pytest.mark.parametrize("seq_aug", [False, True])
def test_a_batch_gives_each_image_the_sequence_it_gets_alone(order, seq_aug):
    cfg = tiny_cfg("MODEL.PIX2SEQ.OBJECT_ORDER", order, "MODEL.PIX2SEQ.MAX_OBJECTS", 4, *(SEQ_AUG if seq_aug else ()))
    builder = build_task(cfg).train_builder
    objects = random_objects(6, 7)  # some images with more objects than MAX_OBJECTS, some with none
    draws = builder.draw(objects, torch.Generator().manual_seed(1))
    batch = builder(objects, draws)
    for i in range(6):
        alone = ObjectBatch(objects.boxes[i : i + 1], objects.classes[i : i + 1], objects.valid[i : i + 1],
                            objects.image_hw[i : i + 1])  # fmt: skip
        single = builder(alone, draws.rows(i)).row(0)
        row = batch.row(i)
        assert torch.equal(single.input, row.input) and torch.equal(single.target, row.target)
        assert torch.equal(single.weight, row.weight)
        # past its length a row is padding without loss
        assert (batch.tokens.weight[i, len(row.target) :] == 0).all()
        n = int(objects.valid[i].sum())
        assert len(row.target) == (4 * 5 + 1 if seq_aug else 5 * min(n, 4) + 1)


def test_orders_and_cap():
    hw = (100, 100)
    boxes = torch.tensor([[50.0, 50, 60, 60], [0, 0, 40, 40], [10, 10, 30, 30], [5, 0, 15, 5]])
    inst = Instances(hw, gt_boxes=Boxes(boxes), gt_classes=torch.tensor([0, 1, 2, 0]))
    objects = ObjectBatch.from_instances([inst])
    tok = Pix2SeqTokenizer(3, 100)
    by_area = TrainingSequenceBuilder(detection_task(tok), 3, "area")(objects)
    assert by_area.objects[0].tolist() == [1, 2, 0] and by_area.num_objects.tolist() == [3]
    by_distance = TrainingSequenceBuilder(detection_task(tok), 4, "distance")(objects)
    assert by_distance.objects[0].tolist() == [1, 3, 2, 0]  # top-left corners 0, 5, 14, 71 px away
    shuffled = {
        tuple(TrainingSequenceBuilder(detection_task(tok), 4, "random")(objects).objects[0].tolist()) for _ in range(30)
    }
    assert len(shuffled) > 5 and all(sorted(s) == [0, 1, 2, 3] for s in shuffled)


def test_boxes_are_clipped_and_empty_or_non_finite_boxes_left_out(caplog):
    boxes = torch.tensor([[-5.0, 10, 30, 200], [10, 10, 10, 20], [float("nan"), 0, 5, 5], [1, 1, 9, 9]])
    inst = Instances((50, 40), gt_boxes=Boxes(boxes), gt_classes=torch.tensor([0, 1, 2, 1]))
    objects = ObjectBatch.from_instances([inst], names=["a.jpg"])
    assert objects.valid[0].tolist() == [True, False, False, True]
    assert objects.boxes[0, 0].tolist() == [0, 10, 30, 50]
    assert "a.jpg" in caplog.text


def test_class_outside_the_model_is_an_error_naming_the_image():
    inst = Instances((50, 40), gt_boxes=Boxes(torch.tensor([[1.0, 1, 9, 9]])), gt_classes=torch.tensor([7]))
    with pytest.raises(ValueError, match=r"b\.jpg.*\[7\].*NUM_CLASSES"):
        ObjectBatch.from_instances([inst], num_classes=3, names=["b.jpg"])


@pytest.fixture
def three_files(tmp_path):
    """Three images on disk with 2, 0 and 5 objects (classes 0..2)."""
    specs = [[(10, 8, 40, 30, 0), (44, 20, 60, 50, 2)], [], [(2 + 10 * k, 5, 9 + 10 * k, 50, k % 3) for k in range(5)]]
    dicts = []
    for i, objects in enumerate(specs):
        path = write_image(str(tmp_path / f"{i}.png"), shapes_image(64, 64, [o[:4] for o in objects], seed=i))
        annotations = [box_annotation(*o[:4], category_id=o[4]) for o in objects]
        dicts.append({"file_name": path, "height": 64, "width": 64, "image_id": i, "annotations": annotations})
    return dicts


@pytest.mark.parametrize("seq_aug", [False, True])
def test_our_mapper_and_detectron2s_mapper_give_the_same_sequences_and_loss(three_files, seq_aug):
    """The same images through Pix2SeqDatasetMapper (sequences made in the loader) and through
    detectron2's DatasetMapper (the model makes them from `instances`), with the same draws."""
    cfg = tiny_cfg("INPUT.RANDOM_FLIP", "none", "MODEL.PIX2SEQ.MAX_OBJECTS", 4, *(SEQ_AUG if seq_aug else ()))
    ours, theirs = Pix2SeqDatasetMapper(cfg, is_train=True), DatasetMapper(cfg, is_train=True)
    torch.manual_seed(0)
    model = build_model(cfg).train()
    ours_batch, theirs_batch, draws = [], [], []
    for i, d in enumerate(three_files):
        torch.manual_seed(100 + i)  # the mapper draws its order and noise from the global RNG
        ours_batch.append(ours(d))
        theirs_batch.append(theirs(d))
        torch.manual_seed(100 + i)
        draws.append(model.task.train_builder.draw(ObjectBatch.from_instances([theirs_batch[-1]["instances"]])))
        assert "seq_input" not in theirs_batch[-1]
    for i, (x, y) in enumerate(zip(ours_batch, theirs_batch)):
        made = model.training_sequences([y], draws[i])
        assert torch.equal(made.input[0], x["seq_input"]) and torch.equal(made.target[0], x["seq_target"])
        assert torch.equal(made.weight[0], x["seq_weight"])
    # one batch: the model's own sequences (drawn with its seeded generator inside a trainer's
    # EventStorage) give the same loss as those tensors handed in by a mapper
    with EventStorage(start_iter=7):
        made = model.training_sequences(theirs_batch, draws=None)
        model._sequence_calls = (-1, 0)  # the forward below is the first of iteration 7 again
        torch.manual_seed(5)
        loss_made_by_model = model(theirs_batch)["loss_seq"]
    handed_in = [{**y, "seq_input": i, "seq_target": t, "seq_weight": w} for y, i, t, w in zip(
        theirs_batch, made.input, made.target, made.weight)]  # fmt: skip
    torch.manual_seed(5)
    loss_handed_in = model(handed_in)["loss_seq"]
    assert torch.isfinite(loss_made_by_model)
    torch.testing.assert_close(loss_made_by_model, loss_handed_in, rtol=1e-6, atol=0)


def test_sequences_are_a_function_of_seed_worker_and_iteration(three_files):
    cfg = tiny_cfg("MODEL.PIX2SEQ.SEQ_AUG.ENABLED", True, "SEED", 3)
    model = build_model(cfg).train()
    batch = [DatasetMapper(cfg, is_train=True)(d) for d in three_files]

    def made_at(iteration: int) -> torch.Tensor:
        model._sequence_calls = (-1, 0)
        with EventStorage(start_iter=iteration):
            assert current_training_iteration() == iteration
            return model.training_sequences(batch).input

    assert torch.equal(made_at(4), made_at(4))  # a resumed run draws what the first run drew
    assert not torch.equal(made_at(4), made_at(5))
    assert model.sequence_seed == 3
    assert current_training_iteration() is None  # outside a trainer: the global RNG
    assert sequence_seed(3, 0, 4, 0) != sequence_seed(3, 1, 4, 0)  # each worker its own noise


def test_mixed_or_unusable_batches_are_errors_naming_the_items(three_files):
    cfg = tiny_cfg()
    model = build_model(cfg).train()
    ours = Pix2SeqDatasetMapper(cfg, is_train=True)(three_files[0])
    theirs = DatasetMapper(cfg, is_train=True)(three_files[1])
    with pytest.raises(ValueError, match="0.png"):
        model([ours, theirs])
    no_annotations = {k: v for k, v in theirs.items() if k != "instances"}
    with pytest.raises(ValueError, match="1.png"):
        model([no_annotations])


def test_detectron2s_own_loader_and_trainer_train_the_model(two_images):
    """detectron2's DatasetMapper + build_detection_train_loader + SimpleTrainer, no Pix2Seq code."""
    name, _ = two_images
    cfg = tiny_cfg("DATASETS.TRAIN", (name,), "SOLVER.IMS_PER_BATCH", 2, "MODEL.PIX2SEQ.NUM_CLASSES", 3)
    model = build_model(cfg)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    trainer = SimpleTrainer(model, build_detection_train_loader(cfg), optimizer)
    trainer.train(0, 3)
    losses = [v for v, _ in trainer.storage.history("total_loss").values()]
    assert len(losses) == 3 and all(np.isfinite(losses))
