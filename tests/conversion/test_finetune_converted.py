"""Fine-tuning a converted official checkpoint on a user's own COCO-format dataset, as
``configs/official/finetune_mydata.yaml`` describes: the converted ``OUT.yaml`` + the dataset's
``NUM_CLASSES`` / ``CATEGORY_IDS`` (non-contiguous json ids 1, 3, 7), the official vocabulary layout
kept (class token = 100 + category id), trained with ``tools/train_net.py``'s ``main`` in-process.

The fixture checkpoint has random weights at tiny sizes (image size 128): the test proves the
plumbing (weights loaded, loss going down, checkpoint reloads, official tokens, COCO evaluation),
not accuracy.
"""

from __future__ import annotations

import json
import os
import sys

import numpy as np
import pytest
import torch
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets import register_coco_instances
from detectron2.engine import default_argument_parser
from detectron2.modeling import build_model

from pix2seq_d2 import Pix2SeqDatasetMapper
from pix2seq_d2.checkpoint import Pix2SeqCheckpointer
from pix2seq_d2.config import load_config
from pix2seq_d2.conversion import convert_checkpoint, write_converted
from tests.helpers import REPO_ROOT, write_image
from tests.helpers.peer_fixtures import cases

sys.path.insert(0, os.path.join(REPO_ROOT, "tools"))
import train_net  # noqa: E402

CASE = cases("e2e")[0]
CATEGORY_IDS = [1, 3, 7]  # a real user's json: non-contiguous ids
MAX_ITER = 40  # metrics.json gets a row every 20 iterations (median of the last 20): two disjoint windows
FROZEN_BN = "backbone.stem.conv1.norm.running_mean"  # a FrozenBN buffer: training never changes it
STEM_CONV = "backbone.stem.conv1.weight"  # a trained parameter


def _write_split(folder, name: str, num_images: int, seed: int) -> str:
    """``num_images`` noise images (96..160 px sides) with 1-3 bright rectangles of classes 1/3/7,
    written as PNG + a COCO json; registered as ``name`` (re-registered if it exists)."""
    rng = np.random.default_rng(seed)
    colors = {1: (250, 40, 40), 3: (40, 250, 40), 7: (40, 40, 250)}
    coco = {
        "images": [],
        "annotations": [],
        "categories": [{"id": c, "name": f"class_{c}"} for c in CATEGORY_IDS],
    }
    for image_id in range(1, num_images + 1):
        h, w = (int(s) for s in rng.integers(96, 161, size=2))
        image = rng.integers(0, 60, (h, w, 3), dtype=np.uint8)
        for _ in range(int(rng.integers(1, 4))):
            category_id = int(rng.choice(CATEGORY_IDS))
            bw, bh = int(rng.integers(w // 5, w // 2)), int(rng.integers(h // 5, h // 2))
            x0, y0 = int(rng.integers(0, w - bw)), int(rng.integers(0, h - bh))
            image[y0 : y0 + bh, x0 : x0 + bw] = colors[category_id]
            coco["annotations"].append({
                "id": len(coco["annotations"]) + 1, "image_id": image_id, "category_id": category_id,
                "bbox": [x0, y0, bw, bh], "area": bw * bh, "iscrowd": 0,
            })  # fmt: skip
        file_name = f"{name}_{image_id}.png"
        write_image(str(folder / file_name), image)
        coco["images"].append({"id": image_id, "file_name": file_name, "height": h, "width": w})
    json_file = folder / f"{name}.json"
    json_file.write_text(json.dumps(coco))
    _unregister(name)
    register_coco_instances(name, {}, str(json_file), str(folder))
    return name


def _unregister(name: str) -> None:
    if name in DatasetCatalog.list():
        DatasetCatalog.remove(name)
    if name in MetadataCatalog.list():
        MetadataCatalog.remove(name)


def _opts(train: str, test: str, output_dir) -> list:
    """What a user adds to the converted yaml, following finetune_mydata.yaml (small and fast here)."""
    return [
        "MODEL.PIX2SEQ.NUM_CLASSES", len(CATEGORY_IDS),
        "MODEL.PIX2SEQ.TOKENIZER.CATEGORY_IDS", CATEGORY_IDS,
        "DATASETS.TRAIN", (train,),
        "DATASETS.TEST", (test,),
        "MODEL.DEVICE", "cpu",
        "MODEL.PIX2SEQ.DECODE.STRATEGY", "greedy",
        # Decoding only: 40 iterations from random weights teach the model mostly the NOISE token (most
        # training objects are noise), so without the grammar the generated "coordinates" are NOISE tokens,
        # every box is empty and COCO AP is NaN. The grammar keeps coordinates at coordinate slots.
        "MODEL.PIX2SEQ.DECODE.GRAMMAR", True,
        "MODEL.PIX2SEQ.MAX_OBJECTS_TEST", 5,
        "SOLVER.IMS_PER_BATCH", 2,
        "SOLVER.MAX_ITER", MAX_ITER,
        "SOLVER.WARMUP_ITERS", 2,
        "SOLVER.BASE_LR", 1e-3,
        "SOLVER.REFERENCE_WORLD_SIZE", 0,
        "SOLVER.CHECKPOINT_PERIOD", MAX_ITER,
        "TEST.EVAL_PERIOD", 0,
        "DATALOADER.NUM_WORKERS", 0,
        "SEED", 0,
        "OUTPUT_DIR", str(output_dir),
    ]  # fmt: skip


def _args(yaml: str, opts: list, eval_only: bool = False):
    argv = ["--config-file", yaml, *(["--eval-only"] if eval_only else []), *[str(o) for o in opts]]
    return default_argument_parser().parse_args(argv)


@pytest.fixture(scope="module")
def finetuned(tmp_path_factory):
    """The end-to-end checkpoint converted, fine-tuned for MAX_ITER iterations on a 4-image dataset."""
    folder = tmp_path_factory.mktemp("finetune")
    train = _write_split(folder, "finetune_converted_train", 4, seed=11)
    test = _write_split(folder, "finetune_converted_val", 2, seed=12)
    converted = convert_checkpoint("official", CASE)
    pth, yaml = write_converted(converted, str(folder / "model.pth"))
    out = folder / "output"
    opts = [*_opts(train, test, out), "MODEL.WEIGHTS", pth]
    torch.manual_seed(0)
    train_net.main(_args(yaml, opts))
    yield {
        "weights": converted.state_dict,
        "pth": pth,
        "yaml": yaml,
        "opts": opts,
        "out": out,
        "train": train,
        "test": test,
        "folder": folder,
    }
    _unregister(train)
    _unregister(test)


def _cfg(finetuned, *extra):
    return load_config(finetuned["yaml"], [*finetuned["opts"], *extra])


def _metrics(out) -> list[dict]:
    with open(out / "metrics.json") as f:
        return [row for row in map(json.loads, f) if "total_loss" in row]


def test_training_lowers_the_loss(finetuned):
    """metrics.json has a row at iterations 19 and 39: the median loss of iterations 0-19 and of 20-39;
    then the end-of-training evaluation's row (COCO AP on the test split)."""
    rows = _metrics(finetuned["out"])
    assert [r["iteration"] for r in rows] == [19, MAX_ITER - 1]
    first, last = rows
    assert np.isfinite(first["total_loss"]) and np.isfinite(last["total_loss"])  # the only loss: loss_seq
    assert last["total_loss"] < 0.8 * first["total_loss"], rows  # seen: 2.97 -> 1.10
    assert os.path.exists(finetuned["out"] / "model_final.pth")
    with open(finetuned["out"] / "metrics.json") as f:
        evaluation = [row for row in map(json.loads, f) if "bbox/AP" in row]
    assert len(evaluation) == 1 and 0.0 <= evaluation[0]["bbox/AP"] <= 100.0


def test_training_started_from_the_converted_weights(finetuned):
    """``model_final.pth`` keeps the converted FrozenBN statistics (never trained) and a stem kernel that
    training moved only a little away from the converted one, and far from a fresh initialisation."""
    final = torch.load(finetuned["out"] / "model_final.pth", map_location="cpu", weights_only=True)["model"]
    converted = finetuned["weights"]
    fresh = build_model(_cfg(finetuned)).state_dict()
    assert torch.equal(final[FROZEN_BN], converted[FROZEN_BN])
    assert not torch.allclose(fresh[FROZEN_BN], converted[FROZEN_BN])  # a fresh FrozenBN: zeros

    def cosine(a, b):
        return float(torch.nn.functional.cosine_similarity(a.flatten(), b.flatten(), dim=0))

    moved, conv = final[STEM_CONV], converted[STEM_CONV]
    assert not torch.equal(moved, conv)  # it was trained
    assert cosine(moved, conv) > 0.9
    assert abs(cosine(moved, fresh[STEM_CONV])) < 0.5
    # every converted tensor is in the final checkpoint with the converted shape (no re-initialised rows)
    assert {k: tuple(v.shape) for k, v in converted.items()} == {k: tuple(final[k].shape) for k in converted}


def test_final_checkpoint_loads_back(finetuned):
    cfg = _cfg(finetuned)
    model = build_model(cfg)
    Pix2SeqCheckpointer(model).load(str(finetuned["out"] / "model_final.pth"))
    final = torch.load(finetuned["out"] / "model_final.pth", map_location="cpu", weights_only=True)["model"]
    state = model.state_dict()
    assert set(state) == set(final)
    assert all(torch.equal(state[k], final[k]) for k in final)


def test_training_sequences_use_the_official_layout(finetuned):
    """Class token = 100 + json category id (101, 103, 107) or NOISE 30; coordinates in [1000, 1000 + bins)."""
    cfg = _cfg(finetuned)
    assert cfg.MODEL.PIX2SEQ.TOKENIZER.LAYOUT == "official"
    mapper = Pix2SeqDatasetMapper(cfg, is_train=True)
    num_bins, max_objects = cfg.MODEL.PIX2SEQ.NUM_BINS, cfg.MODEL.PIX2SEQ.MAX_OBJECTS
    official_classes = {100 + c for c in CATEGORY_IDS} | {30}  # 101, 103, 107 and NOISE
    real_objects = 0
    for dataset_dict in DatasetCatalog.get(finetuned["train"]):
        mapped = mapper(dataset_dict)
        target, inputs = mapped["seq_target"], mapped["seq_input"]
        assert target.shape == inputs.shape == (5 * max_objects + 1,)  # filled up with noise objects
        body = target[:-1].reshape(-1, 5)  # objects: ymin xmin ymax xmax class, then EOS
        assert int(target[-1]) == 0  # EOS = PAD = 0
        assert set(body[:, 4].tolist()) <= official_classes
        assert ((body[:, :4] >= 1000) & (body[:, :4] < 1000 + num_bins)).all()
        n = len(mapped["instances"])
        real = torch.tensor([100 + CATEGORY_IDS[c] for c in mapped["instances"].gt_classes.tolist()])
        assert torch.equal(body[:n, 4], real.to(body.dtype))  # the real objects first, with their classes
        assert (body[n:, 4] == 30).all()  # then noise objects
        assert int(inputs[0]) == 10  # the detection prompt
        # the teacher-forcing input's classes are corrupted (rand_n_fake_cls) into official tokens too
        assert set(inputs[1:].reshape(-1, 5)[:, 4].tolist()) <= official_classes
        real_objects += n
    assert real_objects > 0


def test_eval_only_of_the_finetuned_model(finetuned, tmp_path):
    """``train_net.py --eval-only MODEL.WEIGHTS model_final.pth`` on the test split gives COCO AP, with
    detections reported under the json's category ids (decoded with the grammar: see ``_opts``)."""
    opts = [*finetuned["opts"], "MODEL.WEIGHTS", str(finetuned["out"] / "model_final.pth"), "OUTPUT_DIR", str(tmp_path)]
    results = train_net.main(_args(finetuned["yaml"], opts, eval_only=True))
    assert 0.0 <= results["bbox"]["AP"] <= 100.0  # any value, but a number
    with open(tmp_path / "eval_results.json") as f:
        assert json.load(f)["bbox"]["AP"] == results["bbox"]["AP"]
    with open(tmp_path / "inference" / finetuned["test"] / "coco_instances_results.json") as f:
        detections = json.load(f)
    assert detections and {d["category_id"] for d in detections} <= set(CATEGORY_IDS)
