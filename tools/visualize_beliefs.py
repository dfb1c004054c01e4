#!/usr/bin/env python
"""A picture of what the model believes, per image: coordinate distributions and token probabilities.

    python tools/visualize_beliefs.py --config-file configs/quickstart/pix2seq_shapes.yaml \
        --input "datasets/pix2seq_shapes/shapes_val/0000[0-3].jpg" --output output/quickstart/beliefs \
        --opts MODEL.WEIGHTS output/quickstart/model_final.pth

Each image is decoded greedily. The left panel draws, for every predicted object, the
probability of each quantisation bin for its ``ymin``/``ymax`` (curves along the vertical
axis, left of the box; solid: min, dotted: max) and ``xmin``/``xmax`` (along the horizontal
axis, above the box); the right panel lists the generated tokens with their probabilities.
See pix2seq_d2/analysis/beliefs.py. ``--output`` is a folder (``<image name>_beliefs.png`` each) or a
``.png`` file for a single input.

Images are read like in training and in tools/demo.py (``pix2seq_d2.data.image_io.read_image_file``:
EXIF orientation, 16-bit scaled, alpha dropped). An image that cannot be read is logged with its name
and skipped; after the others are drawn the run fails with an error listing the skipped files
(``SkippedInputsError``: ``error: ...`` and exit status 1 on the command line, no traceback).
"""

from __future__ import annotations

import pix2seq_d2  # noqa: F401  (first: it keeps detectron2's import-time FutureWarnings off the console)

# isort: split

import argparse
import os
import sys

from demo import expand_inputs, finish_inputs, read_inputs
from detectron2.config import CfgNode
from detectron2.utils.logger import setup_logger
from tqdm import tqdm

from pix2seq_d2 import Pix2SeqPredictor
from pix2seq_d2.analysis.beliefs import draw_beliefs, read_beliefs
from pix2seq_d2.config import load_config
from pix2seq_d2.engine.launch import add_config_file_argument, run_command


def setup_cfg(config_file: str, opts: list[str]) -> CfgNode:
    cfg = load_config(config_file, opts)
    cfg.freeze()
    return cfg


def figure_path(output: str, image_path: str, num_inputs: int) -> str:
    """Where the picture of ``image_path`` goes: ``output`` itself (one input, ``.png``) or inside it."""
    if num_inputs == 1 and output.lower().endswith(".png"):
        os.makedirs(os.path.dirname(output) or ".", exist_ok=True)
        return output
    os.makedirs(output, exist_ok=True)
    return os.path.join(output, os.path.splitext(os.path.basename(image_path))[0] + "_beliefs.png")


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_file_argument(parser, required=True)
    parser.add_argument("--input", nargs="+", required=True, help="image files, folders or glob patterns")
    parser.add_argument("--output", required=True, help="output folder (or .png file, for a single input)")
    parser.add_argument("--max-objects", type=int, default=8, help="draw at most this many objects per image")
    parser.add_argument("--score-threshold", type=float, default=0.0, help="draw only objects scoring at least this")
    parser.add_argument("--dpi", type=int, default=100)
    parser.add_argument("--opts", default=[], nargs=argparse.REMAINDER, help="config overrides: KEY VALUE ...")
    return parser


def main(argv: list[str] | None = None) -> list[str]:
    """Write one PNG per input image; returns their paths. Unreadable images are skipped, then named in a
    ``SkippedInputsError`` once the others are written."""
    args = get_parser().parse_args(argv)
    setup_logger(name="fvcore")
    logger = setup_logger()
    predictor = Pix2SeqPredictor(setup_cfg(args.config_file, args.opts))
    class_names = predictor.metadata.get("thing_classes", None)
    paths = expand_inputs(args.input)
    written: list[str] = []
    skipped: dict[str, str] = {}
    for path, image in read_inputs(tqdm(paths, desc="beliefs", disable=len(paths) < 2), logger, skipped):
        beliefs = read_beliefs(predictor.model, [predictor.preprocess(image)], class_names)[0]
        figure = draw_beliefs(
            image[:, :, ::-1], beliefs, args.max_objects, args.score_threshold, title=os.path.basename(path)
        )
        target = figure_path(args.output, path, len(paths))
        figure.savefig(target, dpi=args.dpi)
        written.append(target)
    logger.info(f"wrote {len(written)} picture(s) to {args.output}")
    return finish_inputs(skipped, written, len(paths))


def cli(argv: list[str] | None = None) -> int:
    """The command line: ``main``; bad inputs and weights are ``error: ...`` and exit status 1."""
    return run_command(lambda: main(argv))


if __name__ == "__main__":
    sys.exit(cli())
