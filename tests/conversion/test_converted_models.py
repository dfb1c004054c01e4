"""A converted official checkpoint through this project's tools, on real files: ``tools/train_net.py
--eval-only`` (mapper, COCOEvaluator, results json), ``tools/demo.py``, beam search and the grammar,
and the beliefs picture.

The end-to-end fixture's photos are written as PNG (lossless: the decoded pixels are the fixture's
raw pixels), so the evaluation path must reproduce the official detections.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys

import numpy as np
import pytest
import torch
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets import register_coco_instances
from detectron2.engine import default_argument_parser
from detectron2.modeling import build_model
from PIL import Image

from pix2seq_d2.analysis.beliefs import draw_beliefs, read_beliefs
from pix2seq_d2.checkpoint import Pix2SeqCheckpointer
from pix2seq_d2.config import load_config
from pix2seq_d2.conversion import convert_checkpoint, write_converted
from pix2seq_d2.engine.predictor import Pix2SeqPredictor
from tests.helpers import REPO_ROOT
from tests.helpers.peer_fixtures import cases, load_io

sys.path.insert(0, os.path.join(REPO_ROOT, "tools"))
import demo  # noqa: E402
import train_net  # noqa: E402

CASE = cases("e2e")[0]
GREEDY = ["MODEL.PIX2SEQ.DECODE.STRATEGY", "greedy", "MODEL.DEVICE", "cpu"]  # the fixture decodes with top_k=1


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    """The end-to-end case converted to OUT.pth + OUT.yaml, and its photos as a registered COCO dataset."""
    folder = tmp_path_factory.mktemp("converted")
    conv = convert_checkpoint("official", CASE)
    pth, yaml = write_converted(conv, str(folder / "model.pth"))
    io = load_io(CASE)
    category_ids = list(conv.config().MODEL.PIX2SEQ.TOKENIZER.CATEGORY_IDS)
    images, annotations = [], []
    for i, (h, w) in enumerate(io["orig_image_size"].tolist()):
        name = f"photo_{i}.png"
        Image.fromarray(io[f"raw_image_{i}"]).save(folder / name)
        images.append({"id": int(io["image_ids"][i]), "file_name": name, "height": h, "width": w})
        box = {"bbox": [10, 20, 100, 80], "area": 8000, "iscrowd": 0, "category_id": 1}
        annotations.append({"id": i + 1, "image_id": int(io["image_ids"][i]), **box})
    coco = {
        "images": images,
        "annotations": annotations,
        "categories": [{"id": c, "name": f"c{c}"} for c in category_ids],
    }
    with open(folder / "photos.json", "w") as f:
        json.dump(coco, f)
    name = "converted_e2e_photos"
    if name in DatasetCatalog.list():
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)
    register_coco_instances(name, {}, str(folder / "photos.json"), str(folder))
    return {"folder": folder, "pth": pth, "yaml": yaml, "dataset": name, "io": io, "category_ids": category_ids}


def test_eval_only_reproduces_the_official_detections(converted, tmp_path):
    """``train_net.py --eval-only``'s code path: the mapper's resize, the model, COCOEvaluator's json."""
    out = tmp_path / "eval"
    args = default_argument_parser().parse_args(
        ["--config-file", converted["yaml"], "--eval-only", "DATASETS.TEST", f"('{converted['dataset']}',)",
         "OUTPUT_DIR", str(out), *GREEDY]
    )  # fmt: skip
    results = train_net.main(args)
    assert 0.0 <= results["bbox"]["AP"] <= 100.0  # random weights: any AP, but COCO AP is computed
    with open(out / "inference" / converted["dataset"] / "coco_instances_results.json") as f:
        ours = json.load(f)
    io = converted["io"]
    for i, image_id in enumerate(io["image_ids"].tolist()):
        h, w = io["orig_image_size"][i].tolist()
        rows = io["det_image_id"] == image_id
        cats, xywh, scores = io["det_category_id"][rows], io["det_bbox_xywh"][rows], io["det_score"][rows]
        x0, y0 = np.minimum(xywh[:, 0], xywh[:, 0] + xywh[:, 2]), np.minimum(xywh[:, 1], xywh[:, 1] + xywh[:, 3])
        x1, y1 = np.maximum(xywh[:, 0], xywh[:, 0] + xywh[:, 2]), np.maximum(xywh[:, 1], xywh[:, 1] + xywh[:, 3])
        x0, x1, y0, y1 = x0.clip(0, w), x1.clip(0, w), y0.clip(0, h), y1.clip(0, h)
        keep = np.isin(cats, converted["category_ids"]) & (x1 > x0) & (y1 > y0)
        want = sorted(zip(cats[keep].tolist(), [round(float(s), 4) for s in scores[keep]]))
        mine = [d for d in ours if d["image_id"] == image_id]
        assert len(want) > 0
        assert sorted((d["category_id"], round(d["score"], 4)) for d in mine) == want
        got_boxes = np.array(sorted((d["score"], *d["bbox"]) for d in mine))[:, 1:]
        want_boxes = np.array(sorted(zip(scores[keep], x0[keep], y0[keep], x1[keep] - x0[keep], y1[keep] - y0[keep]))
                              )[:, 1:]  # fmt: skip
        assert np.abs(got_boxes - want_boxes).max() <= 1.0


def test_demo_draws_the_converted_model(converted, tmp_path):
    written = demo.main(
        demo.get_parser().parse_args(
            [
                "--config-file",
                converted["yaml"],
                "--input",
                str(converted["folder"] / "photo_0.png"),
                "--output",
                str(tmp_path),
                "--opts",
                *GREEDY,
            ]
        )  # fmt: skip
    )
    assert len(written) == 1 and os.path.getsize(written[0]) > 0


def test_beam_search_with_the_grammar_and_the_beliefs_picture(converted):
    """Our own decoding on a converted model: grammar-constrained beam search gives well-formed
    objects of dataset classes only; beam width 1 is greedy; the beliefs picture draws."""
    cfg = load_config(
        converted["yaml"],
        ["MODEL.PIX2SEQ.DECODE.GRAMMAR", True, "MODEL.PIX2SEQ.MAX_OBJECTS_TEST", 5, "MODEL.DEVICE", "cpu"],
    )
    model = build_model(cfg).eval()
    Pix2SeqCheckpointer(model).load(converted["pth"])
    predictor = Pix2SeqPredictor.__new__(Pix2SeqPredictor)
    predictor.aug, predictor.input_format, predictor.model = _resize(cfg), "RGB", model
    inputs = [predictor.preprocess(converted["io"][f"raw_image_{i}"], format="RGB") for i in range(2)]
    tok = model.tokenizer
    greedy = dataclasses.replace(model.decoding, strategy="greedy")
    with torch.no_grad():
        beam = model.generate(inputs, dataclasses.replace(model.decoding, strategy="beam", beam_size=3))[0]
        beam1 = model.generate(inputs, dataclasses.replace(model.decoding, strategy="beam", beam_size=1))[0]
        plain = model.generate(inputs, greedy)[0]
    grammar = model.task.grammar(allow_eos=True)
    for seq in (beam, plain):
        for t in range(seq.tokens.shape[1]):
            allowed = grammar[t % model.task.tokens_per_object][seq.tokens[:, t]] | (seq.tokens[:, t] == tok.PAD)
            assert allowed.all()
    assert torch.equal(beam1.tokens, plain.tokens)
    assert (beam.token_logprobs.sum(-1) >= plain.token_logprobs.sum(-1) - 1e-4).any()
    beliefs = read_beliefs(model, inputs, options=greedy)
    figure = draw_beliefs(converted["io"]["raw_image_0"], beliefs[0])
    assert len(figure.axes) == 2 and beliefs[0].num_bins == tok.num_bins


def _resize(cfg):
    from pix2seq_d2.data.transforms import build_test_resize

    return build_test_resize(cfg)
