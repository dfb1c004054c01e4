"""The training loader on bad datasets: unknown category ids, empty sets and unreadable images named; training
skips unreadable images and stops when none can be read."""

from __future__ import annotations

import logging

import pytest

from pix2seq_d2 import Pix2SeqTrainer
from tests.helpers import train_cfg, truncated_jpeg


def test_coco_annotations_with_unknown_category_ids_are_named(registered, tmp_path):
    name, coco, write, json_file = registered
    coco["annotations"][1]["category_id"] = 42
    write(coco)
    with pytest.raises(ValueError) as error:
        Pix2SeqTrainer.build_train_loader(train_cfg(name, tmp_path))
    message = str(error.value)
    # read by the checked reader (register_coco_instances datasets are), which names the json's own ids
    assert json_file in message and "annotation id 2 " in message
    assert "'category_id' 42 is not among the categories' ids [1, 2, 3]" in message


def test_more_dataset_classes_than_num_classes_stops_before_training(registered, tmp_path):
    name = registered[0]
    # the checked reader keeps each annotation's own id: the error names it (detectron2's dicts have none)
    with pytest.raises(
        ValueError, match=r"outside 0\.\.1 \(MODEL.PIX2SEQ.NUM_CLASSES=2\).*First: annotation id \d+ of "
    ):
        Pix2SeqTrainer.build_train_loader(train_cfg(name, tmp_path, "MODEL.PIX2SEQ.NUM_CLASSES", 2))


def test_an_empty_training_set_is_a_clear_error(registered, tmp_path):
    name, coco, write, _ = registered
    write({**coco, "annotations": []})
    with pytest.raises(ValueError, match=r"has no images \(DATALOADER.FILTER_EMPTY_ANNOTATIONS removed"):
        Pix2SeqTrainer.build_train_loader(train_cfg(name, tmp_path))
    write({**coco, "images": [], "annotations": []})
    with pytest.raises(ValueError, match=rf"training set \('{name}',\) has no images"):
        Pix2SeqTrainer.build_train_loader(train_cfg(name, tmp_path, "DATALOADER.FILTER_EMPTY_ANNOTATIONS", False))


# ---- training with bad inputs -----------------------------------------------------------------
def test_training_skips_unreadable_images_with_a_warning_and_keeps_going(registered, tmp_path, caplog):
    name, coco, write, _ = registered
    data = tmp_path / "data"
    truncated_jpeg(data / "truncated.jpg")
    coco["images"] += [
        {"id": 10, "file_name": "truncated.jpg", "height": 40, "width": 40},
        {"id": 11, "file_name": "missing.png", "height": 40, "width": 40},
    ]
    coco["annotations"] += [
        {"id": 100 + i, "image_id": i, "category_id": 1, "bbox": [2, 2, 10, 10], "area": 100, "iscrowd": 0}
        for i in (10, 11)
    ]
    write(coco)
    trainer = Pix2SeqTrainer(train_cfg(name, tmp_path, "SOLVER.IMS_PER_BATCH", 5, "SOLVER.MAX_ITER", 3))
    with caplog.at_level(logging.WARNING, logger="pix2seq_d2.data.resumable_loader"):
        trainer.train()
    assert trainer.iter == 3  # finished
    assert f"Skipping training image {data / 'truncated.jpg'}" in caplog.text
    assert f"Skipping training image {data / 'missing.png'}" in caplog.text and "not found" in caplog.text


def test_training_stops_when_no_image_can_be_read(registered, tmp_path):
    name, coco, write, _ = registered
    for image in coco["images"]:
        image["file_name"] = "gone_" + image["file_name"]
    write(coco)
    trainer = Pix2SeqTrainer(train_cfg(name, tmp_path))
    with pytest.raises(RuntimeError, match="None of the 3 training images could be used"):
        trainer.train()
