#!/usr/bin/env python
"""Run one of detectron2's own tool scripts, unchanged, on a Pix2Seq config.

    python tools/d2_tool.py PATH/TO/detectron2/tools/analyze_model.py --tasks flop -n 2 \
        --config-file configs/quickstart/pix2seq_shapes.yaml
    python tools/d2_tool.py .venv/share/detectron2/tools/benchmark.py --task train \
        --config-file configs/quickstart/pix2seq_shapes.yaml SOLVER.IMS_PER_BATCH 2 OUTPUT_DIR output/bench
    python tools/d2_tool.py .venv/share/detectron2/tools/visualize_data.py --source dataloader \
        --config-file configs/quickstart/pix2seq_shapes.yaml --output-dir output/data
    python tools/d2_tool.py --datasets-from configs/my_data.yaml \
        .venv/share/detectron2/tools/visualize_json_results.py --dataset mydata_val \
        --input output/inference/coco_instances_results.json --output output/vis

The script runs as ``__main__`` with ``sys.argv`` = [SCRIPT, ARGS...], after
``pix2seq_d2.engine.d2_script_patches.installed()`` has replaced the names it imports from detectron2 (``get_cfg``
with the Pix2Seq keys; the train/test loaders with the Pix2Seq mappers; the Pix2Seq optimizer;
``build_model`` with the auto settings; ``FlopCountAnalysis`` that counts
``scaled_dot_product_attention``); detectron2's are restored afterwards.

The script's ``--config-file`` may name a config shipped with pix2seq_d2
(``quickstart/pix2seq_shapes.yaml``): the script gets its path. Before the script starts, the config
named by the script's ``--config-file`` (and the ``KEY VALUE`` overrides at the end of ARGS), or by
``--datasets-from`` for scripts that take no config (e.g. ``visualize_json_results.py``), is read as
``tools/train_net.py`` reads it: its ``DATASETS.COCO`` entries are registered, so that the script
finds them in ``DatasetCatalog``/``MetadataCatalog``, and its auto settings
(``MODEL.PIX2SEQ.NUM_CLASSES 0``) are checked to be resolvable. A problem with the config or the
datasets is one ``error: ...`` line and exit status 1.

The PyPI build of detectron2 ships the scripts in ``.venv/share/detectron2/tools`` (not
``deploy/export_model.py``: take it from a detectron2 source checkout). Multi-process runs
(``--num-gpus`` > 1) are not supported: the spawned workers cannot find a script run this way.
"""

from __future__ import annotations

import pix2seq_d2  # noqa: F401  (first: it keeps detectron2's import-time FutureWarnings off the console)

# isort: split

import argparse
import os
import re
import runpy
import sys

from detectron2.config import CfgNode

from pix2seq_d2.config import config_items, load_config, prepare_config
from pix2seq_d2.engine.d2_script_patches import installed
from pix2seq_d2.engine.launch import run_command
from pix2seq_d2.model_zoo import resolve_config_path
from pix2seq_d2.utils.errors import MissingFileError

_KEY = re.compile(r"^[A-Z][A-Z0-9_]*(\.[A-Z0-9_]+)*$")


def config_file_argument(argv: list[str]) -> str | None:
    """The value of ``--config-file FILE`` / ``--config-file=FILE`` in a script's arguments."""
    for i, arg in enumerate(argv):
        if arg == "--config-file" and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith("--config-file="):
            return arg.split("=", 1)[1]
    return None


def with_config_file(argv: list[str], config_file: str) -> list[str]:
    """``argv`` with the value of its ``--config-file`` replaced by ``config_file``."""
    out = list(argv)
    for i, arg in enumerate(out):
        if arg == "--config-file" and i + 1 < len(out):
            out[i + 1] = config_file
            break
        if arg.startswith("--config-file="):
            out[i] = f"--config-file={config_file}"
            break
    return out


def config_overrides(argv: list[str], cfg: CfgNode) -> list[str]:
    """The trailing ``KEY VALUE ...`` of a script's arguments (detectron2's scripts take them as their
    last positional arguments): from the first argument that is a key of ``cfg`` to the end."""
    keys = config_items(cfg)
    for i, arg in enumerate(argv):
        if _KEY.match(arg) and arg in keys and not (i and argv[i - 1].startswith("-") and "=" not in argv[i - 1]):
            return argv[i:]
    return []


def read_script_config(config_file: str, script_argv: list[str]) -> CfgNode:
    """The config the script will build (the file and the overrides at the end of its arguments), with
    its datasets registered and its auto settings resolved, as ``tools/train_net.py``'s setup does."""
    opts = config_overrides(script_argv, load_config(config_file))  # a missing file: MissingFileError
    return prepare_config(load_config(config_file, opts if len(opts) % 2 == 0 else []), for_training=False)


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--datasets-from",
        metavar="FILE",
        help="config whose DATASETS.COCO entries to register (default: the script's own --config-file)",
    )
    parser.add_argument("script", help="a detectron2 tool script, e.g. .venv/share/detectron2/tools/analyze_model.py")
    parser.add_argument("args", nargs=argparse.REMAINDER, help="the script's own arguments")
    return parser


def run_script(script: str, script_args: list[str], datasets_from: str | None = None) -> None:
    """Register the datasets of the script's config, then run ``script`` as ``__main__`` with
    ``sys.argv = [script, *script_args]`` and the Pix2Seq replacements installed."""
    if not os.path.isfile(script):
        raise MissingFileError(f"no detectron2 tool script at {script}")
    script_config = config_file_argument(script_args)
    if script_config:  # the script reads the file itself: give it the path of a config given by name
        script_config = resolve_config_path(script_config)
        script_args = with_config_file(script_args, script_config)
    config_file = resolve_config_path(datasets_from) if datasets_from else script_config
    if config_file and config_file.endswith(".yaml"):
        read_script_config(config_file, script_args)
    saved_argv, saved_path = sys.argv, list(sys.path)
    sys.argv = [script, *script_args]
    sys.path.insert(0, os.path.dirname(os.path.abspath(script)))  # as `python SCRIPT` would
    try:
        with installed():
            runpy.run_path(script, run_name="__main__")
    finally:
        sys.argv, sys.path[:] = saved_argv, saved_path


def main(argv: list[str] | None = None) -> None:
    args = get_parser().parse_args(argv)
    run_script(args.script, args.args, args.datasets_from)


if __name__ == "__main__":
    sys.exit(run_command(main))
