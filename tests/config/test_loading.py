"""Reading configs: an unknown key or a value of the wrong type names the key, the file or the command line."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest
from detectron2.config import CfgNode, get_cfg

from pix2seq_d2 import add_pix2seq_config
from pix2seq_d2.config import config_items, merge_config_checked
from tests.helpers import QUICKSTART_CONFIG, REPO_ROOT


def _cfg():
    cfg = get_cfg()
    add_pix2seq_config(cfg)
    return cfg


def test_an_unknown_config_key_names_the_key_the_file_and_close_keys(tmp_path):
    base = tmp_path / "base.yaml"
    base.write_text(f"_BASE_: {QUICKSTART_CONFIG}\nMODEL:\n  PIX2SEQ:\n    NUM_BIN: 32\n")
    top = tmp_path / "top.yaml"
    top.write_text("_BASE_: base.yaml\nSOLVER:\n  MAX_ITER: 5\n")
    with pytest.raises(ValueError) as error:
        merge_config_checked(_cfg(), str(top))
    message = str(error.value)
    assert f"Unknown config key MODEL.PIX2SEQ.NUM_BIN in {base} (a _BASE_ of {top})" in message
    assert "Did you mean MODEL.PIX2SEQ.NUM_BINS" in message

    with pytest.raises(ValueError, match=r"Unknown config key SOLVER.MAX_ITR given on the command line\. Did you"):
        merge_config_checked(_cfg(), QUICKSTART_CONFIG, ["SOLVER.MAX_ITR", "3"])
    assert merge_config_checked(_cfg(), QUICKSTART_CONFIG, ["SOLVER.MAX_ITER", "3"]).SOLVER.MAX_ITER == 3


def test_a_value_of_the_wrong_type_names_the_file_or_the_command_line(tmp_path):
    from pix2seq_d2.config import ConfigKeyError

    config = tmp_path / "typed.yaml"
    config.write_text(f"_BASE_: {QUICKSTART_CONFIG}\nSOLVER:\n  MAX_ITER: many\n")
    with pytest.raises(ConfigKeyError, match=rf"{re.escape(str(config))}: .*SOLVER\.MAX_ITER"):
        merge_config_checked(_cfg(), str(config))
    with pytest.raises(ConfigKeyError, match=r"command-line setting: .*SOLVER\.MAX_ITER"):
        merge_config_checked(_cfg(), QUICKSTART_CONFIG, ["SOLVER.MAX_ITER", "many"])


def test_train_net_reports_an_unknown_config_key_with_its_file(tmp_path):
    config = tmp_path / "typo.yaml"
    config.write_text(f"_BASE_: {QUICKSTART_CONFIG}\nSOLVER:\n  MAX_ITRE: 3\n")
    cmd = [sys.executable, os.path.join(REPO_ROOT, "tools", "train_net.py"), "--config-file", str(config)]
    proc = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr  # one "error:" line
    assert f"error: Unknown config key SOLVER.MAX_ITRE in {config}. Did you mean SOLVER.MAX_ITER" in proc.stderr


def test_config_items_lists_every_dotted_key_with_its_value_nodes_optional():
    cfg = CfgNode({"A": 1, "B": CfgNode({"C": [2], "D": CfgNode({"E": "x"})}), "F": None})
    assert list(config_items(cfg)) == ["A", "B", "B.C", "B.D", "B.D.E", "F"]
    assert config_items(cfg)["B.D"] is cfg.B.D
    assert config_items(cfg, nodes=False) == {"A": 1, "B.C": [2], "B.D.E": "x", "F": None}
    full = get_cfg()
    add_pix2seq_config(full)
    assert config_items(full, nodes=False)["MODEL.PIX2SEQ.NUM_BINS"] == full.MODEL.PIX2SEQ.NUM_BINS
