"""Helpers shared by the tests: a tiny Pix2Seq config and functions that write real images and datasets to disk."""

from __future__ import annotations

import json
import os

import numpy as np
from detectron2.config import CfgNode, get_cfg
from PIL import Image

from pix2seq_d2 import add_pix2seq_config

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
QUICKSTART_CONFIG = os.path.join(REPO_ROOT, "configs", "quickstart", "pix2seq_shapes.yaml")


def tiny_cfg(*opts) -> CfgNode:
    """The quickstart config shrunk to a model that builds and trains in milliseconds."""
    cfg = get_cfg()
    add_pix2seq_config(cfg)
    cfg.merge_from_file(QUICKSTART_CONFIG)
    cfg.merge_from_list(
        [
            "MODEL.SMALL_RESNET.WIDTHS", [8, 16, 32, 64],
            "MODEL.SMALL_RESNET.STEM_OUT_CHANNELS", 8,
            "MODEL.PIX2SEQ.HIDDEN_DIM", 32,
            "MODEL.PIX2SEQ.NUM_HEADS", 4,
            "MODEL.PIX2SEQ.ENC_LAYERS", 1,
            "MODEL.PIX2SEQ.DEC_LAYERS", 1,
            "MODEL.PIX2SEQ.DIM_FEEDFORWARD", 64,
            "MODEL.PIX2SEQ.NUM_BINS", 64,
            "INPUT.MIN_SIZE_TRAIN", (64,),
            "INPUT.MAX_SIZE_TRAIN", 64,
            "INPUT.MIN_SIZE_TEST", 64,
            "INPUT.MAX_SIZE_TEST", 64,
        ]
    )  # fmt: skip
    cfg.merge_from_list(list(opts))
    return cfg


def write_image(path: str, array: np.ndarray, **save_kwargs) -> str:
    """Write an HxW (grayscale) or HxWx3 uint8 array as an image file; returns the path."""
    Image.fromarray(array).save(path, **save_kwargs)
    return path


def box_annotation(x0: float, y0: float, x1: float, y1: float, category_id: int = 0, **extra) -> dict:
    """A detectron2 annotation dict for an XYXY_ABS box."""
    from detectron2.structures import BoxMode

    return {"bbox": [x0, y0, x1, y1], "bbox_mode": BoxMode.XYXY_ABS, "category_id": category_id, **extra}


def shapes_image(h: int, w: int, boxes: list[tuple[int, int, int, int]], seed: int) -> np.ndarray:
    """Noise background with one solid, differently coloured rectangle per box."""
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 60, (h, w, 3), dtype=np.uint8)
    colors = [(250, 40, 40), (40, 250, 40), (40, 40, 250)]
    for i, (x0, y0, x1, y1) in enumerate(boxes):
        image[y0:y1, x0:x1] = colors[i % 3]
    return image


# (height, width) of the images of the tiny training set: both aspect-ratio groups.
TINY_SIZES = [(48, 64), (64, 48), (40, 40), (56, 64), (64, 56), (50, 70), (70, 50)]


def write_tiny_coco(root, sizes=TINY_SIZES, seed: int = 0) -> str:
    """Images with 1-2 coloured rectangles and their COCO json (category ids 1..3) under ``root``;
    returns the json's path (images are relative to ``root``)."""
    rng = np.random.default_rng(seed)
    os.makedirs(root, exist_ok=True)
    coco = {"images": [], "annotations": [], "categories": [{"id": i, "name": f"c{i}"} for i in (1, 2, 3)]}
    for image_id, (h, w) in enumerate(sizes, start=1):
        image = rng.integers(0, 60, (h, w, 3), dtype=np.uint8)
        for _ in range(int(rng.integers(1, 3))):
            bw, bh = int(rng.integers(8, w // 2)), int(rng.integers(8, h // 2))
            x0, y0 = int(rng.integers(0, w - bw)), int(rng.integers(0, h - bh))
            image[y0 : y0 + bh, x0 : x0 + bw] = rng.integers(120, 255, 3)
            coco["annotations"].append({
                "id": len(coco["annotations"]) + 1, "image_id": image_id, "category_id": int(rng.integers(1, 4)),
                "bbox": [x0, y0, bw, bh], "area": bw * bh, "iscrowd": 0,
            })  # fmt: skip
        name = f"{image_id:03d}.png"
        write_image(os.path.join(root, name), image)
        coco["images"].append({"id": image_id, "file_name": name, "height": h, "width": w})
    json_file = os.path.join(root, "instances.json")
    with open(json_file, "w") as f:
        json.dump(coco, f)
    return json_file


def detection_task(tokenizer, **kwargs):
    """The detection task over ``tokenizer`` with default decoding options (``kwargs``: DetectionTask's)."""
    from pix2seq_d2.tasks import DecodingOptions, DetectionTask

    return DetectionTask(tokenizer, DecodingOptions(), **kwargs)


def truncated_jpeg(path) -> str:
    """A JPEG file cut in half at ``path`` (a ``pathlib.Path``); returns its path."""
    write_image(str(path), np.random.default_rng(0).integers(0, 255, (40, 40, 3), dtype=np.uint8), quality=95)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return str(path)


def train_cfg(name: str, tmp_path, *opts) -> CfgNode:
    """The tiny config training 2 iterations on dataset ``name``, writing to ``tmp_path/out``."""
    return tiny_cfg(
        "DATASETS.TRAIN", (name,), "DATASETS.TEST", (), "SOLVER.IMS_PER_BATCH", 2, "SOLVER.MAX_ITER", 2,
        "OUTPUT_DIR", str(tmp_path / "out"), *opts,
    )  # fmt: skip
