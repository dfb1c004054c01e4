#!/usr/bin/env python
"""Export a Pix2Seq model to TorchScript and/or ONNX, and check the ONNX export against PyTorch.

    python tools/export_model.py --config-file configs/quickstart/pix2seq_shapes.yaml --output export/ \\
        MODEL.WEIGHTS output/quickstart/model_final.pth
    python tools/export_model.py --config-file configs/quickstart/pix2seq_shapes.yaml --output export/ \\
        --format onnx --onnx-exporter legacy --verify --verify-images 50 MODEL.WEIGHTS output/quickstart/model_final.pth

Writes ``encoder.{ts,onnx}`` and ``step.{ts,onnx}`` to ``--output`` (their inputs and outputs:
pix2seq_d2/export/exporter.py). Images are padded to a fixed square, ``MODEL.PIX2SEQ.PAD_TO_SQUARE`` or else
``INPUT.MAX_SIZE_TEST`` (rounded up to the backbone's size divisibility); batch size and decoded
length stay free. ONNX files come from ``torch.onnx.export(dynamo=True)`` by default
(``--onnx-exporter legacy``: the deprecated TorchScript-based exporter, same outputs, much faster).
Without ``MODEL.WEIGHTS`` the model is exported at random weights. The model is built and exported
on the CPU (``MODEL.DEVICE`` is set to cpu). Config overrides go last, after the other flags.

``--verify`` decodes images of a registered dataset (``--dataset``, default ``DATASETS.TEST[0]``)
with :class:`~pix2seq_d2.export.exporter.OnnxPix2SeqRunner` and with the PyTorch model, greedily (the runner
decodes greedily only: add ``MODEL.PIX2SEQ.DECODE.STRATEGY greedy`` for a config that samples), and
prints how many images got identical tokens and the largest box and score differences.
"""

from __future__ import annotations

import pix2seq_d2  # noqa: F401  (first: it keeps detectron2's import-time FutureWarnings off the console)

# isort: split

import argparse
import os
import sys
import time

import torch
from detectron2.config import CfgNode
from detectron2.data import DatasetCatalog

from pix2seq_d2.config import load_config
from pix2seq_d2.data.dataset_mapper import Pix2SeqDatasetMapper
from pix2seq_d2.engine.launch import add_config_file_argument, run_command
from pix2seq_d2.engine.predictor import Pix2SeqPredictor
from pix2seq_d2.export.exporter import (
    ONNX_EXPORTERS,
    OnnxPix2SeqRunner,
    export_image_size,
    export_onnx,
    export_torchscript,
    greedy_decoding_options,
)
from pix2seq_d2.modeling.meta_arch.pix2seq import Pix2Seq

FORMATS = ("torchscript", "onnx")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_file_argument(parser, required=True)
    parser.add_argument("--output", required=True, metavar="DIR", help="folder for the exported files")
    parser.add_argument("--format", nargs="+", choices=FORMATS, default=list(FORMATS))
    parser.add_argument("--onnx-exporter", choices=ONNX_EXPORTERS, default="dynamo",
                        help="torch.onnx.export(dynamo=True) or the legacy TorchScript-based one")  # fmt: skip
    parser.add_argument("--verify", action="store_true", help="compare the ONNX runner with the PyTorch model")
    parser.add_argument("--dataset", default="", help="registered dataset to verify on (default: DATASETS.TEST[0])")
    parser.add_argument("--verify-images", type=int, default=20, help="images to verify on (0: all)")
    parser.add_argument("--batch-size", type=int, default=4, help="images per batch when verifying")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides: KEY VALUE ...")
    args = parser.parse_args(argv)
    if args.verify and "onnx" not in args.format:
        parser.error("--verify checks the ONNX export: add onnx to --format")
    return args


def same_rows(a: torch.Tensor, b: torch.Tensor, pad: int) -> torch.Tensor:
    """bool ``[B]``: rows of token tensors ``[B, Ta]`` and ``[B, Tb]`` that are equal once both are PAD-padded."""
    length = max(a.shape[1], b.shape[1])
    a, b = (torch.nn.functional.pad(x, (0, length - x.shape[1]), value=pad) for x in (a, b))
    return (a == b).all(1)


@torch.no_grad()
def verify(cfg: CfgNode, model: Pix2Seq, runner: OnnxPix2SeqRunner, dataset: str, num_images: int, batch: int) -> dict:
    """Decode ``num_images`` images of ``dataset`` with both; -> counts and largest differences."""
    mapper = Pix2SeqDatasetMapper(cfg, is_train=False, use_annotations=False)
    dicts = DatasetCatalog.get(dataset)
    dicts = dicts[:num_images] if num_images > 0 else dicts
    same_tokens, box_diff, score_diff, count_mismatch, padded_differently = 0, 0.0, 0.0, 0, 0
    for start in range(0, len(dicts), batch):
        inputs = [mapper(d) for d in dicts[start : start + batch]]
        expected, images = model.generate(inputs)
        got, onnx_images = runner.generate(inputs)
        padded_differently += int(images.tensor.shape[-2:] != onnx_images.tensor.shape[-2:])
        same_tokens += int(same_rows(expected.tokens, got.tokens, model.tokenizer.PAD).sum())
        outputs = zip(model.outputs(inputs, expected, images), runner.outputs(inputs, got, onnx_images))
        for a, b in ((a["instances"], b["instances"]) for a, b in outputs):
            if len(a) != len(b):
                count_mismatch += 1
            elif len(a):
                box_diff = max(box_diff, float((a.pred_boxes.tensor - b.pred_boxes.tensor).abs().max()))
                score_diff = max(score_diff, float((a.scores - b.scores).abs().max()))
    report = {"images": len(dicts), "identical_tokens": same_tokens, "max_box_diff": box_diff,
              "max_score_diff": score_diff, "detection_count_mismatches": count_mismatch}  # fmt: skip
    print(f"verify on {dataset}: {same_tokens}/{len(dicts)} images with identical tokens; max box difference "
          f"{box_diff:.4g} px, max score difference {score_diff:.3g}; {count_mismatch} images with a different "
          "number of detections")  # fmt: skip
    if padded_differently:
        print(f"  note: {padded_differently} PyTorch batches were padded to another size than the export's "
              f"{runner.image_size}x{runner.image_size} square (set MODEL.PIX2SEQ.PAD_TO_SQUARE {runner.image_size} "
              "to pad alike); small differences there are expected")  # fmt: skip
    return report


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    cfg = load_config(args.config_file, [*args.opts, "MODEL.DEVICE", "cpu"])  # exported and verified on the CPU
    predictor = Pix2SeqPredictor(cfg)  # checks the config, builds the model, loads MODEL.WEIGHTS, eval mode
    cfg, model = predictor.cfg, predictor.model
    dataset = ""
    if args.verify:  # before exporting: what the verification needs
        greedy_decoding_options(cfg)
        dataset = args.dataset or (cfg.DATASETS.TEST[0] if len(cfg.DATASETS.TEST) else "")
        if dataset not in DatasetCatalog.list():
            sys.exit(f"error: --dataset {dataset!r} is not a registered dataset (set --dataset or DATASETS.TEST)")
    if not cfg.MODEL.WEIGHTS:
        print("MODEL.WEIGHTS is empty: exporting the model at random weights")
    size = export_image_size(cfg, model)
    os.makedirs(args.output, exist_ok=True)
    files = {}
    for fmt in args.format:
        start = time.perf_counter()
        if fmt == "onnx":
            files[fmt] = export_onnx(model, args.output, size, exporter=args.onnx_exporter)
        else:
            files[fmt] = export_torchscript(model, args.output, size)
        print(f"{fmt}: {', '.join(files[fmt])} ({size}x{size} images, {time.perf_counter() - start:.1f} s)")
    result = {"files": files, "image_size": size}
    if args.verify:
        runner = OnnxPix2SeqRunner(cfg, *files["onnx"])
        result["verify"] = verify(cfg, model, runner, dataset, args.verify_images, args.batch_size)
    return result


if __name__ == "__main__":
    sys.exit(run_command(main))
