#!/usr/bin/env python
"""Detections from a COCO results json drawn over the dataset's images: prediction next to ground truth.

    python tools/visualize_json_results.py --input output/inference/shapes_val/coco_instances_results.json \
        --dataset shapes_val --output output/vis --conf-threshold 0.5
    python tools/visualize_json_results.py --config-file configs/my_data.yaml --dataset mydata_val \
        --input output/inference/mydata_val/coco_instances_results.json --output output/vis

The json is a COCO results file (``COCOEvaluator`` writes ``coco_instances_results.json``; a list of
``{"image_id", "category_id", "bbox": [x, y, w, h], "score"}``). ``--config-file`` (and ``KEY VALUE``
overrides) registers the config's ``DATASETS.COCO`` datasets; the embedded ``shapes_*`` datasets need
none. Each image of ``--dataset`` (the first ``--max-images``) is written as ``<image file name>``:
the predictions scoring above ``--conf-threshold`` on the left, the ground truth on the right, drawn
with detectron2's ``Visualizer``.

A file that is not a results json (unreadable, not json, not a list, an entry without a numeric
``bbox`` of 4, a ``score``, an ``image_id`` or a ``category_id``) is an error naming the file and
the entry; an entry whose image or category is not in the dataset is skipped with a warning naming
it (all of them skipped: an error, the json is for another dataset).
"""

from __future__ import annotations

import pix2seq_d2  # noqa: F401  (first: it keeps detectron2's import-time FutureWarnings off the console)

# isort: split

import argparse
import json
import logging
import math
import os
import sys
from collections import defaultdict
from collections.abc import Callable

import numpy as np
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.structures import Boxes, BoxMode, Instances
from detectron2.utils.visualizer import Visualizer
from PIL import Image

from pix2seq_d2.config import load_config, prepare_config
from pix2seq_d2.data.image_io import read_image_file
from pix2seq_d2.engine.launch import add_config_file_argument, run_tool
from pix2seq_d2.utils.errors import UserError

logger = logging.getLogger("pix2seq_d2.tools.visualize_json_results")

_MAX_WARNED = 10  # skipped entries warned one by one


class ResultsJsonError(UserError, ValueError):
    """A results json that cannot be drawn; the message names the file and the entry."""


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--input", required=True, help="COCO results json (e.g. coco_instances_results.json)")
    parser.add_argument("--output", required=True, help="output folder")
    parser.add_argument("--dataset", required=True, help="registered dataset the results are for")
    parser.add_argument("--conf-threshold", type=float, default=0.5, help="draw predictions scoring above this")
    parser.add_argument("--max-images", type=int, default=0, help="draw at most this many images (0: all)")
    parser.add_argument("--scale", type=float, default=1.0, help="drawing scale (small images: 2-4)")
    add_config_file_argument(parser, help="config whose DATASETS.COCO datasets to register (path or shipped name)")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides: KEY VALUE ...")
    return parser


# ---- reading the results -------------------------------------------------------------------------
def read_results(path: str) -> list[dict]:
    """The entries of a results json; every entry checked for the keys and types drawing needs."""
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except OSError as e:
        raise ResultsJsonError(f"cannot read results json {path}: {e.strerror or e}") from e
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ResultsJsonError(f"results json {path} is not json: {e}") from e
    if not isinstance(data, list):
        hint = " (a dataset annotation file? a results json is a list of detections)" if isinstance(data, dict) else ""
        raise ResultsJsonError(f"results json {path}: the top level is a {type(data).__name__}, not a list{hint}")
    for position, entry in enumerate(data):
        problem = _entry_problem(entry)
        if problem:
            raise ResultsJsonError(f"results json {path}, entry #{position} ({_excerpt(entry)}): {problem}")
    return data


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _entry_problem(entry) -> str | None:
    if not isinstance(entry, dict):
        return "not an object; expected {image_id, category_id, bbox, score}"
    missing = [key for key in ("image_id", "category_id", "bbox", "score") if key not in entry]
    if missing:
        return f"no {', '.join(missing)}"
    bbox = entry["bbox"]
    if not (isinstance(bbox, list) and len(bbox) == 4 and all(_is_number(v) for v in bbox)):
        return "bbox is not a list of 4 finite numbers [x, y, width, height]"
    if not _is_number(entry["score"]):
        return "score is not a finite number"
    return None


def _excerpt(entry, limit: int = 80) -> str:
    text = json.dumps(entry) if isinstance(entry, (dict, list)) else repr(entry)
    return text if len(text) <= limit else text[: limit - 3] + "..."


# ---- matching them to the dataset -----------------------------------------------------------------
def category_mapping(metadata) -> Callable[[object], int | None]:
    """Dataset category id -> contiguous class id (None: unknown), from the dataset's metadata
    (``thing_dataset_id_to_contiguous_id``; without it the ids are the contiguous ids themselves)."""
    mapping = metadata.get("thing_dataset_id_to_contiguous_id", None)
    if mapping is not None:
        return lambda category_id: mapping.get(category_id)
    num_classes = len(metadata.get("thing_classes", []))
    return lambda category_id: category_id if isinstance(category_id, int) and 0 <= category_id < num_classes else None


def group_by_image(results: list[dict], dicts: list[dict], metadata, path: str) -> dict:
    """image_id -> its entries with ``class_id`` added; entries of unknown images or categories skipped
    (warned, naming the entry); an error when nothing is left."""
    image_ids = {d["image_id"] for d in dicts}
    to_class = category_mapping(metadata)
    grouped: dict = defaultdict(list)
    skipped = 0
    for position, entry in enumerate(results):
        class_id = to_class(entry["category_id"])
        reason = None
        if entry["image_id"] not in image_ids:
            reason = f"image_id {entry['image_id']!r} is no image of the dataset"
        elif class_id is None:
            reason = f"category_id {entry['category_id']!r} is no category of the dataset"
        if reason:
            skipped += 1
            if skipped <= _MAX_WARNED:
                logger.warning(f"{path}: skipping entry #{position} ({_excerpt(entry)}): {reason}")
            continue
        grouped[entry["image_id"]].append({**entry, "class_id": class_id})
    if skipped:
        logger.warning(f"{path}: skipped {skipped} of {len(results)} entries (unknown image or category)")
    if results and skipped == len(results):
        raise ResultsJsonError(f"results json {path}: none of its {len(results)} entries is for an image and category "
                               "of this dataset: is it the results of another dataset?")  # fmt: skip
    return grouped


def predictions(entries: list[dict], image_hw: tuple[int, int], threshold: float) -> Instances:
    """The entries scoring above ``threshold`` as detectron2 ``Instances`` (boxes XYXY)."""
    chosen = [e for e in entries if e["score"] > threshold]
    boxes = np.asarray([e["bbox"] for e in chosen], dtype=np.float64).reshape(-1, 4)
    instances = Instances(image_hw)
    instances.pred_boxes = Boxes(BoxMode.convert(boxes, BoxMode.XYWH_ABS, BoxMode.XYXY_ABS))
    instances.scores = np.asarray([e["score"] for e in chosen])
    instances.pred_classes = np.asarray([e["class_id"] for e in chosen], dtype=np.int64)
    return instances


def draw(record: dict, entries: list[dict], metadata, threshold: float, scale: float = 1.0) -> np.ndarray:
    """Prediction | ground truth, side by side (RGB)."""
    image = read_image_file(record["file_name"], "RGB")
    prediction = Visualizer(image, metadata, scale=scale).draw_instance_predictions(
        predictions(entries, image.shape[:2], threshold)
    )
    truth = Visualizer(image, metadata, scale=scale).draw_dataset_dict(record)
    return np.concatenate([prediction.get_image(), truth.get_image()], axis=1)


def main(argv: list[str] | None = None) -> list[str]:
    """Draw every image (up to ``--max-images``) of ``--dataset``; returns the written paths."""
    args = get_parser().parse_args(argv)
    if args.config_file:
        prepare_config(load_config(args.config_file, args.opts), for_training=False)
    if args.dataset not in DatasetCatalog:
        raise ResultsJsonError(f"dataset {args.dataset!r} is not registered (DATASETS.COCO of a --config-file "
                               "registers yours)")  # fmt: skip
    results = read_results(args.input)
    dicts = DatasetCatalog.get(args.dataset)
    metadata = MetadataCatalog.get(args.dataset)
    grouped = group_by_image(results, dicts, metadata, args.input)
    os.makedirs(args.output, exist_ok=True)
    written = []
    for record in dicts[: args.max_images or None]:
        path = os.path.join(args.output, os.path.basename(record["file_name"]))
        drawing = draw(record, grouped.get(record["image_id"], []), metadata, args.conf_threshold, args.scale)
        Image.fromarray(drawing).save(path)
        written.append(path)
    logger.info(f"drew {len(written)} images of {args.dataset} (prediction | ground truth) in {args.output}")
    return written


def cli(argv: list[str] | None = None) -> int:
    """The command line: console logging, ``main``; a bad results json is ``error: ...`` and exit status 1."""
    return run_tool(main, argv)


if __name__ == "__main__":
    sys.exit(cli())
