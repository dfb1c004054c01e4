#!/usr/bin/env python
"""Train or evaluate Pix2Seq from a LazyConfig (python) config, like detectron2's lazyconfig_train_net.py.

python tools/lazyconfig_train_net.py --config-file configs/lazy/pix2seq_shapes.py
python tools/lazyconfig_train_net.py --config-file configs/lazy/pix2seq_R50.py --num-gpus 8
python tools/lazyconfig_train_net.py --config-file configs/lazy/pix2seq_R50.py --eval-only \
    train.init_checkpoint=output/pix2seq_R50_lazy/model_final.pth

Settings are overridden with ``key=value`` arguments (``train.max_iter=100``, ``model.encoder.num_layers=2``,
``dataloader.train.names=shapes_val``); values are Python literals, anything else is a string, and a key the
config does not have is an error. The config needs ``model``, ``dataloader.train/test/evaluator``,
``optimizer`` (its ``params.model`` is set to the model), ``lr_multiplier`` and ``train`` (see
configs/lazy/common/train.py).

What it adds to detectron2's script, as tools/train_net.py's ``Pix2SeqTrainer`` does for yaml configs:
the weight EMA (``train.ema``: updated every step, checkpointed as "ema", evaluated instead of the raw
weights), mixed precision on GPUs and CPUs (``train.amp``), ``Pix2SeqCheckpointer`` (atomic, weights-only
checkpoints; ``--resume-newest-intact``), exact resume (the resumable train loader continues its data
stream and every step's RNG seeding where the checkpoint was written), a check that several workers end
with the same weights, and on CPU workers DDP without device ids and a share of the cores each.
``--eval-only`` writes the results to ``train.output_dir/eval_results.json``.
"""

from __future__ import annotations

import pix2seq_d2  # noqa: F401  (first: it keeps detectron2's import-time FutureWarnings off the console)

# isort: split

import ast
import difflib
import json
import logging
import os
import sys

from detectron2.config import LazyConfig, instantiate
from detectron2.engine import (
    SimpleTrainer,
    TrainerBase,
    create_ddp_model,
    default_setup,
    default_writers,
    hooks,
)
from detectron2.evaluation import inference_on_dataset, print_csv_format
from detectron2.utils import comm
from detectron2.utils.logger import setup_logger
from omegaconf import DictConfig, OmegaConf
from torch import nn

from pix2seq_d2.checkpoint import Pix2SeqCheckpointer
from pix2seq_d2.config import ConfigError
from pix2seq_d2.data.resumable_loader import ResumableTrainLoader
from pix2seq_d2.engine.amp import MixedPrecisionTrainer
from pix2seq_d2.engine.distributed import with_checkpointed_weights
from pix2seq_d2.engine.exact_resume import ExactResumeHook
from pix2seq_d2.engine.hooks import EMAHook, ReplicaAgreementHook
from pix2seq_d2.engine.launch import launch_command, parse_train_args
from pix2seq_d2.engine.trainer import share_cpu_threads_among_workers
from pix2seq_d2.modeling.ema import ModelEMA, use_ema_weights
from pix2seq_d2.solver.precision import amp_dtype
from pix2seq_d2.utils.errors import MissingFileError

logger = logging.getLogger("pix2seq_d2")


# ---- config ------------------------------------------------------------------------------------------
def _parse_value(text: str):
    """A command-line value: a Python literal (``3``, ``0.1``, ``[8, 16]``, ``None``, ``True``), also
    ``true``/``false``/``null``; anything else (a name, a path) is the string itself."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return {"true": True, "false": False, "null": None, "none": None}.get(text.lower(), text)


def _config_keys(node, prefix: str = "") -> list[str]:
    """Every key of a plain (unresolved) config container, dotted."""
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    keys = []
    for k, v in items:
        key = f"{prefix}{k}"
        keys.append(key)
        keys += _config_keys(v, key + ".")
    return keys


def apply_overrides(cfg: DictConfig, overrides: list[str]) -> DictConfig:
    """``key=value`` overrides applied to ``cfg`` in place; a malformed one or a key the config does not
    have is a :class:`ConfigError` naming it (and the keys it may have meant)."""
    known = None
    problems = []
    for override in overrides:
        key, sep, text = override.partition("=")
        if not sep or not key:
            problems.append(f"{override!r} given on the command line is not of the form key=value")
            continue
        missing = object()
        if OmegaConf.select(cfg, key, default=missing, throw_on_resolution_failure=False) is missing:
            known = known if known is not None else _config_keys(OmegaConf.to_container(cfg, resolve=False))
            close = difflib.get_close_matches(key, known, n=3, cutoff=0.6)
            hint = f"; did you mean {' or '.join(close)}?" if close else ""
            problems.append(f"unknown config key {key} given on the command line{hint}")
            continue
        OmegaConf.update(cfg, key, _parse_value(text), merge=True)
    if problems:
        raise ConfigError(problems)
    return cfg


def require_entries(cfg: DictConfig, entries: tuple[str, ...], config_file: str = "the config") -> None:
    """A :class:`ConfigError` naming the top-level ``entries`` that ``cfg`` lacks."""
    missing = [name for name in entries if name not in cfg]
    if missing:
        hint = " (a yaml config of tools/train_net.py?)" if "MODEL" in cfg or "_BASE_" in cfg else ""
        raise ConfigError([f"{config_file} is not a Pix2Seq LazyConfig: it has no {', '.join(missing)}{hint}"])


def load_lazy_config(config_file: str, overrides: list[str] = ()) -> DictConfig:
    """The LazyConfig ``config_file`` (a python config, or a config.yaml it saved) with the command line's
    ``key=value`` overrides."""
    if not os.path.isfile(config_file):
        raise MissingFileError(f"config file {config_file} does not exist")
    cfg = LazyConfig.load(config_file)
    require_entries(cfg, ("model", "dataloader", "train"), config_file)
    return apply_overrides(cfg, list(overrides))


def setup(args) -> DictConfig:
    cfg = load_lazy_config(args.config_file, args.opts)
    default_setup(cfg, args)  # loggers, config.yaml in train.output_dir, seeds (train.seed + rank)
    # detectron2 sets up its own loggers; this package logs under "pix2seq_d2".
    setup_logger(cfg.train.output_dir, distributed_rank=comm.get_rank(), name="pix2seq_d2", abbrev_name="p2s")
    share_cpu_threads_among_workers()
    return cfg


# ---- evaluation --------------------------------------------------------------------------------------
def do_test(cfg: DictConfig, model: nn.Module) -> dict:
    """``dataloader.test`` evaluated by ``dataloader.evaluator`` (none: ``{}``)."""
    if "evaluator" not in cfg.dataloader:
        return {}
    loader = instantiate(cfg.dataloader.test)  # first: a lazily generated dataset exists before the evaluator reads it
    results = inference_on_dataset(model, loader, instantiate(cfg.dataloader.evaluator))
    if comm.is_main_process():
        names = OmegaConf.select(cfg, "dataloader.test.dataset.names", default="the test set")
        logger.info(f"Evaluation results for {names} in csv format:")
        print_csv_format(results)
    return results


def write_results(results: dict, path: str) -> None:
    """Save evaluation results ({task: {metric: value}}) as json."""
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with open(path, "w") as f:
        json.dump(results, f, indent=2)


# ---- training ----------------------------------------------------------------------------------------
def wrap_distributed(model: nn.Module, ddp: DictConfig | dict) -> nn.Module:
    """DDP over all workers with ``train.ddp``'s options (no-op for one); ``device_ids`` only for a model
    on a GPU (detectron2's default would pass invalid ones for CPU workers)."""
    on_gpu = next(model.parameters()).device.type == "cuda"
    return create_ddp_model(model, device_ids=[comm.get_local_rank()] if on_gpu else None, **ddp)


def build_trainer(cfg: DictConfig) -> tuple[TrainerBase, Pix2SeqCheckpointer]:
    """The model, optimizer, train loader, trainer, checkpointer and hooks of ``cfg`` (not yet resumed)."""
    require_entries(cfg, ("optimizer", "lr_multiplier"))
    model = instantiate(cfg.model)
    logger.info(f"Model:\n{model}")
    model.to(cfg.train.device)
    cfg.optimizer.params.model = model
    optimizer = instantiate(cfg.optimizer)
    train_loader = instantiate(cfg.dataloader.train)

    model = wrap_distributed(model, cfg.train.ddp)
    if cfg.train.amp.enabled:  # float16 + gradient scaling on GPUs, bfloat16 on CPUs (train.amp.precision)
        precision = amp_dtype(cfg.train.amp.precision, next(model.parameters()).device.type)
        trainer = MixedPrecisionTrainer(model, train_loader, optimizer, precision)
    else:
        trainer = SimpleTrainer(model, train_loader, optimizer)
    ema = ModelEMA(model, cfg.train.ema.decay) if cfg.train.ema.enabled else None

    # Checkpoints hold the model, the trainer (iteration, optimizer, grad scaler, hooks' state such as
    # the LR schedule), the EMA and the train loader's seed.
    checkpointables = {"ema": ema} if ema is not None else {}
    if isinstance(train_loader, ResumableTrainLoader):
        checkpointables["data_loader"] = train_loader
    checkpointer = Pix2SeqCheckpointer(model, cfg.train.output_dir, trainer=trainer, **checkpointables)
    evaluate = with_checkpointed_weights(lambda: do_test(cfg, model), model, ema)
    main_process = comm.is_main_process()
    trainer.register_hooks(
        [
            hooks.IterationTimer(),
            hooks.LRScheduler(scheduler=instantiate(cfg.lr_multiplier)),
            EMAHook(ema) if ema is not None else None,  # before checkpointing and evaluation
            hooks.PeriodicCheckpointer(checkpointer, **cfg.train.checkpointer) if main_process else None,
            hooks.EvalHook(cfg.train.eval_period, evaluate),
            hooks.PeriodicWriter(default_writers(cfg.train.output_dir, cfg.train.max_iter), period=cfg.train.log_period)
            if main_process
            else None,
            ReplicaAgreementHook() if comm.get_world_size() > 1 else None,
            ExactResumeHook(train_loader, seed=cfg.train.seed),  # last: seeds the RNGs right before each step
        ]
    )
    return trainer, checkpointer


def resume_or_load(trainer: TrainerBase, checkpointer: Pix2SeqCheckpointer, path: str, resume: bool) -> int:
    """With ``resume`` and a checkpoint in the output folder: everything it holds, and the iteration after
    its one is returned; otherwise the model weights of ``path`` ("" none) and 0."""
    checkpointer.resume_or_load(path, resume=resume)
    if resume and checkpointer.has_checkpoint():
        return trainer.iter + 1  # the checkpoint holds the iteration that had just finished
    return 0


def do_train(args, cfg: DictConfig) -> None:
    trainer, checkpointer = build_trainer(cfg)
    newest_intact = getattr(args, "resume_newest_intact", False)
    checkpointer.resume_newest_intact |= newest_intact
    start_iter = resume_or_load(trainer, checkpointer, cfg.train.init_checkpoint, args.resume or newest_intact)
    trainer.train(start_iter, cfg.train.max_iter)


def do_eval_only(args, cfg: DictConfig) -> dict:
    """Evaluate ``train.init_checkpoint`` (with ``--resume``: the output folder's last checkpoint), its
    weight average when ``train.ema.enabled``."""
    model = instantiate(cfg.model)
    model.to(cfg.train.device)
    newest_intact = getattr(args, "resume_newest_intact", False)
    checkpointer = Pix2SeqCheckpointer(model, cfg.train.output_dir, resume_newest_intact=newest_intact or None)
    checkpoint = checkpointer.resume_or_load(cfg.train.init_checkpoint, resume=args.resume or newest_intact)
    if cfg.train.ema.enabled:
        use_ema_weights(model, checkpoint)
    results = do_test(cfg, model)
    if comm.is_main_process():
        write_results(results, os.path.join(cfg.train.output_dir, "eval_results.json"))
    return results


def main(args):
    cfg = setup(args)
    if args.eval_only:
        return do_eval_only(args, cfg)
    return do_train(args, cfg)


def parse_args(argv: list[str] | None = None):
    return parse_train_args(
        argv, "train.output_dir", "configs/lazy/pix2seq_shapes.py (CPU) or configs/lazy/pix2seq_R50.py"
    )


if __name__ == "__main__":
    sys.exit(launch_command(main, parse_args()))
