"""tools/benchmark_decode.py: its three methods decode the same tokens (so the timings compare like with like)."""

from __future__ import annotations

import os
import sys

from tests.helpers import REPO_ROOT

sys.path.insert(0, os.path.join(REPO_ROOT, "tools"))
import benchmark_decode  # noqa: E402


def test_all_methods_give_identical_tokens_on_the_r50_decoder(capsys):
    rows = benchmark_decode.main(
        ["--config-file", os.path.join(REPO_ROOT, "configs", "pix2seq_R50.yaml"),
         "--batch-sizes", "2", "--tokens", "15", "--memory-hw", "4", "5"]
    )  # fmt: skip
    out = capsys.readouterr().out
    assert "identical tokens across methods: yes" in out
    assert {row["method"] for row in rows} == {"recompute", "concat", "ours"}
    assert all(row["seconds"] > 0 and row["batch"] == 2 for row in rows)
