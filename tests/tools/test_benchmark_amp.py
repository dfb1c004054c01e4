"""tools/benchmark_amp.py runs float32 and mixed-precision training steps side by side."""

from __future__ import annotations

import importlib.util
import math
import os

from tests.helpers import QUICKSTART_CONFIG, REPO_ROOT


def load_tool():
    spec = importlib.util.spec_from_file_location("benchmark_amp", os.path.join(REPO_ROOT, "tools", "benchmark_amp.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_benchmark_amp_reports_both_precisions_and_their_ratio(capsys):
    summary = load_tool().main([
        "--config-file", QUICKSTART_CONFIG, "--device", "cpu", "--size", "64", "--batch-size", "2",
        "--objects", "3", "--steps", "1", "--warmup", "1", "--rounds", "1",
    ])  # fmt: skip
    assert set(summary) == {"float32", "bfloat16", "ratio"}
    assert all(math.isfinite(v) and v > 0 for v in summary.values())
    assert "bfloat16 / float32 throughput" in capsys.readouterr().out
