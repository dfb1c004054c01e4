"""Shared fixtures: a tiny Pix2Seq config and helpers that write real images to disk."""

from __future__ import annotations

import json
import os
import random

import numpy as np
import pytest
import torch
from detectron2.config import CfgNode, get_cfg
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets import register_coco_instances
from PIL import Image

from pix2seq_d2 import add_pix2seq_config

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
QUICKSTART_CONFIG = os.path.join(REPO_ROOT, "configs", "quickstart", "pix2seq_shapes.yaml")

torch.set_num_threads(min(2, torch.get_num_threads()))


@pytest.fixture(autouse=True)
def seed_everything():
    """Every test starts from the same RNG state."""
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)


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


@pytest.fixture
def two_images(tmp_path):
    """Two 80x120 (h x w) images on disk, registered as a COCO-format dataset (category ids
    1..3, as in a json file); yields the name and its detectron2 dataset dicts."""
    specs = [
        [(10, 8, 50, 40, 1), (70, 30, 110, 75, 2)],  # x0 y0 x1 y1 category_id
        [(30, 20, 90, 60, 3)],
    ]
    coco = {"images": [], "annotations": [], "categories": [{"id": i, "name": f"c{i}"} for i in (1, 2, 3)]}
    for image_id, objects in enumerate(specs, start=1):
        name = f"{image_id}.png"
        write_image(str(tmp_path / name), shapes_image(80, 120, [o[:4] for o in objects], seed=image_id))
        coco["images"].append({"id": image_id, "file_name": name, "height": 80, "width": 120})
        for x0, y0, x1, y1, category_id in objects:
            coco["annotations"].append({
                "id": len(coco["annotations"]) + 1, "image_id": image_id, "category_id": category_id,
                "bbox": [x0, y0, x1 - x0, y1 - y0], "area": (x1 - x0) * (y1 - y0), "iscrowd": 0,
            })  # fmt: skip
    json_file = tmp_path / "instances.json"
    json_file.write_text(json.dumps(coco))
    name = f"two_images_{tmp_path.name}"
    register_coco_instances(name, {}, str(json_file), str(tmp_path))
    yield name, DatasetCatalog.get(name)
    DatasetCatalog.remove(name)
    MetadataCatalog.remove(name)
