#!/usr/bin/env python
"""Per position of the generated sequence: how often a model emits an object there, finds a new
ground-truth object, or repeats one it already found (see pix2seq_d2/analysis/positions.py).

    python tools/analyze_positions.py --config-file configs/quickstart/pix2seq_shapes_dense.yaml \
        --weights output/quickstart_dense/model_final.pth [MODEL.PIX2SEQ.DECODE.STOP_AT_EOS False]

Runs on the first dataset of ``DATASETS.TEST`` with the config's decoding; prints a markdown
table (and writes it as json with ``--output``).
"""

from __future__ import annotations

import pix2seq_d2  # noqa: F401  (first: it keeps detectron2's import-time FutureWarnings off the console)

# isort: split

import argparse
import json

import torch
from detectron2.data import DatasetCatalog, build_detection_test_loader
from detectron2.structures import BoxMode
from detectron2.utils.logger import setup_logger

from pix2seq_d2 import Pix2SeqDatasetMapper, Pix2SeqTrainer
from pix2seq_d2.analysis.positions import PositionStats
from pix2seq_d2.checkpoint import load_inference_weights
from pix2seq_d2.config import load_config
from pix2seq_d2.engine.launch import add_config_file_argument


def ground_truth_by_file(dataset_name: str) -> dict[str, torch.Tensor]:
    """file_name -> ``[G, 4]`` XYXY boxes of its non-crowd annotations (original image coordinates)."""
    out = {}
    for record in DatasetCatalog.get(dataset_name):
        boxes = [
            BoxMode.convert(a["bbox"], a["bbox_mode"], BoxMode.XYXY_ABS)
            for a in record.get("annotations", [])
            if not a.get("iscrowd", 0)
        ]
        out[record["file_name"]] = torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4)
    return out


@torch.no_grad()
def analyze(cfg, model, iou_thresh: float = 0.5) -> PositionStats:
    dataset_name = cfg.DATASETS.TEST[0]
    ground_truth = ground_truth_by_file(dataset_name)
    mapper = Pix2SeqDatasetMapper(cfg, is_train=False, use_annotations=False)
    loader = build_detection_test_loader(cfg, dataset_name, mapper=mapper)
    stats = PositionStats(cfg.MODEL.PIX2SEQ.MAX_OBJECTS_TEST, iou_thresh)
    for batch in loader:
        sequences, images = model.generate(batch)
        sizes = torch.tensor(images.image_sizes, device=model.device)  # [B, 2] (h, w) as the model saw them
        objects = model.task.decode_objects(
            sequences.tokens,
            sequences.token_logprobs,
            sequences.records["class_logprobs"],
            sizes,
            model.task.score_mode,
        )
        for i, x in enumerate(batch):
            (h, w), boxes = images.image_sizes[i], objects.boxes[i].cpu()
            boxes = boxes * torch.tensor([x["width"] / w, x["height"] / h] * 2)  # to original coordinates
            stats.add(boxes, ground_truth[x["file_name"]], objects.valid[i])
    return stats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_file_argument(parser, required=True)
    parser.add_argument("--weights", required=True)
    parser.add_argument("--iou", type=float, default=0.5, help="IoU for a prediction to match a ground-truth box")
    parser.add_argument("--output", default="", help="also write the rows as json here")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides KEY VALUE ...")
    args = parser.parse_args()
    setup_logger(name="pix2seq_d2")
    cfg = load_config(args.config_file, args.opts + ["MODEL.WEIGHTS", args.weights])
    cfg.freeze()
    model = Pix2SeqTrainer.build_model(cfg)
    load_inference_weights(cfg, model)
    model.eval()
    stats = analyze(cfg, model, args.iou)
    print(f"{cfg.DATASETS.TEST[0]}: {stats.images} images, IoU >= {args.iou}")
    print("| position | has an object | new object found | repeats a found one |")
    print("|---|---|---|---|")
    for row in stats.rows():
        print(f"| {row['position']} | {row['emitted']:.3f} | {row['new']:.3f} | {row['repeated']:.3f} |")
    if args.output:
        with open(args.output, "w") as f:
            json.dump(stats.rows(), f, indent=2)


if __name__ == "__main__":
    main()
