"""A tool's console holds what the user can act on: no FutureWarning from detectron2's imports (fvcore and
box_regression script helpers with torch.jit.script, which torch deprecates), for any tool."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.helpers import REPO_ROOT


@pytest.mark.parametrize("tool", ["train_net.py", "demo.py", "convert_pix2seq_checkpoint.py"])
def test_a_tool_starts_without_warnings(tool):
    result = subprocess.run(
        [sys.executable, os.path.join(REPO_ROOT, "tools", tool), "--help"],
        capture_output=True, text=True, cwd=REPO_ROOT, timeout=120,
        env={**os.environ, "PYTHONWARNINGS": "default"},  # show every warning once, as a plain run does
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "usage:" in result.stdout
    assert "Warning" not in result.stderr, result.stderr


def test_importing_the_package_first_keeps_detectron2_quiet():
    code = "import pix2seq_d2, detectron2.engine, detectron2.modeling, detectron2.evaluation"
    result = subprocess.run([sys.executable, "-W", "error::FutureWarning", "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
