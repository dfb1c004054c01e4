"""Our own tools for detectron2's tool jobs, on real files (quickstart config, shapes_val):
tools/benchmark.py (train / eval / data throughput), tools/visualize_data.py (the training data as the
model sees it: image, boxes, token sequence) and tools/visualize_json_results.py (a results json drawn)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest
from detectron2.data import DatasetCatalog, MetadataCatalog
from PIL import Image

from pix2seq_d2 import Pix2SeqTokenizer, Pix2SeqTrainer
from pix2seq_d2.config import load_config, prepare_config
from tests.helpers import QUICKSTART_CONFIG, REPO_ROOT

sys.path.insert(0, os.path.join(REPO_ROOT, "tools"))
import benchmark  # noqa: E402
import visualize_data  # noqa: E402
import visualize_json_results  # noqa: E402

DATASETS_ROOT = os.path.abspath(os.environ.get("DETECTRON2_DATASETS", "datasets"))
SMALL = [
    "DATASETS.TRAIN", "('shapes_val',)", "SOLVER.IMS_PER_BATCH", "2",
    "MODEL.PIX2SEQ.HIDDEN_DIM", "32", "MODEL.PIX2SEQ.DIM_FEEDFORWARD", "64",
    "MODEL.PIX2SEQ.ENC_LAYERS", "1", "MODEL.PIX2SEQ.DEC_LAYERS", "1", "MODEL.PIX2SEQ.MAX_OBJECTS_TEST", "2",
]  # fmt: skip


# ---- tools/benchmark.py -------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "task, args, keys",
    [
        ("train", ["--iters", "3", "--warmup", "1", "--cached", "2"], ("iterations_per_s", "images_per_s")),
        ("eval", ["--iters", "2", "--warmup", "1", "--cached", "2"], ("images_per_s",)),
        ("data", ["--iters", "4", "--warmup", "1"], ("mapper_images_per_s", "loader_images_per_s")),
    ],
)
def test_benchmark_reports_a_positive_throughput(task, args, keys, capsys):
    result = benchmark.main(["--task", task, "--config-file", QUICKSTART_CONFIG, *args, *SMALL])
    assert all(result[key] > 0 for key in keys)
    assert capsys.readouterr().out.strip().splitlines()[-1].startswith(f"{task}: ")


def test_benchmark_train_with_mixed_precision(capsys):
    result = benchmark.main(["--task", "train", "--config-file", QUICKSTART_CONFIG, "--iters", "2", "--warmup", "1",
                             "--cached", "1", *SMALL, "SOLVER.AMP.ENABLED", "True"])  # fmt: skip
    assert result["images_per_s"] > 0


# ---- tools/visualize_data.py --------------------------------------------------------------------------
LINE = re.compile(r"^\s+(\d+)\s+(\d+) (.{26}) +(\d+) (.{26}) ([\d.]+)$")


def parse_tokens(path: str) -> list[tuple[int, int, str, int, str, float]]:
    """The position lines of a token file: (pos, input id, input text, target id, target text, weight)."""
    rows = []
    for line in open(path).read().splitlines():
        if line.startswith("#"):
            continue
        m = LINE.match(line)
        assert m, line
        pos, inp, inp_text, tgt, tgt_text, weight = m.groups()
        rows.append((int(pos), int(inp), inp_text.strip(), int(tgt), tgt_text.strip(), float(weight)))
    return rows


def test_visualize_data_writes_each_example_as_the_model_sees_it(tmp_path):
    """The files are our loader's first training examples: the augmented size, and one line per token of
    its sequence, whose coordinates read back to the augmented boxes (within one bin) and whose classes
    are the boxes' classes; noise objects of sequence augmentation are marked."""
    opts = [*SMALL, "INPUT.LSJ.ENABLED", "True", "INPUT.LSJ.IMAGE_SIZE", "80",
            "MODEL.PIX2SEQ.SEQ_AUG.ENABLED", "True", "MODEL.PIX2SEQ.MAX_OBJECTS", "6"]  # fmt: skip
    written = visualize_data.main(["--config-file", QUICKSTART_CONFIG, "--output-dir", str(tmp_path), "--num-images",
                                   "3", "--scale", "2", *opts])  # fmt: skip
    cfg = prepare_config(load_config(QUICKSTART_CONFIG, [*opts, "DATALOADER.NUM_WORKERS", 0]), for_training=False)
    batches = iter(Pix2SeqTrainer.build_train_loader(cfg))
    examples = next(batches) + next(batches)  # 2 images per batch
    tokenizer = Pix2SeqTokenizer.from_config(cfg)
    names = MetadataCatalog.get("shapes_val").thing_classes
    assert len(written) == 3
    for index, ((image_path, text_path), example) in enumerate(zip(written, examples)):
        assert os.path.basename(image_path) == f"{index:03d}_{example['image_id']}.jpg"
        h, w = example["image"].shape[-2:]
        assert Image.open(image_path).size == (2 * w, 2 * h)
        rows = parse_tokens(text_path)
        assert [r[3] for r in rows] == example["seq_target"].tolist()
        assert [r[1] for r in rows] == example["seq_input"].tolist()
        assert rows[0][2] == "START" and rows[-1][4] == "EOS"
        boxes, classes = example["instances"].gt_boxes.tensor, example["instances"].gt_classes
        for k, (box, cls) in enumerate(zip(boxes.tolist(), classes.tolist())):  # real objects come first
            values = {}
            for pos in range(5 * k, 5 * k + 4):
                axis, _, _, _, value, _ = rows[pos][4].split()  # "ymin bin 40 = 30.3 px"
                values[axis] = float(value)
            expected = dict(zip(("xmin", "ymin", "xmax", "ymax"), box))
            bin_px = max(h, w) / tokenizer.num_bins
            assert all(abs(values[a] - expected[a]) <= bin_px for a in expected), (values, expected)
            assert rows[5 * k + 4][4] == f"class {names[cls]}"
        noise = [r for r in rows[5 * len(boxes) : -1] if r[4] == "class noise"]
        assert len(noise) == len(rows[5 * len(boxes) : -1]) // 5  # the rest of the sequence is noise
        assert noise, "sequence augmentation fills the sequence up to MAX_OBJECTS"
        header = open(text_path).read()
        assert f"augmented {h} x {w} px" in header and f"{len(boxes)} objects after augmentation" in header


# ---- tools/visualize_json_results.py ------------------------------------------------------------------
def shapes_results(count: int, shift: float = 3.0) -> list[dict]:
    """Results for the first ``count`` shapes_val images: the ground truth shifted, score 0.9."""
    dicts = DatasetCatalog.get("shapes_val")[:count]
    ids = {v: k for k, v in MetadataCatalog.get("shapes_val").thing_dataset_id_to_contiguous_id.items()}
    return [
        {"image_id": d["image_id"], "category_id": ids[a["category_id"]], "score": 0.9,
         "bbox": [a["bbox"][0] + shift, a["bbox"][1], a["bbox"][2], a["bbox"][3]]}
        for d in dicts for a in d["annotations"]
    ]  # fmt: skip


def run_tool(cwd, *args: str) -> subprocess.CompletedProcess:
    tool = os.path.join(REPO_ROOT, "tools", "visualize_json_results.py")
    env = dict(os.environ, DETECTRON2_DATASETS=DATASETS_ROOT, PYTHONUNBUFFERED="1")
    return subprocess.run([sys.executable, tool, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120)


def test_visualize_json_results_draws_prediction_next_to_ground_truth_and_names_skipped_entries(tmp_path):
    results = shapes_results(3)
    results.append({"image_id": 123456, "category_id": 1, "bbox": [1, 1, 5, 5], "score": 0.8})
    results.append({"image_id": 1, "category_id": 42, "bbox": [1, 1, 5, 5], "score": 0.8})
    (tmp_path / "results.json").write_text(json.dumps(results))
    proc = run_tool(tmp_path, "--input", "results.json", "--output", "vis", "--dataset", "shapes_val",
                    "--max-images", "3")  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    log = proc.stdout + proc.stderr
    n = len(results)
    assert f"skipping entry #{n - 2}" in log and "image_id 123456 is no image of the dataset" in log
    assert f"skipping entry #{n - 1}" in log and "category_id 42 is no category of the dataset" in log
    dicts = DatasetCatalog.get("shapes_val")[:3]
    for d in dicts:
        drawn = np.asarray(Image.open(tmp_path / "vis" / os.path.basename(d["file_name"])).convert("RGB"))
        assert drawn.shape == (d["height"], 2 * d["width"], 3)  # prediction | ground truth
        left, right = drawn[:, : d["width"]].astype(float), drawn[:, d["width"] :].astype(float)
        assert np.abs(left - right).mean() > 3  # boxes shifted by 3 px, labels with scores


def test_predictions_keep_what_scores_above_the_threshold_in_xyxy_and_contiguous_classes():
    metadata = MetadataCatalog.get("shapes_val")
    entries = [{"image_id": 1, "category_id": 2, "bbox": [10, 20, 30, 40], "score": 0.9},
               {"image_id": 1, "category_id": 3, "bbox": [0, 0, 5, 5], "score": 0.2}]  # fmt: skip
    grouped = visualize_json_results.group_by_image(entries, [{"image_id": 1}], metadata, "r.json")
    instances = visualize_json_results.predictions(grouped[1], (96, 96), threshold=0.5)
    assert instances.pred_boxes.tensor.tolist() == [[10, 20, 40, 60]]
    assert instances.pred_classes.tolist() == [metadata.thing_dataset_id_to_contiguous_id[2]]


@pytest.mark.parametrize(
    "content, message",
    [
        ("{not json", "is not json"),
        (json.dumps({"images": [], "annotations": []}), "not a list (a dataset annotation file?"),
        (json.dumps([{"image_id": 1, "category_id": 1, "score": 0.5}]), 'entry #0 ({"image_id": 1'),
        (json.dumps([{"image_id": 1, "category_id": 1, "bbox": [1, 2, "3", 4], "score": 0.5}]), "bbox is not a list"),
        (json.dumps([{"image_id": 1, "category_id": 1, "bbox": [1, 2, 3, 4], "score": None}]), "score is not"),
    ],
    ids=["not_json", "a_dataset_json", "no_bbox", "string_coordinate", "null_score"],
)
def test_a_bad_results_json_is_an_error_naming_the_file_and_entry(tmp_path, content, message):
    path = tmp_path / "results.json"
    path.write_text(content)
    with pytest.raises(visualize_json_results.ResultsJsonError, match=re.escape(message)) as error:
        visualize_json_results.read_results(str(path))
    assert str(path) in str(error.value)


def test_results_of_another_dataset_are_one_error_line(tmp_path):
    (tmp_path / "results.json").write_text(json.dumps([{"image_id": 10**6, "category_id": 1, "bbox": [1, 1, 2, 2],
                                                         "score": 0.9}]))  # fmt: skip
    proc = run_tool(tmp_path, "--input", "results.json", "--output", "vis", "--dataset", "shapes_val")
    assert proc.returncode == 1
    assert "error: results json results.json: none of its 1 entries" in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize("tool", ["analyze_model.py", "benchmark.py", "visualize_data.py"])
def test_a_missing_config_file_is_one_error_line(tmp_path, tool):
    args = {"benchmark.py": ["--task", "data"], "visualize_data.py": ["--output-dir", "out"]}.get(tool, [])
    proc = subprocess.run([sys.executable, os.path.join(REPO_ROOT, "tools", tool), "--config-file", "missing.yaml",
                           *args], cwd=tmp_path, capture_output=True, text=True, timeout=120)  # fmt: skip
    assert proc.returncode == 1
    assert "error: config file missing.yaml does not exist" in proc.stderr and "Traceback" not in proc.stderr
