"""A box reaching far beyond its image (pix2seq_d2/data/datasets/coco_validation.py): the checked reader warns once,
naming the file, the image and the annotation; the box is kept as in the file, and training clips it to the
image (or drops it when nothing is left), as before."""

from __future__ import annotations

import logging

import pytest
from detectron2.data import transforms as T

from pix2seq_d2.data.dataset_mapper import Pix2SeqDatasetMapper
from pix2seq_d2.data.datasets import load_coco_json_checked
from tests.data.datasets.test_coco import _annotation, valid_coco, write_json
from tests.helpers import tiny_cfg

READER_LOGGER = "pix2seq_d2.data.datasets.coco"  # every warning about a COCO json


@pytest.fixture
def warnings(caplog, monkeypatch):
    """The reader's warnings (its logger's records reach caplog even if a test before set propagate=False)."""
    logger = logging.getLogger(READER_LOGGER)
    monkeypatch.setattr(logger, "propagate", False)
    logger.addHandler(caplog.handler)
    caplog.set_level(logging.WARNING, logger=READER_LOGGER)
    yield lambda: [r.getMessage() for r in caplog.records if r.name == READER_LOGGER]
    logger.removeHandler(caplog.handler)


def test_a_box_far_outside_its_image_is_warned_once_and_kept_as_in_the_file(tmp_path, warnings):
    coco = valid_coco()
    # image a.png is 60x40 (width x height), sub/b.png 30x50
    _annotation(coco, 12)["bbox"] = [30, 8, 60, 20]  # 30 px beyond the right edge
    _annotation(coco, 11)["bbox"] = [70, 5, 20, 10]  # entirely right of the image
    _annotation(coco, 21)["bbox"] = [-1.5, 3, 31, 49]  # 1.5 px left, 0.5 px right: within the tolerance
    json_file = write_json(tmp_path / "outside.json", coco)
    dicts = load_coco_json_checked(json_file, str(tmp_path))
    again = load_coco_json_checked(json_file, str(tmp_path))  # a second load (the test loader, the evaluator)
    assert dicts == again
    assert [a["bbox"] for a in dicts[1]["annotations"]] == [[70.0, 5.0, 20.0, 10.0], [30.0, 8.0, 60.0, 20.0],
                                                            [0.0, 0.0, 60.0, 40.0]]  # fmt: skip
    messages = warnings()
    assert len(messages) == 3, messages  # once each, not once per load
    assert (
        f"COCO json {json_file}: annotation id 12 of image a.png (id 5): 'bbox' [30, 8, 60, 20] reaches 30 px "
        "beyond its right edge of the 60x40 (width x height) image: training clips it to the image"
    ) in messages
    assert (
        f"COCO json {json_file}: annotation id 11 of image a.png (id 5): 'bbox' [70, 5, 20, 10] lies entirely "
        "outside the 60x40 (width x height) image: training drops it"
    ) in messages
    (summary,) = [m for m in messages if "boxes of" in m]
    assert f"COCO json {json_file}: 2 of 4 boxes of 1 image reach beyond their image by more than 2 px" in summary


def test_the_tolerance_scales_with_the_image(tmp_path, warnings):
    """1 % of a 1000 px wide image is 10 px: 9 px beyond is fine, 11 px is warned."""
    coco = valid_coco()
    image = coco["images"][0]  # id 5, a.png
    image.update(width=1000, height=40)
    _annotation(coco, 11)["bbox"] = [-9, 5, 20, 10]
    _annotation(coco, 12)["bbox"] = [980, 8, 31, 20]
    json_file = write_json(tmp_path / "wide.json", coco)
    load_coco_json_checked(json_file, str(tmp_path))
    messages = [m for m in warnings() if "annotation id" in m]
    assert len(messages) == 1 and "annotation id 12 " in messages[0] and "11 px beyond its right edge" in messages[0]


def test_training_clips_the_box_to_the_image_and_drops_one_outside(tmp_path):
    coco = valid_coco()
    _annotation(coco, 12)["bbox"] = [30, 8, 60, 20]
    _annotation(coco, 11)["bbox"] = [70, 5, 20, 10]
    dicts = load_coco_json_checked(write_json(tmp_path / "clip.json", coco), str(tmp_path))
    record = dicts[1]  # a.png, 40 high and 60 wide
    mapper = Pix2SeqDatasetMapper(tiny_cfg("MODEL.PIX2SEQ.NUM_CLASSES", 3), is_train=True)
    instances = mapper.transform_annotations(record["annotations"], T.TransformList([]), (40, 60))
    assert instances.gt_boxes.tensor.tolist() == [[30.0, 8.0, 60.0, 28.0]]  # clipped at the right edge
    assert instances.gt_classes.tolist() == [0]  # annotation 11 dropped (nothing left), 13 is a crowd region
