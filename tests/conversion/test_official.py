"""Converted official Pix2Seq checkpoints give the official model's outputs, stage by stage.

Reference values: ``tests/fixtures/pix2seq_official/<case>/io.npz``, computed by the official
TensorFlow code on these checkpoints (random weights). Bars: every stage within ``REL_TOL`` of the
reference's largest magnitude, greedy tokens identical.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from detectron2.structures import ImageList

from pix2seq_d2.modeling.backbone.resnet import max_pool_tf_same
from pix2seq_d2.modeling.decoding import decode
from pix2seq_d2.modeling.transformer import sincos_position_table
from pix2seq_d2.tasks import DecodingOptions
from pix2seq_d2.utils.structures import image_sizes_tensor
from tests.helpers.peer_fixtures import REL_TOL, case_id, cases, converted_model, load_io, nhwc, rel_error

MODEL_CASES = cases("model")
E2E_CASES = cases("e2e")


def test_fixture_cases_found():
    assert MODEL_CASES and E2E_CASES


def _images(io: dict) -> ImageList:
    """The fixture's preprocessed images as a batch (already padded, all valid)."""
    x = nhwc(io["images"])
    return ImageList(x, [tuple(x.shape[-2:])] * len(x))


@pytest.mark.parametrize("case", MODEL_CASES, ids=case_id)
def test_backbone_stages(case):
    model, _ = converted_model(case)
    io = load_io(case)
    x = nhwc(io["images"])
    with torch.no_grad():
        if "resnet_stem" in io:
            stem = model.backbone.stem
            prepool = torch.relu(stem.conv1(x))
            assert rel_error(prepool, nhwc(io["resnet_stem_prepool"])) < REL_TOL
            assert rel_error(stem(x), nhwc(io["resnet_stem"])) < REL_TOL
            # the trap the fixtures document: PyTorch's symmetric padding breaks the stem
            symmetric = torch.nn.functional.max_pool2d(prepool, 3, 2, padding=1)
            if prepool.shape[-1] % 2 == 0:
                assert rel_error(symmetric, nhwc(io["resnet_stem"])) > 100 * REL_TOL
            assert rel_error(max_pool_tf_same(prepool), nhwc(io["resnet_stem"])) < REL_TOL
            feature = model.backbone(x)[model.in_feature]
            assert rel_error(feature, nhwc(io["backbone_feature"])) < REL_TOL
        else:  # ViT: the patch embedding, then the whole ViT is the encoder
            assert rel_error(model.backbone.patch_embed(x), nhwc(io["vit_patch_conv"])) < REL_TOL


RESNET_CASES = [c for c in MODEL_CASES if "resnet_stem" in load_io(c)]


@pytest.mark.parametrize("case", RESNET_CASES, ids=case_id)
def test_resnet_intermediate_stages(case):
    """Block groups 1-3 (the stages before the backbone's output), run in order."""
    model, _ = converted_model(case)
    io = load_io(case)
    x = model.backbone.stem(nhwc(io["images"]))
    with torch.no_grad():
        for name, stage in zip(("resnet_c2", "resnet_c3", "resnet_c4"), ("res2", "res3", "res4")):
            x = getattr(model.backbone, stage)(x)
            if name in io:
                assert rel_error(x, nhwc(io[name])) < REL_TOL, name


@pytest.mark.parametrize("case", MODEL_CASES, ids=case_id)
def test_position_tables_encoder_and_memory(case):
    model, _ = converted_model(case)
    io = load_io(case)
    images = _images(io)
    with torch.no_grad():
        if "vit_patch_conv" in io:
            vit = model.backbone
            patches = vit.patch_embed(images.tensor)
            b, d, h, w = patches.shape
            table = sincos_position_table(h, w, d)
            encoder_input = vit.patch_norm(patches.flatten(2).transpose(1, 2)) + table
            encoder_output = vit(images.tensor)["vit"].flatten(2).transpose(1, 2)
        else:
            feature = model.backbone(images.tensor)[model.in_feature]
            h, w = feature.shape[-2:]
            encoder_input, pos, padding = model.encoder_input(
                feature, image_sizes_tensor(images, "cpu"), images.tensor.shape[-2:]
            )
            assert pos is None and padding is None  # positions once at the input, nothing masked
            table = sincos_position_table(h, w, encoder_input.shape[-1])
            encoder_output = model.encoder(encoder_input, pos, padding)
        memory, cross_pos, _ = model.encode(images)
    assert rel_error(table, io["vis_pos_emb_enc"]) < REL_TOL
    assert rel_error(sincos_position_table(h, w, memory.shape[-1]), io["vis_pos_emb_dec"]) < REL_TOL
    assert rel_error(encoder_input, io["encoder_input"]) < REL_TOL
    assert rel_error(encoder_output, io["encoder_output"]) < REL_TOL
    assert rel_error(memory, io["memory"]) < REL_TOL
    assert cross_pos is None  # no positional term on the cross-attention keys


@pytest.mark.parametrize("case", MODEL_CASES, ids=case_id)
def test_teacher_forced_logits(case):
    model, _ = converted_model(case)
    io = load_io(case)
    with torch.no_grad():
        memory, pos, padding = model.encode(_images(io))
        logits = model.decoder(torch.from_numpy(io["tf_input_seq"]), memory, pos, padding)
    assert rel_error(logits, io["tf_logits"]) < REL_TOL


@pytest.mark.parametrize("case", MODEL_CASES, ids=case_id)
def test_greedy_tokens_and_step_logits(case):
    """The official ``infer`` with top_k=1: greedy over all tokens, no grammar, no stop; our cached decoder."""
    model, _ = converted_model(case)
    io = load_io(case)
    steps = io["greedy_tokens"].shape[1]
    tpo = model.task.tokens_per_object
    options = DecodingOptions(strategy="greedy", grammar=False, stop_at_eos=False, max_objects=-(-steps // tpo))
    assert int(io["prompt"][0, 0]) == model.tokenizer.START
    with torch.no_grad():
        memory, pos, padding = model.encode(_images(io))
        out = decode(model.decoder, model.task, memory, pos, padding, options, return_logits=True)
    assert torch.equal(out.tokens[:, :steps], torch.from_numpy(io["greedy_tokens"]))
    assert rel_error(out.logits[:, :steps], io["greedy_logits"]) < REL_TOL


# ---- the end-to-end case: photos -> preprocessing -> 100 objects -> COCO detections ------------------
def _e2e_inputs(io: dict, from_raw: bool, model) -> list[dict]:
    """Model inputs of the photos: the fixture's preprocessed pixels (unpadded part, 0..255), or the
    raw photos through our own test-time resize (the predictor's preprocessing)."""
    from pix2seq_d2.engine.predictor import Pix2SeqPredictor

    inputs = []
    for i, (oh, ow) in enumerate(io["orig_image_size"].tolist()):
        if from_raw:
            predictor = Pix2SeqPredictor.__new__(Pix2SeqPredictor)  # preprocessing only: no weights to load
            predictor.aug, predictor.input_format, predictor.model = _resize(model), "RGB", model
            inputs.append(predictor.preprocess(io[f"raw_image_{i}"], format="RGB"))
        else:
            uh, uw = io["unpadded_image_size"][i].tolist()
            image = torch.from_numpy(io["images"][i, :uh, :uw]).permute(2, 0, 1) * 255.0
            inputs.append({"image": image, "height": oh, "width": ow})
    return inputs


def _resize(model):
    from pix2seq_d2.data.transforms import ResizeLongestSide

    return ResizeLongestSide(model.pad_to_square)


def _expected_detections(io: dict, image: int, category_ids: list[int], hw: tuple[int, int]) -> np.ndarray:
    """The official detections of one image as detectron2 reports them: only dataset categories,
    corners sorted, clipped to the image, empty boxes dropped. Rows: class, x0, y0, x1, y1, score."""
    rows = io["det_image_id"] == io["image_ids"][image]
    cats, xywh, scores = io["det_category_id"][rows], io["det_bbox_xywh"][rows], io["det_score"][rows]
    keep = np.isin(cats, category_ids)
    x0, y0 = xywh[keep, 0], xywh[keep, 1]
    x1, y1 = x0 + xywh[keep, 2], y0 + xywh[keep, 3]
    boxes = np.stack([np.minimum(x0, x1), np.minimum(y0, y1), np.maximum(x0, x1), np.maximum(y0, y1)], 1)
    h, w = hw
    boxes = boxes.clip(0, [w, h, w, h])
    nonempty = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
    classes = np.array([category_ids.index(c) for c in cats[keep]])
    table = np.concatenate([classes[:, None], boxes, scores[keep, None]], 1)[nonempty]
    return table[np.lexsort((table[:, 1], table[:, 0], -table[:, 5]))]


def _our_detections(instances) -> np.ndarray:
    boxes = instances.pred_boxes.tensor.numpy()
    table = np.concatenate([instances.pred_classes.numpy()[:, None], boxes, instances.scores.numpy()[:, None]], 1)
    return table[np.lexsort((table[:, 1], table[:, 0], -table[:, 5]))]


@pytest.mark.parametrize("from_raw", [False, True], ids=["preprocessed", "raw_photos"])
@pytest.mark.parametrize("case", E2E_CASES, ids=case_id)
def test_end_to_end_detections(case, from_raw):
    model, converted = converted_model(case)
    io = load_io(case)
    # the fixture decodes greedily (top_k=1) over all tokens: no grammar, 100 objects
    steps = io["pred_seq"].shape[1]
    model.decoding = dataclasses.replace(
        model.decoding,
        strategy="greedy",
        grammar=False,
        stop_at_eos=False,
        max_objects=steps // model.task.tokens_per_object,
    )
    inputs = _e2e_inputs(io, from_raw, model)
    if from_raw:  # our resize + padding against the official preprocessing: within 1/255
        for i, x in enumerate(inputs):
            uh, uw = io["unpadded_image_size"][i].tolist()
            assert tuple(x["image"].shape[-2:]) == (uh, uw)
            official = torch.from_numpy(io["images"][i, :uh, :uw]).permute(2, 0, 1)
            assert float((x["image"] / 255.0 - official).abs().max()) < 1 / 255
    with torch.no_grad():
        images = model.preprocess_image(inputs)
        assert rel_error(images.tensor.permute(0, 2, 3, 1), io["images"]) < (1 / 255 if from_raw else 1e-6)
        sequences = model.generate(inputs)[0]
        results = model(inputs)
    assert torch.equal(sequences.tokens, torch.from_numpy(io["pred_seq"]))
    category_ids = list(converted.config().MODEL.PIX2SEQ.TOKENIZER.CATEGORY_IDS)
    for i, result in enumerate(results):
        ours = _our_detections(result["instances"])
        expected = _expected_detections(io, i, category_ids, tuple(io["orig_image_size"][i].tolist()))
        assert len(expected) > 0 and ours.shape == expected.shape
        np.testing.assert_array_equal(ours[:, 0], expected[:, 0])  # classes
        assert np.abs(ours[:, 1:5] - expected[:, 1:5]).max() <= 1.0  # boxes within 1 px (original image)
        assert np.abs(ours[:, 5] - expected[:, 5]).max() <= 1e-3  # scores
