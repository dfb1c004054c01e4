#!/usr/bin/env python
"""COCO AP of one checkpoint under several decoding settings, side by side.

    python tools/compare_decoding.py --config-file configs/quickstart/pix2seq_shapes.yaml \
        --weights output/quickstart/model_final.pth

Each setting is a list of ``MODEL.PIX2SEQ.DECODE`` (or other) overrides; the defaults below
compare the strategies, the stopping rule (EOS, or a fixed MAX_OBJECTS_TEST objects) and the
two score definitions. Evaluation is the
standard ``COCOEvaluator`` on ``DATASETS.TEST``. Prints a markdown table.
"""

from __future__ import annotations

import pix2seq_d2  # noqa: F401  (first: it keeps detectron2's import-time FutureWarnings off the console)

# isort: split

import argparse
import time

from detectron2.utils.logger import setup_logger

from pix2seq_d2 import Pix2SeqTrainer
from pix2seq_d2.checkpoint import load_inference_weights
from pix2seq_d2.config import load_config
from pix2seq_d2.engine.launch import add_config_file_argument

D = "MODEL.PIX2SEQ.DECODE."
SETTINGS: dict[str, list] = {
    "greedy, stop at EOS, score=class": [],
    "greedy, stop at EOS, score=class_x_coords": [D + "SCORE", "class_x_coords"],
    "nucleus p=0.4, stop at EOS": [D + "STRATEGY", "sample", D + "TOP_P", 0.4, D + "SEED", 0],
    "beam 4, stop at EOS": [D + "STRATEGY", "beam", D + "BEAM_SIZE", 4],
    "greedy, fixed length, score=class": [D + "STOP_AT_EOS", False],
    "greedy, fixed length, score=class_x_coords": [D + "STOP_AT_EOS", False, D + "SCORE", "class_x_coords"],
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_file_argument(parser, required=True)
    parser.add_argument("--weights", required=True)
    parser.add_argument("--only", nargs="*", default=None, help="names of SETTINGS to run (default: all)")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="overrides applied to every setting")
    args = parser.parse_args()
    setup_logger(name="fvcore")
    setup_logger()
    rows = []
    for name, overrides in SETTINGS.items():
        if args.only and name not in args.only:
            continue
        cfg = load_config(args.config_file, args.opts + overrides + ["MODEL.WEIGHTS", args.weights])
        cfg.freeze()
        model = Pix2SeqTrainer.build_model(cfg)
        load_inference_weights(cfg, model)
        start = time.perf_counter()
        results = Pix2SeqTrainer.test(cfg, model)
        seconds = time.perf_counter() - start
        for dataset, metrics in results.items() if len(cfg.DATASETS.TEST) > 1 else [(cfg.DATASETS.TEST[0], results)]:
            bbox = metrics["bbox"]
            rows.append((name, dataset, bbox["AP"], bbox["AP50"], bbox["AP75"], seconds))
    print("\n| decoding | dataset | AP | AP50 | AP75 | eval seconds |\n|---|---|---|---|---|---|")
    for name, dataset, ap, ap50, ap75, seconds in rows:
        print(f"| {name} | {dataset} | {ap:.1f} | {ap50:.1f} | {ap75:.1f} | {seconds:.0f} |")


if __name__ == "__main__":
    main()
