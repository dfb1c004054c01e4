#!/usr/bin/env python
"""How closely converted checkpoints reproduce their peers' outputs: one row per fixture case.

python tools/conversion_report.py [tests/fixtures/pix2seq_official]

For every case folder with an ``io.npz`` and a checkpoint (the official TF format or a
Pretrained-Pix2Seq ``checkpoint.pth``), converts the checkpoint, runs the converted model on the
case's inputs and prints, per stage, the largest absolute error divided by the reference's largest
magnitude, and whether the greedy tokens are identical. The tests (tests/test_conversion_*.py)
assert the same stages against a 1e-4 bar; this prints the numbers for docs/pretrained_models.md.
"""

from __future__ import annotations

import pix2seq_d2  # noqa: F401  (first: it keeps detectron2's import-time FutureWarnings off the console)

# isort: split

import argparse
import glob
import os
import sys
import time

import numpy as np
import torch
from detectron2.modeling import build_model
from detectron2.structures import ImageList

from pix2seq_d2.conversion import convert_checkpoint
from pix2seq_d2.modeling.decoding import decode
from pix2seq_d2.tasks import DecodingOptions

DEFAULT = os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests", "fixtures", "pix2seq_official"
)


def rel(ours: torch.Tensor, reference: np.ndarray) -> float:
    reference = torch.as_tensor(reference).double()
    return float((ours.detach().double().reshape(reference.shape) - reference).abs().max() / reference.abs().max())


def nchw(array: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(array)).permute(0, 3, 1, 2).float()


def report_case(folder: str) -> dict[str, object]:
    """Convert the case's checkpoint and compare every stage its ``io.npz`` holds."""
    pth = os.path.join(folder, "checkpoint.pth")
    source, path = ("pretrained_pix2seq", pth) if os.path.exists(pth) else ("official", folder)
    start = time.perf_counter()
    converted = convert_checkpoint(source, path)
    seconds = time.perf_counter() - start
    cfg = converted.config()
    cfg.MODEL.DEVICE = "cpu"
    model = build_model(cfg).eval()
    model.load_state_dict(converted.state_dict)
    io = dict(np.load(os.path.join(folder, "io.npz")))
    row: dict[str, object] = {"case": os.path.basename(folder), "convert s": f"{seconds:.2f}"}
    with torch.no_grad():
        if source == "official":
            x = nchw(io["images"])
            images = ImageList(x, [tuple(x.shape[-2:])] * len(x))
            feature = model.backbone(x)[model.in_feature]
            if "backbone_feature" in io:
                row["backbone"] = rel(feature.permute(0, 2, 3, 1), io["backbone_feature"])
            seq = io.get("tf_input_seq")
        else:
            samples = torch.from_numpy(io["samples"])
            images = ImageList(samples, [tuple(s) for s in io["size"].tolist()])
            row["backbone"] = rel(model.backbone(samples)[model.in_feature], io["backbone_feature"])
            seq = torch.cat(
                [torch.full((len(samples), 1), model.tokenizer.START), torch.from_numpy(io["tf_input_seq"])], 1
            )
        memory, pos, padding = model.encode(images)
        row["memory"] = rel(memory, io["memory"])
        if seq is not None:
            row["teacher-forced logits"] = rel(
                model.decoder(torch.as_tensor(seq), memory, pos, padding), io["tf_logits"]
            )
        reference = next(io[k] for k in ("greedy_tokens", "pred_seq") if k in io)
        steps = reference.shape[1]
        options = DecodingOptions(
            strategy="greedy",
            grammar=False,
            stop_at_eos=False,
            max_objects=-(-steps // model.task.tokens_per_object),
        )
        out = decode(model.decoder, model.task, memory, pos, padding, options, return_logits=True)
        row["greedy tokens"] = (
            f"{steps} identical" if torch.equal(out.tokens[:, :steps], torch.from_numpy(reference)) else "DIFFER"
        )
        head = next(k for k in ("greedy_logits", "greedy_logits_head", "logits_head") if k in io)
        row["step logits"] = rel(out.logits[:, : io[head].shape[1]], io[head])
    return row


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("fixtures", nargs="?", default=DEFAULT, help="folder of case folders (io.npz + checkpoint)")
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    folders = [os.path.dirname(p) for p in sorted(glob.glob(os.path.join(args.fixtures, "*", "io.npz")))]
    rows = [
        report_case(f)
        for f in folders
        if glob.glob(os.path.join(f, "ckpt-*.index")) or os.path.exists(os.path.join(f, "checkpoint.pth"))
    ]
    columns = ["case", "convert s", "backbone", "memory", "teacher-forced logits", "greedy tokens", "step logits"]
    print("| " + " | ".join(columns) + " |")
    print("|" + "---|" * len(columns))
    for row in rows:
        cells = [row.get(c, "-") for c in columns]
        print("| " + " | ".join(f"{c:.1e}" if isinstance(c, float) else str(c) for c in cells) + " |")
    return rows


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
