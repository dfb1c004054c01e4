#!/usr/bin/env python
"""Draw Pix2Seq predictions on images with detectron2's Visualizer.

    python tools/demo.py --config-file configs/quickstart/pix2seq_shapes.yaml \
        --input "datasets/pix2seq_shapes/shapes_val/00000*.jpg" --output output/quickstart/predictions \
        --opts MODEL.WEIGHTS output/quickstart/model_final.pth

``--input`` takes files, folders and glob patterns; ``--output`` is a folder, or a file
name when there is a single input.
"""

from __future__ import annotations

import argparse
import glob
import logging
import os

from detectron2.config import CfgNode, get_cfg
from detectron2.data import MetadataCatalog
from detectron2.data.detection_utils import read_image
from detectron2.engine import DefaultPredictor
from detectron2.utils.logger import setup_logger
from detectron2.utils.visualizer import Visualizer
from tqdm import tqdm

from pix2seq_d2 import add_pix2seq_config

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")


def setup_cfg(args: argparse.Namespace) -> CfgNode:
    cfg = get_cfg()
    add_pix2seq_config(cfg)
    cfg.merge_from_file(args.config_file)
    cfg.merge_from_list(args.opts)
    cfg.freeze()
    return cfg


def expand_inputs(patterns: list[str]) -> list[str]:
    """Files, folders (their images, sorted) and glob patterns -> image paths."""
    paths = []
    for pattern in patterns:
        if os.path.isdir(pattern):
            names = sorted(os.listdir(pattern))
            paths += [os.path.join(pattern, n) for n in names if n.lower().endswith(IMAGE_EXTENSIONS)]
        elif any(ch in pattern for ch in "*?["):
            paths += sorted(glob.glob(pattern))
        elif os.path.isfile(pattern):
            paths.append(pattern)
        else:
            raise FileNotFoundError(f"--input {pattern!r} is neither a file, a folder nor a glob pattern that matches")
    if not paths:
        raise FileNotFoundError(f"no images found for --input {patterns}")
    return paths


def output_path(output: str, image_path: str, num_inputs: int) -> str:
    if num_inputs == 1 and os.path.splitext(output)[1].lower() in IMAGE_EXTENSIONS:
        os.makedirs(os.path.dirname(output) or ".", exist_ok=True)
        return output
    os.makedirs(output, exist_ok=True)
    return os.path.join(output, os.path.basename(image_path))


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config-file", required=True, metavar="FILE")
    parser.add_argument("--input", nargs="+", required=True, help="image files, folders or glob patterns")
    parser.add_argument("--output", required=True, help="output folder (or file, for a single input)")
    parser.add_argument("--confidence-threshold", type=float, default=0.5, help="minimum score to draw")
    parser.add_argument(
        "--min-output-size", type=int, default=480, help="draw small images enlarged to this longest side (px)"
    )
    parser.add_argument("--opts", default=[], nargs=argparse.REMAINDER, help="config overrides: KEY VALUE ...")
    return parser


def main(args: argparse.Namespace) -> list[str]:
    setup_logger(name="fvcore")
    logger = setup_logger()
    cfg = setup_cfg(args)
    predictor = DefaultPredictor(cfg)
    metadata = MetadataCatalog.get(cfg.DATASETS.TEST[0] if cfg.DATASETS.TEST else "__unused")
    paths = expand_inputs(args.input)
    written = []
    for path in tqdm(paths, desc="demo", disable=len(paths) < 2):
        image = read_image(path, format="BGR")
        instances = predictor(image)["instances"].to("cpu")
        instances = instances[instances.scores >= args.confidence_threshold]
        scale = max(1.0, args.min_output_size / max(image.shape[:2]))
        drawing = Visualizer(image[:, :, ::-1], metadata, scale=scale).draw_instance_predictions(instances)
        target = output_path(args.output, path, len(paths))
        drawing.save(target)
        written.append(target)
        logger.log(logging.DEBUG, f"{path}: {len(instances)} detections -> {target}")
    logger.info(f"wrote {len(written)} picture(s) to {args.output}")
    return written


if __name__ == "__main__":
    main(get_parser().parse_args())
