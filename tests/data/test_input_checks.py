"""Bad inputs: clear messages naming the file / annotation / key, skipped where training can go on."""

from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import sys

import cv2
import numpy as np
import pytest
import torch
from detectron2.config import get_cfg
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data import detection_utils as utils
from detectron2.data.datasets import register_coco_instances
from detectron2.structures import BoxMode
from PIL import Image

from pix2seq_d2 import Pix2SeqDatasetMapper, Pix2SeqTrainer, add_pix2seq_config
from pix2seq_d2.config import merge_config_checked
from pix2seq_d2.data.image_io import BadInputError, read_image_checked, read_image_file
from tests.helpers import QUICKSTART_CONFIG, REPO_ROOT, box_annotation, tiny_cfg, write_image, write_tiny_coco


def _read(path, fmt: str = "BGR", **size) -> np.ndarray:
    return read_image_checked({"file_name": str(path), **size}, fmt)


# ---- image files ----------------------------------------------------------------------------
def test_grayscale_palette_rgba_and_16bit_pngs_load_as_8bit_colour(tmp_path):
    gray = _read(write_image(str(tmp_path / "gray.png"), np.full((20, 30), 100, np.uint8)))
    assert gray.shape == (20, 30, 3) and (gray == 100).all()

    rgba = np.zeros((20, 30, 4), np.uint8)
    rgba[...] = (200, 50, 10, 0)  # fully transparent: the stored colour is kept, the alpha dropped
    assert _read(write_image(str(tmp_path / "rgba.png"), rgba))[0, 0].tolist() == [10, 50, 200]  # BGR
    assert _read(tmp_path / "rgba.png", "RGB")[0, 0].tolist() == [200, 50, 10]

    palette = Image.new("P", (30, 20), 1)
    palette.putpalette([0, 0, 0, 70, 80, 90])
    palette.save(tmp_path / "palette.png")
    assert (_read(tmp_path / "palette.png", "RGB") == [70, 80, 90]).all()

    deep = np.full((20, 30), 128 * 257, np.uint16)  # mid-gray in 16 bits
    deep[0, 0] = 65535
    Image.fromarray(deep).save(tmp_path / "deep.png")
    assert Image.open(tmp_path / "deep.png").mode == "I;16"
    image = _read(tmp_path / "deep.png")
    assert image.dtype == np.uint8 and image[0, 0].tolist() == [255] * 3 and (image[1:] == 128).all()
    assert (utils.read_image(str(tmp_path / "deep.png"), "BGR")[1:] == 255).all()  # what detectron2 gives

    mapped = Pix2SeqDatasetMapper(tiny_cfg(), is_train=False)({"file_name": str(tmp_path / "deep.png")})
    assert 120 < mapped["image"].float().mean() < 136 and (mapped["height"], mapped["width"]) == (20, 30)


def _truncated_jpeg(path) -> str:
    write_image(str(path), np.random.default_rng(0).integers(0, 255, (40, 40, 3), dtype=np.uint8), quality=95)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return str(path)


@pytest.mark.parametrize("kind", ["truncated", "garbage", "empty", "missing"])
def test_unusable_image_files_raise_an_error_naming_the_file(tmp_path, kind):
    path = tmp_path / f"{kind}.jpg"
    if kind == "truncated":
        _truncated_jpeg(path)
    elif kind == "garbage":
        path.write_bytes(b"this is not an image")
    elif kind == "empty":
        path.write_bytes(b"")
    expected = {"truncated": "truncated or corrupt", "garbage": "not a readable image", "empty": "not a readable",
                "missing": "not found"}[kind]  # fmt: skip
    with pytest.raises(BadInputError, match=f"{expected}.*{re.escape(str(path))}|{re.escape(str(path))}.*{expected}"):
        _read(path)
    # at test time the mapper stops with the same message (a skipped image would bias the evaluation)
    with pytest.raises(BadInputError, match=re.escape(str(path))):
        Pix2SeqDatasetMapper(tiny_cfg(), is_train=False)({"file_name": str(path)})


def test_every_entry_point_reader_says_what_a_wrong_file_is(tmp_path):
    """read_image_file (training, evaluation, demo, beliefs): the file named, and what it looks like."""
    cases = {
        "page.jpg": ("<!DOCTYPE html>\n<html><body>403 Forbidden</body></html>", "is an HTML page"),
        "pointer.png": ("version https://git-lfs.github.com/spec/v1\noid sha256:ab12\nsize 5\n", "git-lfs pointer"),
        "notes.png": ("a caption, not an image\n", "is text, not binary data (it starts with 'a caption"),
    }
    for name, (content, words) in cases.items():
        (tmp_path / name).write_text(content)
        with pytest.raises(
            BadInputError, match=rf"not a readable image: {re.escape(str(tmp_path / name))} .*{re.escape(words)}"
        ):
            read_image_file(str(tmp_path / name), "BGR")
    (tmp_path / "folder.png").mkdir()
    with pytest.raises(BadInputError, match=r"folder\.png is a folder, not an image file"):
        read_image_file(str(tmp_path / "folder.png"), "RGB")

    rgb16 = np.zeros((6, 8, 3), np.uint16)
    rgb16[...] = (1000, 30000, 65535)  # BGR order for cv2
    cv2.imwrite(str(tmp_path / "rgb16.png"), rgb16)
    image = read_image_file(str(tmp_path / "rgb16.png"), "BGR")
    assert image.dtype == np.uint8 and image[0, 0].tolist() == [3, 117, 255]  # scaled: 1000/257, 30000/257, 255


def test_tiny_images_work_and_extreme_aspect_ratios_are_named(tmp_path):
    mapper = Pix2SeqDatasetMapper(tiny_cfg(), is_train=True)
    tiny = write_image(str(tmp_path / "tiny.png"), np.full((1, 1, 3), 90, np.uint8))
    out = mapper({"file_name": tiny, "height": 1, "width": 1, "annotations": [box_annotation(0, 0, 1, 1)]})
    assert tuple(out["image"].shape) == (3, 64, 64) and len(out["instances"]) == 1

    sliver = write_image(str(tmp_path / "sliver.png"), np.full((2, 300, 3), 90, np.uint8))
    with pytest.raises(BadInputError, match=rf"{re.escape(sliver)} is 300x2 .*aspect ratio is too extreme"):
        mapper({"file_name": sliver, "height": 2, "width": 300, "annotations": []})


def test_an_image_of_another_size_than_its_annotation_is_named(tmp_path):
    path = write_image(str(tmp_path / "a.png"), np.zeros((20, 30, 3), np.uint8))
    with pytest.raises(BadInputError, match=rf"{re.escape(path)} is 30x20 .* says 40x20"):
        _read(path, height=20, width=40)


# ---- annotations ----------------------------------------------------------------------------
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


@pytest.fixture
def registered(tmp_path):
    """Registers a COCO json (edited by the test) as a dataset; yields (name, json dict, write)."""
    json_file = write_tiny_coco(str(tmp_path / "data"), sizes=[(40, 48), (48, 40), (40, 40)])
    with open(json_file) as f:
        coco = json.load(f)
    name = f"bad_inputs_{tmp_path.name}"
    register_coco_instances(name, {}, json_file, str(tmp_path / "data"))

    def write(new: dict) -> None:
        with open(json_file, "w") as f:
            json.dump(new, f)

    yield name, coco, write, json_file
    DatasetCatalog.remove(name)
    MetadataCatalog.remove(name)


def _train_cfg(name: str, tmp_path, *opts):
    return tiny_cfg(
        "DATASETS.TRAIN", (name,), "DATASETS.TEST", (), "SOLVER.IMS_PER_BATCH", 2, "SOLVER.MAX_ITER", 2,
        "OUTPUT_DIR", str(tmp_path / "out"), *opts,
    )  # fmt: skip


def test_coco_annotations_with_unknown_category_ids_are_named(registered, tmp_path):
    name, coco, write, json_file = registered
    coco["annotations"][1]["category_id"] = 42
    write(coco)
    with pytest.raises(ValueError) as error:
        Pix2SeqTrainer.build_train_loader(_train_cfg(name, tmp_path))
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
        Pix2SeqTrainer.build_train_loader(_train_cfg(name, tmp_path, "MODEL.PIX2SEQ.NUM_CLASSES", 2))


def test_an_empty_training_set_is_a_clear_error(registered, tmp_path):
    name, coco, write, _ = registered
    write({**coco, "annotations": []})
    with pytest.raises(ValueError, match=r"has no images \(DATALOADER.FILTER_EMPTY_ANNOTATIONS removed"):
        Pix2SeqTrainer.build_train_loader(_train_cfg(name, tmp_path))
    write({**coco, "images": [], "annotations": []})
    with pytest.raises(ValueError, match=rf"training set \('{name}',\) has no images"):
        Pix2SeqTrainer.build_train_loader(_train_cfg(name, tmp_path, "DATALOADER.FILTER_EMPTY_ANNOTATIONS", False))


# ---- training with bad inputs -----------------------------------------------------------------
def test_training_skips_unreadable_images_with_a_warning_and_keeps_going(registered, tmp_path, caplog):
    name, coco, write, _ = registered
    data = tmp_path / "data"
    _truncated_jpeg(data / "truncated.jpg")
    coco["images"] += [
        {"id": 10, "file_name": "truncated.jpg", "height": 40, "width": 40},
        {"id": 11, "file_name": "missing.png", "height": 40, "width": 40},
    ]
    coco["annotations"] += [
        {"id": 100 + i, "image_id": i, "category_id": 1, "bbox": [2, 2, 10, 10], "area": 100, "iscrowd": 0}
        for i in (10, 11)
    ]
    write(coco)
    trainer = Pix2SeqTrainer(_train_cfg(name, tmp_path, "SOLVER.IMS_PER_BATCH", 5, "SOLVER.MAX_ITER", 3))
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
    trainer = Pix2SeqTrainer(_train_cfg(name, tmp_path))
    with pytest.raises(RuntimeError, match="None of the 3 training images could be used"):
        trainer.train()


def test_a_non_finite_loss_stops_training_naming_the_iteration_and_the_files(registered, tmp_path):
    name = registered[0]
    trainer = Pix2SeqTrainer(_train_cfg(name, tmp_path, "MODEL.PIXEL_STD", [0.0, 0.0, 0.0]))  # x / 0: inf
    with pytest.raises(FloatingPointError, match=r"Non-finite training loss .* at iteration 0; batch files: .*\.png"):
        trainer.train()


# ---- config keys ------------------------------------------------------------------------------
def _cfg():
    cfg = get_cfg()
    add_pix2seq_config(cfg)
    return cfg


def test_an_unknown_config_key_names_the_key_the_file_and_close_keys(tmp_path):
    base = tmp_path / "base.yaml"
    base.write_text(f"_BASE_: {QUICKSTART_CONFIG}\nMODEL:\n  PIX2SEQ:\n    NUM_BIN: 32\n")
    top = tmp_path / "top.yaml"
    top.write_text("_BASE_: base.yaml\nSOLVER:\n  MAX_ITER: 5\n")
    with pytest.raises(ValueError) as error:
        merge_config_checked(_cfg(), str(top))
    message = str(error.value)
    assert f"Unknown config key MODEL.PIX2SEQ.NUM_BIN in {base} (a _BASE_ of {top})" in message
    assert "Did you mean MODEL.PIX2SEQ.NUM_BINS" in message

    with pytest.raises(ValueError, match=r"Unknown config key SOLVER.MAX_ITR given on the command line\. Did you"):
        merge_config_checked(_cfg(), QUICKSTART_CONFIG, ["SOLVER.MAX_ITR", "3"])
    assert merge_config_checked(_cfg(), QUICKSTART_CONFIG, ["SOLVER.MAX_ITER", "3"]).SOLVER.MAX_ITER == 3


def test_a_value_of_the_wrong_type_names_the_file_or_the_command_line(tmp_path):
    from pix2seq_d2.config import ConfigKeyError

    config = tmp_path / "typed.yaml"
    config.write_text(f"_BASE_: {QUICKSTART_CONFIG}\nSOLVER:\n  MAX_ITER: many\n")
    with pytest.raises(ConfigKeyError, match=rf"{re.escape(str(config))}: .*SOLVER\.MAX_ITER"):
        merge_config_checked(_cfg(), str(config))
    with pytest.raises(ConfigKeyError, match=r"command-line setting: .*SOLVER\.MAX_ITER"):
        merge_config_checked(_cfg(), QUICKSTART_CONFIG, ["SOLVER.MAX_ITER", "many"])


def test_train_net_reports_an_unknown_config_key_with_its_file(tmp_path):
    config = tmp_path / "typo.yaml"
    config.write_text(f"_BASE_: {QUICKSTART_CONFIG}\nSOLVER:\n  MAX_ITRE: 3\n")
    cmd = [sys.executable, os.path.join(REPO_ROOT, "tools", "train_net.py"), "--config-file", str(config)]
    proc = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr  # one "error:" line
    assert f"error: Unknown config key SOLVER.MAX_ITRE in {config}. Did you mean SOLVER.MAX_ITER" in proc.stderr


def test_the_loss_check_passes_finite_losses():
    from pix2seq_d2.modeling.losses import check_finite_loss

    check_finite_loss(torch.tensor(1.5), [{"file_name": "a.png"}])
    with pytest.raises(FloatingPointError, match=r"iteration None; batch files: a\.png, b\.png"):
        check_finite_loss(torch.tensor(float("nan")), [{"file_name": "a.png"}, {"file_name": "b.png"}])
