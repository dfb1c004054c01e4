"""tools/train_net.py in a subprocess: train a few iterations, evaluate, resume, --eval-only."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import pytest

from tests.helpers import QUICKSTART_CONFIG, REPO_ROOT

TRAIN_NET = os.path.join(REPO_ROOT, "tools", "train_net.py")
# A fast variant of the quickstart: train on the (small) validation split, decode few objects.
FAST_OPTS = [
    "DATASETS.TRAIN", "('shapes_val',)",
    "SOLVER.IMS_PER_BATCH", "8",
    "MODEL.PIX2SEQ.MAX_OBJECTS_TEST", "2",
    "MODEL.PIX2SEQ.HIDDEN_DIM", "32",
    "MODEL.PIX2SEQ.DIM_FEEDFORWARD", "64",
]  # fmt: skip


def run_train_net(tmp_path, *args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    env = dict(os.environ, DETECTRON2_DATASETS=str(tmp_path / "datasets"), PYTHONUNBUFFERED="1")
    cmd = [sys.executable, TRAIN_NET, "--config-file", QUICKSTART_CONFIG, *args]
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def free_local_url() -> str:
    """A tcp:// address on a port nobody listens on (detectron2's default port is per user and
    collides when two multi-worker runs overlap)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"tcp://127.0.0.1:{s.getsockname()[1]}"


def read_metrics(output_dir) -> list[dict]:
    with open(os.path.join(output_dir, "metrics.json")) as f:
        return [json.loads(line) for line in f]


def test_train_evaluate_resume_and_eval_only(tmp_path):
    out = tmp_path / "output"
    run_train_net(tmp_path, *FAST_OPTS, "SOLVER.MAX_ITER", "4", "OUTPUT_DIR", str(out))
    assert (out / "model_final.pth").is_file()
    assert (out / "last_checkpoint").read_text().strip() == "model_final.pth"
    metrics = read_metrics(out)
    assert any("total_loss" in m for m in metrics)  # detectron2 logs single losses as total_loss
    final = metrics[-1]
    assert "bbox/AP" in final and "bbox/AP50" in final  # COCOEvaluator ran after training
    assert (out / "inference" / "shapes_val" / "coco_instances_results.json").is_file()

    # --resume continues from the last checkpoint's iteration instead of starting over.
    resumed = run_train_net(tmp_path, "--resume", *FAST_OPTS, "SOLVER.MAX_ITER", "6", "OUTPUT_DIR", str(out))
    assert "Starting training from iteration 4" in resumed.stdout + resumed.stderr

    # --eval-only loads weights and reports COCO AP through COCOEvaluator.
    evaluated = run_train_net(
        tmp_path, "--eval-only", *FAST_OPTS, "MODEL.WEIGHTS", str(out / "model_final.pth"),
        "OUTPUT_DIR", str(tmp_path / "eval"),
    )  # fmt: skip
    log = evaluated.stdout + evaluated.stderr
    assert "Evaluation results for shapes_val in csv format" in log
    assert "copypaste: AP,AP50,AP75,APs,APm,APl" in log


def test_two_cpu_workers_train_agree_on_the_weights_and_evaluate_like_one_process(tmp_path):
    """--num-gpus 2 without GPUs: two GLOO workers with DistributedDataParallel on the CPU. They end
    with the same weights, and their joint evaluation (each worker decodes half of the images;
    COCO AP and the sequence likelihood are merged) equals one process evaluating the checkpoint."""
    out = tmp_path / "output"
    # Boxes for every image even from an untrained model: fixed length, seeded sampling (the
    # seed restarts with every batch of one image, so the workers' split does not matter).
    opts = [*FAST_OPTS, "MODEL.PIX2SEQ.DECODE.STOP_AT_EOS", "False", "MODEL.PIX2SEQ.DECODE.STRATEGY", "sample",
            "MODEL.PIX2SEQ.DECODE.TOP_P", "1.0", "MODEL.PIX2SEQ.DECODE.SEED", "0"]  # fmt: skip
    log = run_train_net(
        tmp_path,
        "--num-gpus",
        "2",
        "--dist-url",
        free_local_url(),
        *opts,
        "SOLVER.MAX_ITER",
        "3",
        "OUTPUT_DIR",
        str(out),
    )
    log = log.stdout + log.stderr
    assert "Weights agree across 2 workers" in log  # the check raises, and the run fails, if they differ
    assert (out / "model_final.pth").is_file()
    two_workers = read_metrics(out)[-1]

    evaluated = tmp_path / "eval"
    run_train_net(
        tmp_path, "--eval-only", *opts, "MODEL.WEIGHTS", str(out / "model_final.pth"), "OUTPUT_DIR", str(evaluated),
    )  # fmt: skip
    one_process = json.loads((evaluated / "eval_results.json").read_text())
    for key in ("bbox/AP", "bbox/AP50", "bbox/AR@100"):
        assert two_workers[key] == pytest.approx(one_process["bbox"][key.split("/")[1]], abs=1e-9), key
        assert two_workers[key] >= 0  # not NaN: there were detections
    assert two_workers["bbox/AR@100"] > 0
    for key in ("nll", "nll_coord", "nll_class", "nll_eos", "class_accuracy", "images"):
        assert two_workers[f"seq_likelihood/{key}"] == pytest.approx(one_process["seq_likelihood"][key], rel=1e-6)
    assert two_workers["seq_likelihood/images"] == 300  # every image of shapes_val, once


def test_missing_config_file_is_a_usage_error(tmp_path):
    """Without --config-file detectron2 would build its default (a GPU Mask R-CNN) and fail on the driver."""
    cmd = [sys.executable, TRAIN_NET, "--eval-only"]
    proc = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "--config-file is required" in proc.stderr and "NVIDIA" not in proc.stderr
