"""COCO evaluation backends: pycocotools and faster-coco-eval give the same AP/AR, through the plain
functions, through ``COCOEvaluatorWithRecall`` (detectron2's evaluator API) and as chosen by the
config key; tools/benchmark_coco_eval.py runs on tiny sizes."""

from __future__ import annotations

import json
import logging
import math
import os
import sys

import numpy as np
import pytest
import torch
from detectron2.config import get_cfg
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets import register_coco_instances
from detectron2.structures import Boxes, Instances

from pix2seq_d2 import add_pix2seq_config
from pix2seq_d2.evaluation.coco_evaluation import (
    BACKENDS,
    RECALL_METRICS,
    COCOEvaluatorWithRecall,
    evaluate_on_coco,
    load_coco_gt,
    resolve_coco_eval_backend,
)
from tests.helpers import REPO_ROOT

sys.path.insert(0, os.path.join(REPO_ROOT, "tools"))
import benchmark_coco_eval  # noqa: E402

CATEGORY_IDS = (1, 3, 7)  # not contiguous: the evaluator must map class indices back to these


def make_coco(rng: np.random.Generator, num_images: int = 24) -> tuple[dict, list[dict]]:
    """A small COCO ground truth and predictions for it.

    Objects of all three COCO sizes (small < 32^2 < medium < 96^2 < large) and categories, a crowd
    region, images without objects (some with false positives on them); predictions jitter true
    boxes by varying amounts, miss some objects, confuse classes, detect some objects twice and add
    random false positives, with ties in the scores.
    """
    images, annotations, results = [], [], []
    for image_id in range(1, num_images + 1):
        width, height = (640, 480) if image_id % 3 == 0 else (200, 160)
        images.append({"id": image_id, "file_name": f"{image_id:03d}.jpg", "width": width, "height": height})
        num_objects = 0 if image_id % 5 == 0 else int(rng.integers(1, 7))
        for _ in range(num_objects):
            side = float(rng.choice([rng.uniform(6, 30), rng.uniform(35, 90), rng.uniform(100, 150)]))
            w, h = side * rng.uniform(0.7, 1.0), side * rng.uniform(0.7, 1.0)
            box = [float(rng.uniform(0, width - w)), float(rng.uniform(0, height - h)), w, h]
            category = int(rng.choice(CATEGORY_IDS))
            crowd = int(len(annotations) == 7)
            annotations.append({
                "id": len(annotations) + 1, "image_id": image_id, "category_id": category,
                "bbox": box, "area": w * h, "iscrowd": crowd,
            })  # fmt: skip
            if rng.random() < 0.15:
                continue  # missed
            for _ in range(2 if rng.random() < 0.1 else 1):  # sometimes detected twice
                noise = rng.normal(0, rng.uniform(0.01, 0.3), 4) * [w, h, w, h]
                pred_box = [box[0] + noise[0], box[1] + noise[1], max(1.0, w + noise[2]), max(1.0, h + noise[3])]
                pred_cat = category if rng.random() < 0.85 else int(rng.choice(CATEGORY_IDS))
                score = round(float(rng.uniform(0.3, 1.0)), 2)  # rounded: ties between scores
                results.append({"image_id": image_id, "category_id": pred_cat, "bbox": pred_box, "score": score})
        for _ in range(int(rng.integers(0, 3))):  # false positives, also on images without objects
            w, h = float(rng.uniform(5, 80)), float(rng.uniform(5, 80))
            box = [float(rng.uniform(0, width - w)), float(rng.uniform(0, height - h)), w, h]
            score = round(float(rng.uniform(0.0, 0.7)), 2)
            results.append({"image_id": image_id, "category_id": int(rng.choice(CATEGORY_IDS)), "bbox": box,
                            "score": score})  # fmt: skip
    categories = [{"id": c, "name": f"class{c}", "supercategory": "thing"} for c in CATEGORY_IDS]
    return {"images": images, "annotations": annotations, "categories": categories}, results


@pytest.fixture
def coco_files(tmp_path):
    """``(gt_json_path, results)``: the ground truth written to a real file."""
    gt, results = make_coco(np.random.default_rng(0))
    gt_json = tmp_path / "instances.json"
    gt_json.write_text(json.dumps(gt))
    return str(gt_json), results


def assert_same_metrics(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key in a:
        if math.isnan(a[key]):
            assert math.isnan(b[key]), key
        else:
            assert a[key] == pytest.approx(b[key], abs=1e-9), key


@pytest.mark.parametrize("max_dets", [[1, 10, 100], [1, 10, 300], [1, 3, 5]])
def test_backends_give_the_same_12_stats(coco_files, max_dets):
    gt_json, results = coco_files
    before = json.dumps(results)
    evals = {
        b: evaluate_on_coco(load_coco_gt(gt_json, b), results, "bbox", b, max_dets_per_image=max_dets) for b in BACKENDS
    }
    assert json.dumps(results) == before  # the predictions are not modified, so they can be evaluated again
    ref, fast = (np.asarray(evals[b].stats[:12], dtype=np.float64) for b in BACKENDS)
    assert len(evals["faster_coco_eval"].stats) == 12
    np.testing.assert_allclose(fast, ref, rtol=0, atol=1e-12)
    # The data exercise every number: all sizes have objects, and AP is neither 0 nor perfect.
    assert np.all(ref >= 0) and 0.1 < ref[0] < 0.9 and ref[8] > ref[6]
    # Per-category AP (detectron2's "AP-<class>") reads eval["precision"]: the same for both backends.
    np.testing.assert_allclose(evals["faster_coco_eval"].eval["precision"], evals["pycocotools"].eval["precision"],
                               rtol=0, atol=1e-12)  # fmt: skip


def test_backends_agree_on_a_subset_of_images(coco_files):
    gt_json, results = coco_files
    stats = [
        evaluate_on_coco(load_coco_gt(gt_json, b), results, "bbox", b, img_ids=[1, 2, 3, 5, 6]).stats[:12]
        for b in BACKENDS
    ]
    np.testing.assert_allclose(stats[1], stats[0], rtol=0, atol=1e-12)


@pytest.fixture
def registered_dataset(coco_files):
    """A dataset registered with ``register_coco_instances`` on the tmp json; its metadata loaded."""
    gt_json, results = coco_files
    name = "pix2seq_test_evaluation"
    register_coco_instances(name, {}, gt_json, os.path.dirname(gt_json))
    DatasetCatalog.get(name)  # sets thing_dataset_id_to_contiguous_id, as building the test loader does
    yield name, results
    DatasetCatalog.remove(name)
    MetadataCatalog.remove(name)


def predictions_as_model_outputs(dataset_name: str, results: list[dict]) -> list[tuple[dict, dict]]:
    """``(input, output)`` pairs as a detectron2 model sees and returns them, one per image."""
    to_contiguous = MetadataCatalog.get(dataset_name).thing_dataset_id_to_contiguous_id
    pairs = []
    for record in DatasetCatalog.get(dataset_name):
        mine = [r for r in results if r["image_id"] == record["image_id"]]
        instances = Instances((record["height"], record["width"]))
        xywh = torch.tensor([r["bbox"] for r in mine], dtype=torch.float64).reshape(-1, 4)
        instances.pred_boxes = Boxes(torch.cat([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], dim=1))
        instances.scores = torch.tensor([r["score"] for r in mine], dtype=torch.float64)
        instances.pred_classes = torch.tensor([to_contiguous[r["category_id"]] for r in mine], dtype=torch.long)
        pairs.append(({"image_id": record["image_id"]}, {"instances": instances}))
    return pairs


def run_evaluator(dataset_name: str, pairs, output_dir, **kwargs) -> tuple[COCOEvaluatorWithRecall, dict]:
    evaluator = COCOEvaluatorWithRecall(
        dataset_name, tasks=("bbox",), distributed=False, output_dir=str(output_dir), **kwargs
    )
    evaluator.reset()
    for inp, out in pairs:
        evaluator.process([inp], [out])
    return evaluator, evaluator.evaluate()


@pytest.mark.parametrize("max_dets_per_image", [100, 300])
def test_evaluator_gives_identical_results_with_each_backend(registered_dataset, tmp_path, max_dets_per_image):
    name, results = registered_dataset
    pairs = predictions_as_model_outputs(name, results)
    metrics = {}
    for backend in BACKENDS:
        evaluator, out = run_evaluator(
            name, pairs, tmp_path / backend, backend=backend, max_dets_per_image=max_dets_per_image
        )
        assert evaluator.backend == backend
        metrics[backend] = out["bbox"]
        saved = json.loads((tmp_path / backend / "coco_instances_results.json").read_text())
        assert len(saved) == len(results) and {r["category_id"] for r in saved} == set(CATEGORY_IDS)
    ref = metrics["pycocotools"]
    assert {"AP", "AP50", "AP75", "APs", "APm", "APl", *RECALL_METRICS} <= ref.keys()
    assert {f"AP-class{c}" for c in CATEGORY_IDS} <= ref.keys()
    assert all(0 < ref[k] < 100 for k in ("AP", "AR@100", "ARs@100", "ARl@100"))
    assert_same_metrics(metrics["faster_coco_eval"], ref)

    # The plain functions on the same predictions give the same numbers (the evaluator adds nothing).
    stats = evaluate_on_coco(
        load_coco_gt(MetadataCatalog.get(name).json_file, "pycocotools"), results, "bbox", "pycocotools",
        max_dets_per_image=[1, 10, max_dets_per_image],
    ).stats  # fmt: skip
    assert ref["AP"] == pytest.approx(stats[0] * 100) and ref["AR@100"] == pytest.approx(stats[8] * 100)


def test_evaluator_without_any_detection_reports_nan_with_each_backend(registered_dataset, tmp_path):
    name, _ = registered_dataset
    pairs = predictions_as_model_outputs(name, [])
    for backend in BACKENDS:
        _, out = run_evaluator(name, pairs, tmp_path / backend, backend=backend)
        assert all(math.isnan(v) for v in out["bbox"].values())
        assert {"AP", "AR@100"} <= out["bbox"].keys()


@pytest.mark.parametrize("value,expected", [("auto", "faster_coco_eval"), *((b, b) for b in BACKENDS)])
def test_config_key_selects_the_backend(registered_dataset, tmp_path, value, expected):
    from pix2seq_d2.engine.trainer import Pix2SeqTrainer

    name, _ = registered_dataset
    cfg = get_cfg()
    add_pix2seq_config(cfg)
    assert cfg.TEST.COCO_EVAL_BACKEND == "auto"  # the default
    cfg.merge_from_list(["TEST.COCO_EVAL_BACKEND", value, "OUTPUT_DIR", str(tmp_path)])
    evaluator = Pix2SeqTrainer.build_evaluator(cfg, name)
    # build_evaluator may combine it with other evaluators (detectron2's DatasetEvaluators).
    coco = [e for e in getattr(evaluator, "_evaluators", [evaluator]) if isinstance(e, COCOEvaluatorWithRecall)]
    assert len(coco) == 1 and coco[0].backend == expected


def test_unknown_backend_is_a_clear_error(registered_dataset):
    name, _ = registered_dataset
    with pytest.raises(ValueError, match=r"Unknown COCO evaluation backend 'cocoapi'.*'auto', 'pycocotools'"):
        resolve_coco_eval_backend("cocoapi")
    with pytest.raises(ValueError, match="TEST.COCO_EVAL_BACKEND"):
        COCOEvaluatorWithRecall(name, tasks=("bbox",), backend="faster-coco-eval")


def test_without_faster_coco_eval_auto_falls_back_and_explicit_choice_fails(monkeypatch, caplog):
    monkeypatch.setitem(sys.modules, "faster_coco_eval", None)  # `import faster_coco_eval` raises ImportError
    with caplog.at_level(logging.WARNING, logger="pix2seq_d2.evaluation.coco_evaluation"):
        assert resolve_coco_eval_backend("auto") == "pycocotools"
    assert "falls back to pycocotools" in caplog.text
    with pytest.raises(ImportError, match="pip install faster-coco-eval"):
        resolve_coco_eval_backend("faster_coco_eval")
    assert resolve_coco_eval_backend("pycocotools") == "pycocotools"


def test_benchmark_tool_on_tiny_sets(coco_files, capsys):
    gt_json, _ = coco_files
    rows = benchmark_coco_eval.main(
        ["--images", "20", "--preds-per-image", "4", "--categories", "3", "--repeats", "1", "--shapes-json", gt_json]
    )
    out = capsys.readouterr().out
    assert "all 12 stats agree within 1e-12: yes" in out
    assert [row["name"] for row in rows] == ["shapes_val", "synthetic"]
    for row in rows:
        assert row["max_abs_stat_diff"] <= 1e-12 and row["eval_speedup"] > 0
        assert all(row[b]["eval"] > 0 and len(row[b]["stats"]) == 12 for b in BACKENDS)
    assert rows[1]["predictions"] == 20 * 4


# ---- the evaluator against detectron2's COCOEvaluator, and its ground truth from the checked reader ----


def test_evaluator_gives_detectron2s_coco_evaluator_numbers_and_files(registered_dataset, tmp_path):
    """COCOEvaluatorWithRecall reimplements COCOEvaluator's box evaluation on detectron2's public API. If
    detectron2 changes what COCOEvaluator reports (metric names, per-category AP, the files it writes, how
    it maps classes back to category ids), this fails."""
    from detectron2.evaluation import COCOEvaluator

    name, results = registered_dataset
    pairs = predictions_as_model_outputs(name, results)
    theirs_evaluator = COCOEvaluator(name, tasks=("bbox",), distributed=False, output_dir=str(tmp_path / "theirs"))
    theirs_evaluator.reset()
    for inp, out in pairs:
        theirs_evaluator.process([inp], [out])
    theirs = theirs_evaluator.evaluate()["bbox"]
    for backend in BACKENDS:
        _, ours = run_evaluator(name, pairs, tmp_path / backend, backend=backend)
        ours = ours["bbox"]
        assert list(ours) == list(theirs) + list(RECALL_METRICS)  # same names, same order, then AR
        assert_same_metrics({k: ours[k] for k in theirs}, theirs)
        for file_name in ("coco_instances_results.json", "instances_predictions.pth"):
            assert (tmp_path / backend / file_name).read_bytes() == (tmp_path / "theirs" / file_name).read_bytes()


def _scaled_areas(gt: dict) -> dict:
    for annotation in gt["annotations"]:
        annotation["area"] *= 0.6  # the file's areas differ from the boxes': a conversion would change APs/m/l
    return gt


@pytest.mark.parametrize("encoding", ["utf-8-sig", "utf-16"])
def test_a_json_the_loader_accepts_evaluates_like_the_plain_file(tmp_path, encoding):
    """pycocotools cannot read a BOM or UTF-16: COCOEvaluator crashed at the end of training. The evaluator reads
    the ground truth through the checked reader: the same numbers as for the plain UTF-8 file, areas as in it."""
    from detectron2.evaluation import COCOEvaluator

    gt, results = make_coco(np.random.default_rng(0))
    text = json.dumps(_scaled_areas(gt))
    names = {"plain": f"plain_{tmp_path.name}", "encoded": f"encoded_{tmp_path.name}"}
    (tmp_path / "plain.json").write_text(text, encoding="utf-8")
    (tmp_path / "encoded.json").write_bytes(text.encode(encoding))
    for key, name in names.items():
        register_coco_instances(name, {}, str(tmp_path / f"{key}.json"), str(tmp_path))
    try:
        DatasetCatalog.get(names["plain"])  # detectron2's loader: the class mapping for the predictions
        pairs = predictions_as_model_outputs(names["plain"], results)
        reference = COCOEvaluator(names["plain"], tasks=("bbox",), distributed=False, output_dir=str(tmp_path / "d2"))
        reference.reset()
        for inp, out in pairs:
            reference.process([inp], [out])
        expected = reference.evaluate()["bbox"]
        for backend in BACKENDS:
            _, out = run_evaluator(names["encoded"], pairs, tmp_path / backend, backend=backend)
            assert_same_metrics({k: out["bbox"][k] for k in expected}, expected)
            assert 0 < expected["APs"] < 100 and 0 < expected["APl"] < 100
    finally:
        for name in names.values():
            DatasetCatalog.remove(name)
            MetadataCatalog.remove(name)


def test_boxes_the_loader_skips_are_left_out_of_the_evaluation(tmp_path):
    """A DATASETS.COCO dataset with a null coordinate: perfect predictions of the other boxes are AP 100 (the
    skipped box is no miss), on the json's own ids and areas."""
    from pix2seq_d2.data.datasets import register_coco_json

    gt, _ = make_coco(np.random.default_rng(1), num_images=6)
    broken = next(a for a in gt["annotations"] if not a["iscrowd"])
    broken["bbox"][1] = None
    (tmp_path / "val.json").write_text(json.dumps(gt))
    name = f"skipped_{tmp_path.name}"
    register_coco_json(name, tmp_path / "val.json", tmp_path)
    try:
        perfect = [
            {"image_id": a["image_id"], "category_id": a["category_id"], "bbox": a["bbox"], "score": 1.0}
            for a in gt["annotations"]
            if a is not broken and not a["iscrowd"]
        ]
        DatasetCatalog.get(name)
        for backend in BACKENDS:
            _, out = run_evaluator(
                name, predictions_as_model_outputs(name, perfect), tmp_path / backend, backend=backend
            )
            assert out["bbox"]["AP"] == pytest.approx(100.0) and out["bbox"]["AR@100"] == pytest.approx(100.0)
    finally:
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)


def test_a_test_set_without_annotations_writes_the_predictions_only(tmp_path):
    gt, results = make_coco(np.random.default_rng(2), num_images=4)
    del gt["annotations"]
    (tmp_path / "test.json").write_text(json.dumps(gt))
    name = f"testset_{tmp_path.name}"
    register_coco_instances(name, {}, str(tmp_path / "test.json"), str(tmp_path))
    try:
        MetadataCatalog.get(name).thing_dataset_id_to_contiguous_id = {c: i for i, c in enumerate(CATEGORY_IDS)}
        evaluator, out = run_evaluator(name, predictions_as_model_outputs(name, results), tmp_path / "out")
        assert out == {}
        saved = json.loads((tmp_path / "out" / "coco_instances_results.json").read_text())
        assert len(saved) == len(results) and {r["category_id"] for r in saved} <= set(CATEGORY_IDS)
    finally:
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)
