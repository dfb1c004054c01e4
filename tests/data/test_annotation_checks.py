"""Annotation checks in the mapper: unusable boxes skipped with a warning naming them, unknown classes named."""

from __future__ import annotations

import logging
import re

import numpy as np
import pytest
from detectron2.structures import BoxMode

from pix2seq_d2 import Pix2SeqDatasetMapper
from tests.helpers import box_annotation, tiny_cfg, write_image


def test_nan_and_negative_size_boxes_are_skipped_with_a_warning_naming_them(tmp_path, caplog):
    path = write_image(str(tmp_path / "boxes.png"), np.zeros((40, 40, 3), np.uint8))
    annotations = [
        box_annotation(2, 2, 20, 20, id=10),
        box_annotation(float("nan"), 2, 20, 20, id=11),
        {"bbox": [5, 5, -3, 8], "bbox_mode": BoxMode.XYWH_ABS, "category_id": 1, "id": 12},
        box_annotation(30, 30, 10, 10),  # x1 < x0, no "id": named by position
    ]
    mapper = Pix2SeqDatasetMapper(tiny_cfg(), is_train=True)
    with caplog.at_level(logging.WARNING, logger="pix2seq_d2.data.annotation_checks"):
        out = mapper({"file_name": path, "height": 40, "width": 40, "annotations": annotations})
    assert len(out["instances"]) == 1
    log = caplog.text
    assert f"annotation id 11 of {path}" in log and "NaN" in log
    assert f"annotation id 12 of {path}" in log and f"annotation #3 (no 'id') of {path}" in log
    assert "annotation id 10" not in log


def test_a_category_id_beyond_num_classes_is_an_error_naming_it(tmp_path):
    path = write_image(str(tmp_path / "c.png"), np.zeros((40, 40, 3), np.uint8))
    mapper = Pix2SeqDatasetMapper(tiny_cfg(), is_train=True)
    with pytest.raises(ValueError, match=rf"annotation id 7 of {re.escape(path)} has category_id=5.*NUM_CLASSES=3"):
        mapper({"file_name": path, "height": 40, "width": 40, "annotations": [box_annotation(1, 1, 9, 9, 5, id=7)]})
