"""Shared fixtures: every test starts from seeded RNGs; a two-image COCO dataset on disk."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
import torch
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets import register_coco_instances

from tests.helpers import shapes_image, write_image, write_tiny_coco

torch.set_num_threads(min(2, torch.get_num_threads()))


@pytest.fixture(autouse=True)
def seed_everything():
    """Every test starts from the same RNG state."""
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)


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


@pytest.fixture
def registered(tmp_path):
    """Registers a COCO json (edited by the test) as a dataset; yields (name, json dict, write)."""
    json_file = write_tiny_coco(str(tmp_path / "data"), sizes=[(40, 48), (48, 40), (40, 40)])
    with open(json_file) as f:
        coco = json.load(f)
    name = f"registered_{tmp_path.name}"
    register_coco_instances(name, {}, json_file, str(tmp_path / "data"))

    def write(new: dict) -> None:
        with open(json_file, "w") as f:
            json.dump(new, f)

    yield name, coco, write, json_file
    DatasetCatalog.remove(name)
    MetadataCatalog.remove(name)
