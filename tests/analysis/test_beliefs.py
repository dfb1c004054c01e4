"""pix2seq_d2/analysis/beliefs.py and tools/visualize_beliefs.py: the distributions behind the tokens, the picture."""

from __future__ import annotations

import os
import sys

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from pix2seq_d2 import Pix2SeqPredictor
from pix2seq_d2.analysis.beliefs import coordinate_distributions, draw_beliefs, read_beliefs
from pix2seq_d2.data.image_io import BadInputError
from pix2seq_d2.tasks.tokenizer import Pix2SeqTokenizer
from tests.helpers import REPO_ROOT, detection_task, tiny_cfg, write_image

sys.path.insert(0, os.path.join(REPO_ROOT, "tools"))
import visualize_beliefs  # noqa: E402

OBJECTS = ("MODEL.PIX2SEQ.MAX_OBJECTS_TEST", 4, "MODEL.PIX2SEQ.DECODE.STOP_AT_EOS", False)


def scrambled_predictor(*opts) -> Pix2SeqPredictor:
    """A tiny random model with large weights: varied tokens that depend on the image."""
    predictor = Pix2SeqPredictor(tiny_cfg(*opts))
    with torch.no_grad():
        for weight in predictor.model.parameters():
            if weight.dim() > 1:
                weight.normal_(0, 0.3)
    return predictor


def random_image(h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(h, w, 3), dtype=np.uint8)


def test_coordinate_distributions_use_only_the_coordinate_bins():
    tokenizer = Pix2SeqTokenizer(num_classes=3, num_bins=10)
    logits = torch.randn(2, 11, tokenizer.vocab_size)  # two objects and a trailing EOS position
    dists = coordinate_distributions(logits, detection_task(tokenizer))
    assert dists.shape == (2, 2, 4, 10)
    assert torch.allclose(dists.sum(-1), torch.ones(2, 2, 4))
    changed = logits.clone()
    changed[..., : tokenizer.coord_token_range()[0]] += 5.0  # special and class tokens do not matter
    assert torch.allclose(coordinate_distributions(changed, detection_task(tokenizer)), dists)
    lo, _ = tokenizer.coord_token_range()
    assert torch.equal(dists.argmax(-1), logits[:, :10].reshape(2, 2, 5, -1)[:, :, :4, lo:].argmax(-1))


def test_distributions_sum_to_one_and_peak_at_the_greedy_tokens():
    predictor = scrambled_predictor(*OBJECTS)
    images = [random_image(40, 56, seed=1), random_image(64, 32, seed=2)]
    inputs = [predictor.preprocess(image) for image in images]
    beliefs = read_beliefs(predictor.model, inputs, predictor.metadata.thing_classes)
    for image, belief in zip(images, beliefs):
        assert (belief.height, belief.width) == image.shape[:2]
        assert len(belief.objects) == 4 and len(belief.tokens) == 20  # no EOS without STOP_AT_EOS
        for obj in belief.objects:
            assert obj.coord_probs.shape == (4, 64)
            np.testing.assert_allclose(obj.coord_probs.sum(-1), 1.0, atol=1e-5)
            np.testing.assert_array_equal(obj.coord_probs.argmax(-1), obj.bins)  # greedy picks the peaks
            assert obj.class_name in ("circle", "square", "triangle") or obj.class_name
        coord_tokens = [t for t in belief.tokens if not t.text.startswith("class")]
        for t in coord_tokens:
            obj = belief.objects[t.object_index]
            slot = ("ymin", "xmin", "ymax", "xmax").index(t.text.split("=")[0])
            assert t.prob == pytest.approx(float(obj.coord_probs[slot].max()))
        assert all(0 < t.prob <= 1 for t in belief.tokens)


def test_objects_match_the_models_detections():
    predictor = scrambled_predictor(*OBJECTS)
    # An image with detections (for many random images all boxes are empty, and dropped).
    image = next(im for im in (random_image(48, 64, seed=s) for s in range(50)) if len(predictor(im)["instances"]))
    belief = read_beliefs(predictor.model, [predictor.preprocess(image)])[0]
    instances = predictor(image)["instances"]  # greedy, the same decoding: the same objects
    for box, score, cls in zip(instances.pred_boxes.tensor.numpy(), instances.scores, instances.pred_classes):
        match = [o for o in belief.objects if np.allclose(o.box, box, atol=1e-3)]
        assert match and match[0].score == pytest.approx(float(score)) and match[0].class_id == int(cls)
        assert match[0].class_name == str(int(cls))  # no class names given: the ids


def test_eos_token_and_an_image_without_objects_still_draw(tmp_path):
    predictor = Pix2SeqPredictor(tiny_cfg("MODEL.PIX2SEQ.MAX_OBJECTS_TEST", 3))
    with torch.no_grad():
        predictor.model.decoder.output_bias[predictor.model.tokenizer.EOS] = 50.0  # stop at once
    image = random_image(30, 30)
    belief = read_beliefs(predictor.model, [predictor.preprocess(image)])[0]
    assert [(t.text, t.object_index) for t in belief.tokens] == [("EOS", -1)] and belief.objects == []
    assert belief.tokens[0].prob == pytest.approx(1.0)
    figure = draw_beliefs(image[:, :, ::-1], belief, title="empty")
    figure.savefig(tmp_path / "empty.png")
    assert (tmp_path / "empty.png").stat().st_size > 1000


def test_tool_writes_pngs_for_real_images(tmp_path):
    cfg_file = tmp_path / "tiny.yaml"
    cfg_file.write_text(tiny_cfg(*OBJECTS, "MODEL.PIX2SEQ.DECODE.STOP_AT_EOS", False).dump())
    image = random_image(48, 64)
    image[10:30, 20:50] = (255, 255, 0)
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    write_image(str(inputs / "shapes.png"), image)
    write_image(str(inputs / "other.jpg"), random_image(40, 40, seed=3))
    written = visualize_beliefs.main(
        ["--config-file", str(cfg_file), "--input", str(inputs / "shapes.png"), "--output", str(tmp_path / "b.png"),
         "--dpi", "50"]
    )  # fmt: skip
    assert written == [str(tmp_path / "b.png")]
    picture = cv2.imread(written[0])
    assert picture is not None and picture.shape[1] == 600 and os.path.getsize(written[0]) > 10_000  # 12 in x 50 dpi

    written = visualize_beliefs.main(
        ["--config-file", str(cfg_file), "--input", str(inputs / "*.*g"), "--output", str(tmp_path / "folder"),
         "--max-objects", "2"]
    )  # fmt: skip
    assert sorted(os.path.basename(p) for p in written) == ["other_beliefs.png", "shapes_beliefs.png"]
    assert all(cv2.imread(p) is not None for p in written)


def test_tool_reads_images_through_the_checked_reader(tmp_path, monkeypatch):
    """16-bit pixels are scaled (not white), and an unreadable image is named and skipped."""
    cfg_file = tmp_path / "tiny.yaml"
    cfg_file.write_text(tiny_cfg(*OBJECTS).dump())
    deep = np.full((40, 48), 100 * 257, np.uint16)
    Image.fromarray(deep).save(tmp_path / "deep.png")
    (tmp_path / "lfs.png").write_text("version https://git-lfs.github.com/spec/v1\noid sha256:00ff\nsize 5120\n")
    drawn = []
    real_draw = visualize_beliefs.draw_beliefs
    monkeypatch.setattr(visualize_beliefs, "draw_beliefs", lambda image, *a, **k: drawn.append(image) or
                        real_draw(image, *a, **k))  # fmt: skip
    with pytest.raises(BadInputError) as error:
        visualize_beliefs.main(["--config-file", str(cfg_file), "--input", str(tmp_path / "*.png"), "--output",
                                str(tmp_path / "out"), "--dpi", "30"])  # fmt: skip
    assert f"{tmp_path / 'lfs.png'} is a git-lfs pointer" in str(error.value) and "1 of 2 input(s)" in str(error.value)
    assert len(drawn) == 1 and drawn[0].shape == (40, 48, 3) and (drawn[0] == 100).all()
    assert os.listdir(tmp_path / "out") == ["deep_beliefs.png"]
