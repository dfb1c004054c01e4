"""The vocabulary layout and the boxes <-> tokens conversion."""

from __future__ import annotations

import pytest
import torch

from pix2seq_d2.tasks.tokenizer import Pix2SeqTokenizer
from tests.helpers import detection_task


def test_vocabulary_layout_is_contiguous_and_disjoint():
    tok = Pix2SeqTokenizer(num_classes=80, num_bins=1000)
    specials = {tok.PAD, tok.EOS, tok.START, tok.NOISE}
    assert specials == {0, 1, 2, 3}
    assert tok.class_token_range() == (4, 84)
    assert tok.coord_token_range() == (84, 1084)
    assert tok.vocab_size == 1084


@pytest.mark.parametrize("num_bins", [2, 7, 96, 1000])
def test_quantize_round_trip_within_half_a_bin_including_boundaries(num_bins):
    tok = Pix2SeqTokenizer(num_classes=3, num_bins=num_bins)
    values = torch.cat([torch.linspace(0, 1, 10001), torch.tensor([0.0, 1.0, 1 - 1e-7, 1e-7])])
    bins = tok.quantize(values)
    assert bins.min() >= 0 and bins.max() <= num_bins - 1
    err = (tok.dequantize(bins) - values).abs()
    assert err.max() <= 0.5 / num_bins + 1e-6


def test_quantize_clamps_values_outside_the_image():
    tok = Pix2SeqTokenizer(num_classes=3, num_bins=10)
    assert tok.quantize(torch.tensor([-0.3, 1.7])).tolist() == [0, 9]


def test_encode_layout_order_and_weights():
    tok = Pix2SeqTokenizer(num_classes=3, num_bins=100, eos_weight=0.25)
    boxes = torch.tensor([[10.0, 20.0, 30.0, 60.0], [0.0, 0.0, 200.0, 100.0]])  # x0 y0 x1 y1
    out = detection_task(tok).encode(boxes, torch.tensor([2, 0]), image_hw=(100, 200))  # h=100, w=200
    c0 = tok.coord_token_range()[0]
    # ymin xmin ymax xmax class: y normalised by h=100, x by w=200
    first = [c0 + 20, c0 + 5, c0 + 60, c0 + 15, tok.class_token_range()[0] + 2]
    second = [c0 + 0, c0 + 0, c0 + 99, c0 + 99, tok.class_token_range()[0] + 0]
    assert out.input.tolist() == [tok.START] + first + second
    assert out.target.tolist() == first + second + [tok.EOS]
    assert out.weight.tolist() == [1.0] * 10 + [0.25]


def test_encode_no_objects_is_start_then_eos():
    tok = Pix2SeqTokenizer(num_classes=3, num_bins=100)
    out = detection_task(tok).encode(torch.zeros(0, 4), torch.zeros(0, dtype=torch.long), (50, 50))
    assert out.input.tolist() == [tok.START]
    assert out.target.tolist() == [tok.EOS]


def test_encode_rejects_class_ids_outside_the_vocabulary():
    tok = Pix2SeqTokenizer(num_classes=3, num_bins=100)
    with pytest.raises(ValueError, match="class ids"):
        detection_task(tok).encode(torch.tensor([[0.0, 0, 5, 5]]), torch.tensor([3]), (10, 10))


def test_encode_decode_round_trip_boxes_within_half_a_bin():
    tok = Pix2SeqTokenizer(num_classes=5, num_bins=64)
    h, w = 120, 90
    gen = torch.Generator().manual_seed(0)
    xy0 = torch.rand(20, 2, generator=gen) * torch.tensor([w, h]) * 0.5
    boxes = torch.cat([xy0, xy0 + torch.rand(20, 2, generator=gen) * torch.tensor([w, h]) * 0.5], 1)
    boxes[0] = torch.tensor([0.0, 0.0, w, h])  # boundaries
    classes = torch.randint(0, 5, (20,), generator=gen)
    tokens = detection_task(tok).encode(boxes, classes, (h, w)).target[:-1][None]  # [1, 100] without EOS
    logprobs = torch.rand(tokens.shape, generator=gen).log()
    class_logprobs = torch.nn.functional.one_hot(classes, 5)[None].float().log()  # certain of each class
    out = detection_task(tok).decode_objects(tokens, logprobs, class_logprobs, torch.tensor([[h, w]]))
    assert out.valid.all()
    assert torch.equal(out.classes[0], classes)
    half_bin = torch.tensor([w, h, w, h]) / 64 / 2
    assert ((out.boxes[0] - boxes).abs() <= half_bin + 1e-4).all()
    assert torch.equal(out.scores[0], torch.ones(20))


def test_reported_class_and_score_come_from_the_class_slot_distribution():
    tok = Pix2SeqTokenizer(num_classes=3, num_bins=10)
    c = tok.coord_token_range()[0]
    # The generated class token is the noise class; the reported class is the most likely real one.
    tokens = torch.tensor([[c + 1, c + 1, c + 5, c + 5, tok.NOISE]])
    coord_logprobs = torch.log(torch.tensor([0.5, 0.5, 0.5, 0.5]))
    logprobs = torch.cat([coord_logprobs, torch.log(torch.tensor([0.9]))])[None]
    class_logprobs = torch.log(torch.tensor([[[0.02, 0.06, 0.02]]]))  # noise took the remaining 0.9
    out = detection_task(tok).decode_objects(tokens, logprobs, class_logprobs, torch.tensor([[10, 10]]))
    assert out.valid.tolist() == [[True]] and out.classes.tolist() == [[1]]
    assert out.scores.item() == pytest.approx(0.06)
    product = detection_task(tok).decode_objects(
        tokens, logprobs, class_logprobs, torch.tensor([[10, 10]]), score="class_x_coords"
    )
    assert product.scores.item() == pytest.approx(0.06 * 0.5**4)
    with pytest.raises(ValueError, match="unknown score mode"):
        detection_task(tok).decode_objects(tokens, logprobs, class_logprobs, torch.tensor([[10, 10]]), score="max")


def test_decode_marks_objects_after_eos_and_malformed_objects_invalid():
    tok = Pix2SeqTokenizer(num_classes=3, num_bins=10)
    c, k = tok.coord_token_range()[0], tok.class_token_range()[0]
    good = [c + 1, c + 1, c + 5, c + 5, k + 1]
    bad_class_slot = [c + 1, c + 1, c + 5, c + 5, c + 2]  # coordinate token in the class slot
    rows = torch.tensor(
        [
            good + bad_class_slot + good,
            good + [tok.EOS] + [tok.PAD] * 4 + good,  # everything after EOS is ignored
        ]
    )
    class_logprobs = torch.full((2, 3, 3), -5.0)
    class_logprobs[..., 1] = -0.1
    out = detection_task(tok).decode_objects(
        rows, torch.zeros(rows.shape), class_logprobs, torch.tensor([[10, 10], [10, 10]])
    )
    assert out.valid.tolist() == [[True, False, True], [True, False, False]]
    assert out.classes.tolist() == [[1, -1, 1], [1, -1, -1]]
    assert out.scores[1, 1:].eq(0).all()
