"""Configs by name: pix2seq_d2.model_zoo.get_config_file / get_config from any working directory, the shipped
folder being the repository's configs/, and the tools' --config-file resolving names in one place."""

from __future__ import annotations

import argparse
import os

import pytest

import pix2seq_d2.model_zoo as zoo
from pix2seq_d2.config import load_config
from pix2seq_d2.engine.launch import add_config_file_argument, parse_train_args
from pix2seq_d2.utils.errors import MissingFileError, UserError
from tests.helpers import QUICKSTART_CONFIG, REPO_ROOT

CONFIGS = os.path.join(REPO_ROOT, "configs")


def test_the_shipped_folder_is_the_repositorys_configs_through_a_committed_symlink():
    link = os.path.join(REPO_ROOT, "pix2seq_d2", "model_zoo", "configs")
    assert os.path.islink(link) and os.readlink(link) == os.path.join("..", "..", "configs")
    assert zoo.configs_dir() == os.path.realpath(CONFIGS)


def test_config_names_are_every_config_file():
    on_disk = sorted(
        os.path.relpath(os.path.join(folder, f), CONFIGS).replace(os.sep, "/")
        for folder, _, files in os.walk(CONFIGS)
        for f in files
        if f.endswith((".yaml", ".py"))
    )
    assert zoo.config_names() == on_disk
    assert {"quickstart/pix2seq_shapes.yaml", "official/pix2seq_R50_640.yaml", "lazy/pix2seq_shapes.py"} <= set(on_disk)


def test_names_resolve_from_any_working_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    expected = os.path.realpath(QUICKSTART_CONFIG)
    assert zoo.get_config_file("quickstart/pix2seq_shapes.yaml") == expected
    assert zoo.get_config_file("configs/quickstart/pix2seq_shapes.yaml") == expected  # the README's spelling
    assert zoo.get_config_file("./configs/quickstart/pix2seq_shapes.yaml") == expected
    assert zoo.shipped_config_file("official/pix2seq_R50_640.yaml") == os.path.join(
        os.path.realpath(CONFIGS), "official", "pix2seq_R50_640.yaml"
    )


def test_an_existing_path_is_taken_as_is(tmp_path, monkeypatch):
    own = tmp_path / "configs" / "quickstart" / "pix2seq_shapes.yaml"  # a user's own copy shadows the shipped one
    own.parent.mkdir(parents=True)
    own.write_text('_BASE_: "../../base.yaml"\n')
    monkeypatch.chdir(tmp_path)
    assert zoo.get_config_file("configs/quickstart/pix2seq_shapes.yaml") == "configs/quickstart/pix2seq_shapes.yaml"
    assert zoo.get_config_file(str(own)) == str(own)
    # ... but the converter's _BASE_ is always the shipped file, whatever the working directory holds
    assert zoo.shipped_config_file("configs/quickstart/pix2seq_shapes.yaml") == os.path.realpath(QUICKSTART_CONFIG)


def test_unknown_names_are_user_errors_with_suggestions(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(zoo.ConfigNotFoundError, match="did you mean quickstart/pix2seq_shapes.yaml") as err:
        zoo.get_config_file("quickstart/pix2seq_shape.yaml")
    assert isinstance(err.value, UserError) and isinstance(err.value, MissingFileError)
    for outside in ("../setup.py", "official/../../setup.py", "/nonexistent/pix2seq_R50.yaml"):
        with pytest.raises(zoo.ConfigNotFoundError):
            zoo.get_config_file(outside)
    # the lenient form (the tools' --config-file) leaves an unknown name for the loader to report
    assert zoo.resolve_config_path("missing.yaml") == "missing.yaml"
    with pytest.raises(MissingFileError, match="config file missing.yaml does not exist"):
        load_config(zoo.resolve_config_path("missing.yaml"))


def test_get_config_reads_the_yaml_through_load_config(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = zoo.get_config("official/pix2seq_R50_C4_1024.yaml", ["SOLVER.MAX_ITER", 7])
    reference = load_config(os.path.join(CONFIGS, "official", "pix2seq_R50_C4_1024.yaml"), ["SOLVER.MAX_ITER", 7])
    assert cfg == reference
    assert (cfg.MODEL.PIX2SEQ.IN_FEATURE, cfg.INPUT.LSJ.IMAGE_SIZE, cfg.SOLVER.MAX_ITER) == ("res4", 1024, 7)
    with pytest.raises(UserError, match="not a yaml config"):
        zoo.get_config("lazy/pix2seq_shapes.py")


def test_the_tools_config_file_argument_resolves_names(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    parser = argparse.ArgumentParser()
    add_config_file_argument(parser, default="configs/pix2seq_R50.yaml")
    assert parser.parse_args([]).config_file == os.path.join(os.path.realpath(CONFIGS), "pix2seq_R50.yaml")
    assert parser.parse_args(["--config-file", "missing.yaml"]).config_file == "missing.yaml"
    args = parse_train_args(["--config-file", "quickstart/pix2seq_shapes.yaml", "--eval-only"], "OUTPUT_DIR", "x")
    assert args.config_file == os.path.realpath(QUICKSTART_CONFIG) and args.eval_only
