"""Image augmentation from config (LSJ, flip, colour jitter, multi-crop) on real image files.

The geometric checks draw bright rectangles on a dark image, augment it through the mapper
and find the rectangles again in the output image: the annotated boxes (and the boxes the
tokens decode to) must sit on them.
"""

from __future__ import annotations

import colorsys
import glob
import os

import numpy as np
import pytest
import torch
from detectron2.config import get_cfg
from detectron2.data import detection_utils as utils
from detectron2.data import transforms as T
from detectron2.modeling import build_model

from pix2seq_d2 import Pix2SeqDatasetMapper, add_pix2seq_config
from pix2seq_d2.data import transforms as augmentation_module
from pix2seq_d2.data.dataset_mapper import expand_views
from pix2seq_d2.data.transforms import (
    ColorJitter,
    ColorJitterTransform,
    RandomFixedSizeCrop,
    build_pix2seq_augmentation,
)
from pix2seq_d2.tasks.detection import TOKENS_PER_OBJECT
from tests.helpers import REPO_ROOT, box_annotation, detection_task, tiny_cfg, write_image

SIZE = 96  # INPUT.LSJ.IMAGE_SIZE in these tests
WHITE_BOX = (6, 8, 30, 32)  # x0 y0 x1 y1, class 0
ORANGE_BOX = (54, 30, 88, 66)  # class 1


def lsj_cfg(*opts):
    return tiny_cfg(
        "INPUT.LSJ.ENABLED", True,
        "INPUT.LSJ.IMAGE_SIZE", SIZE,
        "INPUT.MIN_SIZE_TEST", SIZE,
        "INPUT.MAX_SIZE_TEST", SIZE,
        "INPUT.RANDOM_FLIP", "horizontal",
        "INPUT.COLOR_JITTER.ENABLED", True,
        "INPUT.COLOR_JITTER.HUE", 0.2,
        *opts,
    )  # fmt: skip


def dataset_dict(path: str, h: int, w: int, annotations: list[dict]) -> dict:
    return {"file_name": path, "height": h, "width": w, "image_id": 1, "annotations": annotations}


@pytest.fixture
def scene(tmp_path) -> dict:
    """A 72x96 dark image with a white and an orange rectangle, annotated."""
    image = np.zeros((72, 96, 3), np.uint8)
    x0, y0, x1, y1 = WHITE_BOX
    image[y0:y1, x0:x1] = 255
    x0, y0, x1, y1 = ORANGE_BOX
    image[y0:y1, x0:x1] = (255, 128, 0)
    path = write_image(str(tmp_path / "scene.png"), image)
    return dataset_dict(path, 72, 96, [box_annotation(*WHITE_BOX, 0), box_annotation(*ORANGE_BOX, 1)])


def bright_mask(image: torch.Tensor) -> np.ndarray | None:
    """uint8 ``[3, H, W]`` -> bool ``[H, W]`` of the rectangles (None if nothing stands out)."""
    value = image.numpy().max(0).astype(np.float32)  # the HSV value: hue rotation keeps it
    lo, hi = value.min(), value.max()
    return value > (lo + hi) / 2 if hi - lo > 40 else None


def check_boxes_match_image(out: dict, tokenizer) -> None:
    """Every annotated box lies on a bright rectangle (within 1.5 px), every bright pixel is in
    an annotated box, and the tokens decode back to the boxes and classes."""
    h, w = out["image"].shape[1:]
    boxes = out["instances"].gt_boxes.tensor  # [n, 4]
    mask = bright_mask(out["image"])
    if mask is None:
        assert len(boxes) == 0
    else:
        covered = np.zeros_like(mask)
        for x0, y0, x1, y1 in boxes.tolist():
            assert 0 <= x0 < x1 <= w and 0 <= y0 < y1 <= h
            ex0, ey0 = max(0, int(np.floor(x0)) - 2), max(0, int(np.floor(y0)) - 2)
            ex1, ey1 = int(np.ceil(x1)) + 2, int(np.ceil(y1)) + 2
            covered[ey0:ey1, ex0:ex1] = True
            if min(x1 - x0, y1 - y0) < 3:
                continue  # a sliver left by the crop: too thin to locate reliably
            ys, xs = np.nonzero(mask[ey0:ey1, ex0:ex1])
            found = (ex0 + xs.min(), ey0 + ys.min(), ex0 + xs.max() + 1, ey0 + ys.max() + 1)
            np.testing.assert_allclose(found, (x0, y0, x1, y1), atol=1.5)
        assert not (mask & ~covered).any(), "a rectangle without an annotated box"
    # The tokens decode back to the boxes (half a bin) and carry the classes.
    n = len(boxes)
    assert len(out["seq_target"]) == TOKENS_PER_OBJECT * n + 1
    tokens = out["seq_target"][:-1].reshape(1, -1)  # [1, 5n]
    decoded = detection_task(tokenizer).decode_objects(
        tokens, torch.zeros(tokens.shape), torch.zeros(1, n, tokenizer.num_classes), torch.tensor([[h, w]])
    )
    assert decoded.valid.all()
    half_bin = 0.5 * torch.tensor([w, h, w, h]) / tokenizer.num_bins
    assert ((decoded.boxes[0] - boxes).abs() <= half_bin + 1e-4).all()
    classes = out["seq_target"][TOKENS_PER_OBJECT - 1 :: TOKENS_PER_OBJECT] - tokenizer.class_token_range()[0]
    assert classes.tolist() == out["instances"].gt_classes.tolist()


# ---- configuration -------------------------------------------------------------------------
@pytest.mark.parametrize("is_train", [True, False])
def test_default_config_keeps_detectron2_augmentations(is_train):
    cfg = tiny_cfg()
    assert not cfg.INPUT.LSJ.ENABLED and not cfg.INPUT.COLOR_JITTER.ENABLED and cfg.INPUT.MULTI_CROP.NUM_VIEWS == 1
    expected = [repr(a) for a in utils.build_augmentation(cfg, is_train)]
    assert [repr(a) for a in build_pix2seq_augmentation(cfg, is_train)] == expected
    mapper = Pix2SeqDatasetMapper(cfg, is_train=is_train)
    assert [repr(a) for a in mapper.augmentations.augs] == expected
    assert mapper.num_views == 1


def test_lsj_order_is_flip_resize_crop_colour():
    augs = build_pix2seq_augmentation(lsj_cfg("INPUT.FORMAT", "RGB"), is_train=True)
    assert [type(a) for a in augs] == [T.RandomFlip, T.ResizeScale, RandomFixedSizeCrop, ColorJitter]
    resize = augs[1]
    assert (resize.min_scale, resize.max_scale, resize.target_height, resize.target_width) == (0.3, 2.0, SIZE, SIZE)
    assert augs[2].crop_size == (SIZE, SIZE)
    assert augs[3].image_format == "RGB" and augs[3].hue == 0.2
    no_flip = build_pix2seq_augmentation(lsj_cfg("INPUT.RANDOM_FLIP", "none"), is_train=True)
    assert [type(a) for a in no_flip] == [T.ResizeScale, RandomFixedSizeCrop, ColorJitter]


def test_colour_jitter_without_lsj_follows_the_default_resize():
    cfg = tiny_cfg("INPUT.COLOR_JITTER.ENABLED", True)
    augs = build_pix2seq_augmentation(cfg, is_train=True)
    assert [repr(a) for a in augs[:-1]] == [repr(a) for a in utils.build_augmentation(cfg, True)]
    assert isinstance(augs[-1], ColorJitter)


def test_test_time_has_no_random_ops_and_one_view(scene):
    cfg = lsj_cfg("INPUT.MULTI_CROP.NUM_VIEWS", 3)
    assert [repr(a) for a in build_pix2seq_augmentation(cfg, False)] == [
        repr(a) for a in utils.build_augmentation(cfg, False)
    ]
    mapper = Pix2SeqDatasetMapper(cfg, is_train=False)
    first, second = mapper(scene), mapper(scene)
    assert "views" not in first
    # longest side resized to IMAGE_SIZE, as LSJ at scale 1
    assert first["image"].shape == (3, 72, 96) and torch.equal(first["image"], second["image"])


def test_lsj_test_size_mismatch_is_warned(monkeypatch):
    warnings = []
    monkeypatch.setattr(augmentation_module.logger, "warning", warnings.append)
    build_pix2seq_augmentation(lsj_cfg("INPUT.MAX_SIZE_TEST", 2 * SIZE), is_train=False)
    build_pix2seq_augmentation(lsj_cfg(), is_train=False)
    assert len(warnings) == 1 and "MIN_SIZE_TEST" in warnings[0]


@pytest.mark.parametrize(
    "opts, message",
    [
        (("INPUT.LSJ.MIN_SCALE", 2.5), "MIN_SCALE <= MAX_SCALE"),
        (("INPUT.LSJ.MIN_SCALE", 0.0), "MIN_SCALE <= MAX_SCALE"),
        (("INPUT.COLOR_JITTER.HUE", 0.6), "hue"),
        (("INPUT.COLOR_JITTER.CONTRAST", -0.1), "contrast"),
        (("INPUT.FORMAT", "L"), "INPUT.FORMAT"),
        (("INPUT.MULTI_CROP.NUM_VIEWS", 0), "num_views"),
    ],
)
def test_invalid_settings_are_clear_errors(opts, message):
    with pytest.raises(ValueError, match=message):
        Pix2SeqDatasetMapper(lsj_cfg(*opts), is_train=True)


@pytest.mark.parametrize(
    "path", sorted(glob.glob(os.path.join(REPO_ROOT, "configs", "**", "*.yaml"), recursive=True)),
    ids=lambda p: os.path.relpath(p, REPO_ROOT),
)  # fmt: skip
def test_every_config_builds_its_mappers_with_and_without_lsj(path):
    cfg = get_cfg()
    add_pix2seq_config(cfg)
    cfg.merge_from_file(path)
    for lsj in (False, True):
        cfg.merge_from_list(["INPUT.LSJ.ENABLED", lsj, "INPUT.COLOR_JITTER.ENABLED", lsj])
        for is_train in (True, False):
            Pix2SeqDatasetMapper(cfg, is_train=is_train)


# ---- geometry ------------------------------------------------------------------------------
def test_lsj_flip_and_colour_keep_boxes_on_the_rectangles(scene):
    mapper = Pix2SeqDatasetMapper(lsj_cfg(), is_train=True)
    sizes, white_left_of_orange, counts = set(), set(), set()
    for seed in range(16):
        np.random.seed(seed)
        torch.manual_seed(seed)
        out = mapper(scene)
        check_boxes_match_image(out, mapper.task.tokenizer)
        h, w = out["image"].shape[1:]
        assert h <= SIZE and w <= SIZE
        sizes.add((h, w))
        counts.add(len(out["instances"]))
        boxes = {c: b for c, b in zip(out["instances"].gt_classes.tolist(), out["instances"].gt_boxes.tensor)}
        if len(boxes) == 2:
            white_left_of_orange.add(bool(boxes[0][0] < boxes[1][0]))
    assert len(sizes) > 3  # random scales
    assert white_left_of_orange == {True, False}  # flipped and not flipped
    assert 2 in counts


def test_lsj_output_is_image_size_square_when_scaled_up(scene):
    mapper = Pix2SeqDatasetMapper(lsj_cfg("INPUT.LSJ.MIN_SCALE", 1.4, "INPUT.LSJ.MAX_SCALE", 2.0), is_train=True)
    for seed in range(6):
        np.random.seed(seed)
        out = mapper(scene)
        assert out["image"].shape == (3, SIZE, SIZE)
        check_boxes_match_image(out, mapper.task.tokenizer)


def test_boxes_cropped_away_entirely_are_dropped(tmp_path):
    # 64x64 image, scale 2 -> 128x128, cropped to 64x64: the two corner boxes never both survive.
    image = np.zeros((64, 64, 3), np.uint8)
    image[2:14, 2:14] = 255
    image[50:62, 50:62] = 255
    path = write_image(str(tmp_path / "corners.png"), image)
    dd = dataset_dict(path, 64, 64, [box_annotation(2, 2, 14, 14, 0), box_annotation(50, 50, 62, 62, 1)])
    cfg = lsj_cfg("INPUT.LSJ.IMAGE_SIZE", 64, "INPUT.LSJ.MIN_SCALE", 2.0, "INPUT.LSJ.MAX_SCALE", 2.0)
    mapper = Pix2SeqDatasetMapper(cfg, is_train=True)
    counts = []
    for seed in range(12):
        np.random.seed(seed)
        out = mapper(dd)
        assert out["image"].shape == (3, 64, 64)
        check_boxes_match_image(out, mapper.task.tokenizer)
        counts.append(len(out["instances"]))
    assert max(counts) == 1 and 0 in counts and 1 in counts


def test_random_fixed_size_crop_draws_x_and_y_independently():
    image = np.zeros((100, 200, 3), np.uint8)
    crop = RandomFixedSizeCrop((50, 50))
    offsets = np.array([(t.x0, t.y0) for t in (crop.get_transform(image) for _ in range(300))])  # [300, 2]
    assert offsets[:, 0].min() >= 0 and offsets[:, 0].max() <= 150 and offsets[:, 1].max() <= 50
    assert abs(np.corrcoef(offsets[:, 0], offsets[:, 1])[0, 1]) < 0.3
    assert isinstance(RandomFixedSizeCrop((120, 300)).get_transform(image), T.NoOpTransform)  # fits: whole image
    t = RandomFixedSizeCrop((40, 300)).get_transform(image)  # only the height is cropped
    assert (t.x0, t.w, t.h) == (0, 200, 40)


# ---- colour --------------------------------------------------------------------------------
def test_colour_jitter_changes_pixels_but_not_geometry(scene):
    size_opts = ("INPUT.RANDOM_FLIP", "none", "INPUT.MIN_SIZE_TRAIN", (72,), "INPUT.MAX_SIZE_TRAIN", 96)  # unresized
    plain = Pix2SeqDatasetMapper(tiny_cfg(*size_opts), is_train=True)
    jitter_cfg = tiny_cfg(*size_opts, "INPUT.COLOR_JITTER.ENABLED", True, "INPUT.COLOR_JITTER.HUE", 0.3)
    jittered = Pix2SeqDatasetMapper(jitter_cfg, is_train=True)
    for seed in range(4):
        torch.manual_seed(seed)
        a = plain(scene)
        torch.manual_seed(seed)  # the same object order
        b = jittered(scene)
        assert a["image"].shape == b["image"].shape == (3, 72, 96)
        assert not torch.equal(a["image"], b["image"])
        assert torch.equal(a["instances"].gt_boxes.tensor, b["instances"].gt_boxes.tensor)
        assert torch.equal(a["seq_target"], b["seq_target"])
        assert np.array_equal(bright_mask(a["image"]), bright_mask(b["image"]))
        check_boxes_match_image(b, jittered.task.tokenizer)


@pytest.mark.parametrize("image_format", ["RGB", "BGR"])
def test_saturation_and_hue_keep_gray_gray(image_format):
    gray = np.repeat(np.random.randint(0, 256, (16, 16, 1), dtype=np.uint8), 3, axis=2)
    aug = ColorJitter(brightness=0.4, contrast=0.4, saturation=0.9, hue=0.5, image_format=image_format)
    for _ in range(10):
        out = aug.get_transform(gray).apply_image(gray)
        assert out.dtype == np.uint8 and out.shape == gray.shape
        assert (out == out[..., :1]).all()


@pytest.mark.parametrize("image_format", ["RGB", "BGR"])
def test_saturation_and_hue_follow_the_channel_order(image_format):
    red_rgb = np.zeros((4, 4, 3), np.uint8)
    red_rgb[..., 0] = 255
    order = slice(None) if image_format == "RGB" else slice(None, None, -1)
    red = np.ascontiguousarray(red_rgb[..., order])
    # Fully desaturated pure red is its luma, 0.299 * 255, in every channel.
    gray = ColorJitterTransform([("saturation", 0.0)], image_format).apply_image(red)
    assert (gray == 76).all()
    # A third of a turn of hue takes red to green.
    green = ColorJitterTransform([("hue", 1 / 3)], image_format).apply_image(red)
    assert green[0, 0, order].tolist() == [0, 255, 0]


def test_hue_rotation_matches_colorsys():
    pixels = np.random.randint(0, 256, (6, 6, 3), dtype=np.uint8)
    shift = 0.13
    expected = np.array(
        [[colorsys.hsv_to_rgb((h + shift) % 1, s, v) for h, s, v in (colorsys.rgb_to_hsv(*(p / 255)) for p in row)]
         for row in pixels]
    ) * 255  # fmt: skip
    out = ColorJitterTransform([("hue", shift)], "RGB").apply_image(pixels)
    assert np.abs(out.astype(float) - expected).max() <= 1.0
    out_bgr = ColorJitterTransform([("hue", shift)], "BGR").apply_image(np.ascontiguousarray(pixels[..., ::-1]))
    assert np.array_equal(out_bgr[..., ::-1], out)


def test_brightness_and_contrast():
    image = np.array([[[50, 100, 150], [200, 220, 240]]], np.uint8)  # [1, 2, 3]
    assert ColorJitterTransform([("brightness", 0.5)]).apply_image(image).tolist() == [[[25, 50, 75], [100, 110, 120]]]
    assert (ColorJitterTransform([("brightness", 2.0)]).apply_image(image) <= 255).all()  # clipped, no wrap
    flat = ColorJitterTransform([("contrast", 0.0)], "RGB").apply_image(image)
    assert np.ptp(flat) == 0  # contrast 0: every pixel becomes the mean luma


# ---- multi-crop ----------------------------------------------------------------------------
def test_multi_crop_gives_independent_views(scene):
    mapper = Pix2SeqDatasetMapper(lsj_cfg("INPUT.MULTI_CROP.NUM_VIEWS", 3), is_train=True)
    out = mapper(scene)
    views = out["views"]
    assert len(views) == 3
    assert (out["height"], out["width"], out["file_name"]) == (72, 96, scene["file_name"])
    assert out["image"] is views[0]["image"] and out["seq_target"] is views[0]["seq_target"]
    for view in views:
        assert "views" not in view and "annotations" not in view
        assert (view["height"], view["width"], view["image_id"]) == (72, 96, 1)
        check_boxes_match_image(view, mapper.task.tokenizer)
    for i in range(3):
        for j in range(i + 1, 3):
            a, b = views[i]["image"], views[j]["image"]
            assert a.shape != b.shape or not torch.equal(a, b)
    assert len(scene["annotations"]) == 2 and scene["annotations"][0]["bbox"] == list(WHITE_BOX)  # input untouched


def test_expand_views_flattens_only_multi_view_entries():
    single = {"image": torch.zeros(3, 4, 4)}
    multi = {"image": torch.ones(3, 4, 4), "views": [{"v": 0}, {"v": 1}]}
    assert expand_views([multi, single, multi]) == [{"v": 0}, {"v": 1}, single, {"v": 0}, {"v": 1}]
    assert expand_views([single]) == [single]


def test_training_forward_on_two_views_per_image(scene, tmp_path):
    cfg = lsj_cfg("INPUT.MULTI_CROP.NUM_VIEWS", 2, "MODEL.PIX2SEQ.NUM_CLASSES", 2)
    mapper = Pix2SeqDatasetMapper(cfg, is_train=True)
    other = write_image(str(tmp_path / "other.png"), np.full((50, 40, 3), 30, np.uint8))
    batch = [mapper(scene), mapper(dataset_dict(other, 50, 40, [box_annotation(5, 5, 30, 40, 1)]))]
    model = build_model(cfg).train()
    loss = model(batch)["loss_seq"]
    assert torch.isfinite(loss)
    # The model trains on the four views: the same loss as the flattened batch.
    assert torch.allclose(loss, model(expand_views(batch))["loss_seq"])
    loss.backward()
    assert model.input_proj.weight.grad is not None
