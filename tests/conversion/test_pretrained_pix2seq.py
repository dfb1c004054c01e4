"""A converted Pretrained-Pix2Seq checkpoint gives that release's outputs, stage by stage.

Reference values: ``tests/fixtures/pix2seq_official/<case>/io.npz`` of the "pretrained" cases,
computed by Pretrained-Pix2Seq's own code on its ``checkpoint.pth`` (random weights).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from detectron2.structures import ImageList

from pix2seq_d2.modeling.decoding import decode
from pix2seq_d2.modeling.transformer import sine_position_encoding
from pix2seq_d2.tasks import DecodingOptions
from pix2seq_d2.utils.structures import image_sizes_tensor
from tests.helpers.peer_fixtures import REL_TOL, case_id, cases, converted_model, load_io, rel_error

CASES = cases("pretrained")


def test_fixture_cases_found():
    assert CASES


def _batch(io: dict) -> ImageList:
    """The release's batch (normalised, zero-padded), with each image's unpadded size."""
    return ImageList(torch.from_numpy(io["samples"]), [tuple(s) for s in io["size"].tolist()])


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_backbone_projection_positions_and_memory(case):
    model, _ = converted_model(case)
    io = load_io(case)
    images = _batch(io)
    with torch.no_grad():
        feature = model.backbone(images.tensor)[model.in_feature]
        src, pos, padding = model.encoder_input(feature, image_sizes_tensor(images, "cpu"), images.tensor.shape[-2:])
        memory, cross_pos, _ = model.encode(images)
    b, d, h, w = io["input_proj"].shape
    assert rel_error(feature, io["backbone_feature"]) < REL_TOL
    assert rel_error(src, io["input_proj"].reshape(b, d, h * w).transpose(0, 2, 1)) < REL_TOL
    assert rel_error(pos, io["pos"].reshape(b, d, h * w).transpose(0, 2, 1)) < REL_TOL
    assert padding is None  # the release attends to the padding
    assert rel_error(memory, io["memory"]) < REL_TOL
    assert torch.equal(cross_pos, pos)  # positions on the cross-attention keys, as DETR


def test_unnormalized_sine_is_detr_on_raw_positions():
    """Position 1..n, channel c: sin (even c) / cos (odd c) of pos / 10000^(2 (c // 2) / (d/2)), y half first."""
    pos = sine_position_encoding(torch.zeros(1, 2, 3, dtype=torch.bool), 8, normalize=False)[0]  # [6, 8]
    y, x = 2, 3  # the last position of the 2x3 grid
    freq = 10000 ** (2 * (torch.arange(4) // 2) / 4)
    want_y = torch.where(torch.arange(4) % 2 == 0, (y / freq).sin(), (y / freq).cos())
    want_x = torch.where(torch.arange(4) % 2 == 0, (x / freq).sin(), (x / freq).cos())
    assert torch.allclose(pos[-1], torch.cat([want_y, want_x]))


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_teacher_forced_logits(case):
    model, _ = converted_model(case)
    io = load_io(case)
    seq = torch.from_numpy(io["tf_input_seq"])
    tokens = torch.cat([torch.full((len(seq), 1), model.tokenizer.START), seq], 1)  # the separate start embedding
    with torch.no_grad():
        memory, pos, padding = model.encode(_batch(io))
        logits = model.decoder(tokens, memory, pos, padding)
    assert rel_error(logits, io["tf_logits"]) < REL_TOL


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_greedy_tokens_logits_and_postprocess(case):
    """500 greedy steps over the real tokens (never EOS/NOISE); boxes from each slot's argmax bin."""
    model, converted = converted_model(case)
    io = load_io(case)
    steps = io["greedy_tokens"].shape[1]
    tpo = model.task.tokens_per_object
    options = DecodingOptions(
        strategy="greedy", grammar=False, stop_at_eos=False, max_objects=steps // tpo, box_from="argmax"
    )
    images = _batch(io)
    with torch.no_grad():
        memory, pos, padding = model.encode(images)
        out = decode(model.decoder, model.task, memory, pos, padding, options, return_logits=True)
    head = io["greedy_logits_head"].shape[1]
    assert torch.equal(out.tokens, torch.from_numpy(io["greedy_tokens"]))
    assert rel_error(out.logits[:, :head], io["greedy_logits_head"]) < REL_TOL
    assert rel_error(out.logits.float().logsumexp(-1), io["greedy_logits_lse"]) < REL_TOL

    # PostProcess: our detections (class range argmax, argmax boxes) in original pixels. The release
    # neither clips nor sorts box corners (a random model's boxes leave the image), so they are
    # compared before detectron2's detector_postprocess, which clips to the image.
    model.decoding = options
    results = model.outputs([{}] * len(images), out, images, do_postprocess=False)
    category_ids = list(converted.config().MODEL.PIX2SEQ.TOKENIZER.CATEGORY_IDS)
    for i, result in enumerate(results):
        inst = result["instances"]
        (oh, ow), (sh, sw) = io["orig_size"][i].tolist(), io["size"][i].tolist()
        boxes = inst.pred_boxes.tensor.numpy() * np.array([ow / sw, oh / sh, ow / sw, oh / sh])
        ours = np.concatenate([inst.pred_classes.numpy()[:, None], boxes, inst.scores.numpy()[:, None]], 1)
        labels, theirs, scores = io["pred_labels"][i], io["pred_boxes"][i], io["pred_scores"][i]
        keep = np.isin(labels, category_ids)
        corners = np.concatenate(
            [np.minimum(theirs[:, :2], theirs[:, 2:]), np.maximum(theirs[:, :2], theirs[:, 2:])], 1
        )
        classes = [category_ids.index(c) for c in labels[keep]]
        expected = np.concatenate([np.array(classes)[:, None], corners[keep], scores[keep, None]], 1)
        assert len(expected) > 0 and ours.shape == expected.shape
        ours = ours[np.lexsort((ours[:, 1], ours[:, 0], -ours[:, 5]))]
        expected = expected[np.lexsort((expected[:, 1], expected[:, 0], -expected[:, 5]))]
        np.testing.assert_array_equal(ours[:, 0], expected[:, 0])
        assert np.abs(ours[:, 1:5] - expected[:, 1:5]).max() <= 1.0
        assert np.abs(ours[:, 5] - expected[:, 5]).max() <= 1e-3
