#!/usr/bin/env python
"""Train or evaluate Pix2Seq with detectron2's launcher (any number of GPUs, machines, or CPU workers).

python tools/train_net.py --config-file configs/pix2seq_R50.yaml --num-gpus 8
python tools/train_net.py --config-file configs/pix2seq_R50.yaml --eval-only MODEL.WEIGHTS model.pth

``--eval-only`` also writes the results to ``OUTPUT_DIR/eval_results.json``.
"""

from __future__ import annotations

import pix2seq_d2  # noqa: F401  (first: it keeps detectron2's import-time FutureWarnings off the console)

# isort: split

import json
import os
import sys

from detectron2.config import CfgNode
from detectron2.engine import default_setup
from detectron2.evaluation import verify_results
from detectron2.utils import comm
from detectron2.utils.logger import setup_logger

from pix2seq_d2 import Pix2SeqTrainer
from pix2seq_d2.checkpoint import Pix2SeqCheckpointer
from pix2seq_d2.config import load_config, prepare_config
from pix2seq_d2.engine.launch import launch_command, parse_train_args
from pix2seq_d2.engine.trainer import share_cpu_threads_among_workers
from pix2seq_d2.modeling.ema import use_ema_weights


def setup(args) -> CfgNode:
    # unknown keys: an error naming key and file; DATASETS.COCO registered (in every worker);
    # NUM_CLASSES 0 -> the training set's classes (written to config.yaml); every setting checked
    cfg = prepare_config(
        load_config(args.config_file, args.opts), for_training=not args.eval_only, num_workers=comm.get_world_size()
    )
    cfg.freeze()
    default_setup(cfg, args)
    # detectron2 sets up its own loggers; this package logs under "pix2seq_d2".
    setup_logger(cfg.OUTPUT_DIR, distributed_rank=comm.get_rank(), name="pix2seq_d2", abbrev_name="p2s")
    share_cpu_threads_among_workers()
    return cfg


def write_results(results: dict, path: str) -> None:
    """Save evaluation results ({dataset: {task: {metric: value}}} or {task: ...}) as json."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        json.dump(results, f, indent=2)


def main(args):
    cfg = setup(args)
    newest_intact = getattr(args, "resume_newest_intact", False)
    resume = args.resume or newest_intact
    if args.eval_only:
        model = Pix2SeqTrainer.build_model(cfg)
        # weights-only loading; a file that is no checkpoint is an error saying what it is
        checkpointer = Pix2SeqCheckpointer(model, save_dir=cfg.OUTPUT_DIR, resume_newest_intact=newest_intact or None)
        checkpoint = checkpointer.resume_or_load(cfg.MODEL.WEIGHTS, resume=resume)
        if cfg.MODEL.EMA.ENABLED:
            use_ema_weights(model, checkpoint)
        results = Pix2SeqTrainer.test(cfg, model)
        if comm.is_main_process():
            verify_results(cfg, results)
            write_results(results, os.path.join(cfg.OUTPUT_DIR, "eval_results.json"))
        return results
    trainer = Pix2SeqTrainer(cfg)
    trainer.checkpointer.resume_newest_intact |= newest_intact
    trainer.resume_or_load(resume=resume)
    return trainer.train()


def parse_args(argv: list[str] | None = None):
    return parse_train_args(
        argv, "OUTPUT_DIR", "configs/quickstart/pix2seq_shapes.yaml (CPU) or configs/pix2seq_R50.yaml"
    )


if __name__ == "__main__":
    sys.exit(launch_command(main, parse_args()))
