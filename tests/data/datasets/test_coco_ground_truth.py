"""The ground truth of COCO evaluation comes from the one checked reader (pix2seq_d2/data/datasets/coco.py,
``load_coco_ground_truth``): a valid file as it is, a broken one with the loader's errors, the boxes the loader
skips left out, any encoding the loader accepts; the categories scan reads UTF-16 files too."""

from __future__ import annotations

import json

import pytest
from detectron2.data import DatasetCatalog, MetadataCatalog

from pix2seq_d2.data.datasets import (
    CocoJsonError,
    coco_ground_truth,
    load_coco_ground_truth,
    read_coco_categories,
    register_coco_json,
)
from pix2seq_d2.evaluation.coco_evaluation import BACKENDS, load_coco_gt
from tests.data.datasets.test_coco import _annotation, valid_coco, write_json


def test_a_valid_json_is_the_ground_truth_as_it_is_in_the_file(tmp_path):
    coco = valid_coco()
    json_file = write_json(tmp_path / "valid.json", coco)
    assert load_coco_ground_truth(json_file) == coco  # ids, areas, boxes, crowd flags, segmentation, info


def test_skipped_boxes_are_left_out_and_missing_values_filled_as_training_reads_them(tmp_path):
    coco = valid_coco()
    _annotation(coco, 12)["bbox"] = [30, None, 25, 20]  # skipped by the loader
    del _annotation(coco, 11)["area"]
    _annotation(coco, 21)["area"] = "120"  # not a number: the box's area
    _annotation(coco, 13)["iscrowd"] = True
    del _annotation(coco, 11)["iscrowd"]
    coco["images"][1]["height"] = 50.0  # image id 2: 50.0 counts as 50
    ground_truth = load_coco_ground_truth(write_json(tmp_path / "mixed.json", coco))
    annotations = {a["id"]: a for a in ground_truth["annotations"]}
    assert sorted(annotations) == [11, 13, 21]
    assert annotations[11]["area"] == 20 * 10 and annotations[11]["iscrowd"] == 0
    assert annotations[21]["area"] == 10 * 12 and annotations[13]["iscrowd"] == 1 and annotations[13]["area"] == 2400
    assert ground_truth["images"][1] == {"id": 2, "file_name": "sub/b.png", "height": 50, "width": 30, "license": 1}
    assert ground_truth["categories"] == coco["categories"]


def test_a_broken_json_is_the_loaders_error(tmp_path):
    coco = valid_coco()
    _annotation(coco, 21)["iscrowd"] = "0"
    json_file = write_json(tmp_path / "broken.json", coco)
    with pytest.raises(CocoJsonError, match="annotation id 21 of image sub/b.png .*'iscrowd' is \"0\" \\(a string\\)"):
        load_coco_ground_truth(json_file)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("encoding", ["utf-8-sig", "utf-16", "utf-32"])
def test_any_encoding_the_loader_accepts_gives_the_same_coco_api(tmp_path, backend, encoding):
    coco = valid_coco()
    text = json.dumps(coco)
    plain = load_coco_gt(write_json(tmp_path / "plain.json", text), backend)
    other = load_coco_gt(write_json(tmp_path / "other.json", text.encode(encoding)), backend)
    assert other.dataset["annotations"] == plain.dataset["annotations"] == coco["annotations"]
    assert sorted(other.getImgIds()) == [2, 5, 9] and sorted(other.getCatIds()) == [1, 3, 7]


def test_a_json_without_annotations_is_a_ground_truth_without_annotations(tmp_path):
    coco = valid_coco()
    del coco["annotations"]
    ground_truth = load_coco_ground_truth(write_json(tmp_path / "image_info.json", coco))
    assert "annotations" not in ground_truth and len(ground_truth["images"]) == 3


def test_a_registered_dataset_gives_the_json_it_is_loaded_from_and_its_classes(tmp_path):
    """Even after the load removed json_file from the metadata (a skipped box), and before it was loaded."""
    name = f"gt_{tmp_path.name}"
    coco = valid_coco()
    _annotation(coco, 12)["bbox"] = [30, 8, 0, 20]
    register_coco_json(name, write_json(tmp_path / "val.json", coco), tmp_path)
    try:
        ground_truth = coco_ground_truth(name)
        assert [a["id"] for a in ground_truth["annotations"]] == [11, 13, 21]
        assert MetadataCatalog.get(name).thing_dataset_id_to_contiguous_id == {1: 0, 3: 1, 7: 2}
        DatasetCatalog.get(name)
        assert MetadataCatalog.get(name).get("json_file") is None  # detectron2's COCOEvaluator converts instead
        assert coco_ground_truth(name) == ground_truth
    finally:
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)
    assert coco_ground_truth(name) is None  # unregistered, no json file


@pytest.mark.parametrize("encoding", ["utf-16", "utf-32", "utf-8-sig"])
def test_the_categories_scan_reads_every_encoding_the_loader_accepts(tmp_path, encoding):
    json_file = write_json(tmp_path / "categories.json", json.dumps(valid_coco()).encode(encoding))
    assert read_coco_categories(json_file) == ((1, "one"), (3, "three"), (7, "seven"))
