"""Reading image files: every pixel mode to 8-bit colour, and unusable files named with what they are."""

from __future__ import annotations

import re

import cv2
import numpy as np
import pytest
from detectron2.data import detection_utils as utils
from PIL import Image

from pix2seq_d2 import Pix2SeqDatasetMapper
from pix2seq_d2.data.image_io import BadInputError, read_image_checked, read_image_file
from tests.helpers import box_annotation, tiny_cfg, truncated_jpeg, write_image


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


@pytest.mark.parametrize("kind", ["truncated", "garbage", "empty", "missing"])
def test_unusable_image_files_raise_an_error_naming_the_file(tmp_path, kind):
    path = tmp_path / f"{kind}.jpg"
    if kind == "truncated":
        truncated_jpeg(path)
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
