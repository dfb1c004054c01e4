#!/usr/bin/env python
"""`make quickstart`: generate the shapes dataset, train Pix2Seq on the CPU, evaluate, draw predictions.

    python tools/quickstart.py [KEY VALUE ...]   # optional config overrides

Runs tools/train_net.py (training ends with COCOEvaluator on shapes_val; detectron2 writes
the numbers to OUTPUT_DIR/metrics.json), then tools/demo.py on a few validation images and
tools/plot_metrics.py (OUTPUT_DIR/metrics.png), and prints a summary that is also saved as
OUTPUT_DIR/quickstart_summary.json.
"""

from __future__ import annotations

import pix2seq_d2  # noqa: F401  (first: it keeps detectron2's import-time FutureWarnings off the console)

# isort: split

import json
import os
import subprocess
import sys
import time

from pix2seq_d2.config import load_config
from pix2seq_d2.data.datasets.shapes import shapes_split_paths

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = os.path.join(REPO_ROOT, "configs", "quickstart", "pix2seq_shapes.yaml")
NUM_PICTURES = 8


def final_metrics(output_dir: str) -> dict:
    """The last metrics.json record with COCO numbers (written after the final evaluation)."""
    with open(os.path.join(output_dir, "metrics.json")) as f:
        records = [json.loads(line) for line in f if line.strip()]
    evaluated = [r for r in records if "bbox/AP" in r]
    if not evaluated:
        raise RuntimeError(f"no bbox/AP in {output_dir}/metrics.json: did the final evaluation run?")
    return evaluated[-1]


def main(opts: list[str]) -> dict:
    cfg = load_config(CONFIG, opts)
    output_dir = cfg.OUTPUT_DIR
    start = time.time()
    subprocess.run([sys.executable, os.path.join(REPO_ROOT, "tools", "train_net.py"), "--config-file", CONFIG, *opts],
                   check=True)  # fmt: skip
    train_eval_seconds = time.time() - start

    _, image_root = shapes_split_paths(os.path.join(os.getenv("DETECTRON2_DATASETS", "datasets"), "pix2seq_shapes"),
                                       cfg.DATASETS.TEST[0])  # fmt: skip
    pictures = sorted(os.listdir(image_root))[:NUM_PICTURES]
    subprocess.run(
        [sys.executable, os.path.join(REPO_ROOT, "tools", "demo.py"), "--config-file", CONFIG,
         "--input", *[os.path.join(image_root, p) for p in pictures],
         "--output", os.path.join(output_dir, "predictions"),
         "--opts", *opts, "MODEL.WEIGHTS", os.path.join(output_dir, "model_final.pth")],
        check=True,
    )  # fmt: skip
    curves = os.path.join(output_dir, "metrics.png")
    plot = [sys.executable, os.path.join(REPO_ROOT, "tools", "plot_metrics.py"), output_dir, "--output", curves]
    subprocess.run(plot, check=True)
    metrics = final_metrics(output_dir)
    summary = {
        "config": os.path.relpath(CONFIG, REPO_ROOT),
        "overrides": opts,
        "iterations": cfg.SOLVER.MAX_ITER,
        "train_and_eval_seconds": round(train_eval_seconds, 1),
        "total_seconds": round(time.time() - start, 1),
        **{k.split("/")[1]: round(v, 2) for k, v in metrics.items() if k.startswith(("bbox/AP", "bbox/AR"))},
        **{k: round(v, 3) for k, v in metrics.items() if k.startswith("seq_likelihood/")},
        "predictions": os.path.join(output_dir, "predictions"),
        "training_curves": curves,
    }
    with open(os.path.join(output_dir, "quickstart_summary.json"), "w") as f:
        json.dump(summary, f, indent=2)
    print("\n=== quickstart summary ===")
    for key, value in summary.items():
        print(f"{key:>24}: {value}")
    return summary


if __name__ == "__main__":
    main(sys.argv[1:])
