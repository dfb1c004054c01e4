"""tools/plot_metrics.py on metrics.json files written here: training, evaluation, partial and broken lines."""

from __future__ import annotations

import json
import os
import sys

import cv2
import pytest

from tests.helpers import REPO_ROOT

sys.path.insert(0, os.path.join(REPO_ROOT, "tools"))
import plot_metrics  # noqa: E402


def write_metrics(path, records: list[dict], tail: str = "") -> str:
    os.makedirs(path, exist_ok=True)
    with open(os.path.join(path, "metrics.json"), "w") as f:
        for record in records:
            f.write(json.dumps(record) + "\n")
        f.write(tail)
    return str(path)


TRAINING = [
    {"iteration": i, "total_loss": 6.0 / (1 + i / 10), "loss_seq": 6.0 / (1 + i / 10), "lr": 1e-3 * (1 - i / 100),
     "data_time": 0.01, "time": 0.1}
    for i in range(9, 100, 10)
]  # fmt: skip
EVALUATIONS = [
    {"iteration": 49, "bbox/AP": 10.5, "bbox/AP50": 20.0, "bbox/AP75": 8.0, "bbox/APl": float("nan")},
    {"iteration": 100, "bbox/AP": 30.25, "bbox/AP50": 55.0, "bbox/AP75": 28.0, "bbox/AR@100": 41.0},
]


def test_series_skip_missing_keys_nan_and_lines_without_iteration(tmp_path):
    run = write_metrics(
        tmp_path / "run",
        [*TRAINING[:5], {"iteration": 50}, EVALUATIONS[0], {"bbox/AP": 99.0}, *TRAINING[5:], EVALUATIONS[1]],
        tail='\n{"iteration": 120, "total_lo',  # a blank line and a half-written last line
    )
    records = plot_metrics.read_metrics(run)
    assert len(records) == len(TRAINING) + 4
    iterations, ap = plot_metrics.series(records, "bbox/AP")
    assert iterations == [49, 100] and ap == [10.5, 30.25]  # the line without an iteration is left out
    assert plot_metrics.series(records, "bbox/APl") == ([], [])  # NaN is not plotted
    assert plot_metrics.series(records, "bbox/AR@100") == ([100], [41.0])
    iterations, lr = plot_metrics.series(records, "lr")
    assert iterations == list(range(9, 100, 10)) and lr[0] == pytest.approx(1e-3 * 0.91)


def test_a_resumed_run_keeps_the_last_value_of_a_repeated_iteration(tmp_path):
    records = [{"iteration": 9, "total_loss": 5.0}, {"iteration": 19, "total_loss": 4.0},
               {"iteration": 19, "total_loss": 3.5}, {"iteration": 29, "total_loss": 3.0}]  # fmt: skip
    assert plot_metrics.series(records, "total_loss") == ([9, 19, 29], [5.0, 3.5, 3.0])


def test_main_writes_one_png_with_the_panels_that_have_data(tmp_path):
    run = write_metrics(tmp_path / "run", [*TRAINING, *EVALUATIONS])
    output = plot_metrics.main([run])
    assert output == os.path.join(run, "metrics.png")
    picture = cv2.imread(output)
    assert picture is not None and picture.shape[1] == 3 * 420  # three panels

    training_only = write_metrics(tmp_path / "train_only", TRAINING)
    target = str(tmp_path / "plots" / "train.png")
    assert plot_metrics.main([os.path.join(training_only, "metrics.json"), "--output", target]) == target
    assert cv2.imread(target).shape[1] == 2 * 420  # no evaluation: no AP panel

    eval_only = write_metrics(tmp_path / "eval_only", EVALUATIONS)
    assert plot_metrics.plot_metrics({"e": plot_metrics.read_metrics(eval_only)}, str(tmp_path / "e.png")) == [
        "COCO box AP / AR (val)"
    ]


def test_several_runs_overlaid_and_nothing_to_plot(tmp_path):
    a = write_metrics(tmp_path / "a", [*TRAINING, *EVALUATIONS])
    b = write_metrics(tmp_path / "b", TRAINING[:4])
    output = plot_metrics.main([a, b, "--output", str(tmp_path / "ab.png"), "--title", "a vs b"])
    assert os.path.getsize(output) > 10_000
    empty = write_metrics(tmp_path / "empty", [{"iteration": 1, "data_time": 0.1}])
    with pytest.raises(ValueError, match="no loss"):
        plot_metrics.main([empty])
