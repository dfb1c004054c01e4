"""The training schedule as it will run: after detectron2's auto-scaling of the workers, the learning rate
traced through the scheduler the trainer builds; nonsense (no iterations, all warmup) stops with the
scaled numbers and the keys to set."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

import torch
from detectron2.config import CfgNode
from detectron2.engine import DefaultTrainer

from pix2seq_d2.solver.build import build_lr_scheduler

from .problems import Problem, error, number_text, report, warning
from .rules import table_problems

__all__ = ["LOW_LR_FRACTION", "check_schedule", "schedule_problems"]

# The schedule warns when the learning rate stays below this fraction of SOLVER.BASE_LR for most of the run.
LOW_LR_FRACTION = 0.1


@contextlib.contextmanager
def _quiet(name: str) -> Iterator[None]:
    """Silence ``name``'s info messages (detectron2 logs each auto-scaling; the trainer scales again)."""
    log = logging.getLogger(name)
    level = log.level
    log.setLevel(logging.WARNING)
    try:
        yield
    finally:
        log.setLevel(level)


def _auto_scaled(cfg: CfgNode, num_workers: int) -> CfgNode:
    with _quiet("detectron2.engine.defaults"):
        return DefaultTrainer.auto_scale_workers(cfg.clone(), num_workers)


def _lr_multipliers(cfg: CfgNode, samples: int = 2000) -> list[float] | None:
    """The learning rate / BASE_LR at (up to ``samples`` evenly spaced) iterations of the run, from
    the scheduler the trainer builds; None for a scheduler that does not expose its multiplier."""
    param = torch.nn.Parameter(torch.zeros(1))
    scheduler = build_lr_scheduler(cfg, torch.optim.SGD([param], lr=1.0))
    multiplier = getattr(scheduler, "_multiplier", None)  # detectron2's LRMultiplier
    max_iter = cfg.SOLVER.MAX_ITER
    if multiplier is None:
        return None
    iterations = (
        range(max_iter) if max_iter <= samples else [i * (max_iter - 1) // (samples - 1) for i in range(samples)]
    )
    return [float(multiplier(i / max_iter)) for i in iterations]


def schedule_problems(cfg: CfgNode, num_workers: int) -> list[Problem]:
    s = cfg.SOLVER
    reference = s.REFERENCE_WORLD_SIZE
    scaling = reference > 0 and reference != num_workers
    if scaling and s.IMS_PER_BATCH % reference:
        return [error(
            f"SOLVER.IMS_PER_BATCH = {s.IMS_PER_BATCH} is not a multiple of SOLVER.REFERENCE_WORLD_SIZE = {reference}: "
            f"detectron2 keeps IMS_PER_BATCH / REFERENCE_WORLD_SIZE images per worker when it scales the schedule to "
            f"{num_workers} worker(s). Make IMS_PER_BATCH a multiple of {reference}, or set REFERENCE_WORLD_SIZE 0 to "
            "disable the scaling"
        )]  # fmt: skip
    scaled = _auto_scaled(cfg, num_workers)
    t = scaled.SOLVER
    where = unscale = ""
    if scaling:
        changes = [
            (k, before, after)
            for k, before, after in (
                ("IMS_PER_BATCH", s.IMS_PER_BATCH, t.IMS_PER_BATCH), ("BASE_LR", s.BASE_LR, t.BASE_LR),
                ("MAX_ITER", s.MAX_ITER, t.MAX_ITER), ("WARMUP_ITERS", s.WARMUP_ITERS, t.WARMUP_ITERS),
                ("CHECKPOINT_PERIOD", s.CHECKPOINT_PERIOD, t.CHECKPOINT_PERIOD),
                ("TEST.EVAL_PERIOD", cfg.TEST.EVAL_PERIOD, scaled.TEST.EVAL_PERIOD),
            )
            if before != after
        ]  # fmt: skip
        where = (
            f" after detectron2's auto-scaling from SOLVER.REFERENCE_WORLD_SIZE = {reference} to {num_workers} "
            f"worker(s) (x{num_workers / reference:g}: "
            + ", ".join(f"{k} {number_text(b)} -> {number_text(a)}" for k, b, a in changes)
            + ")"
        )
        unscale = (
            "; or set SOLVER.REFERENCE_WORLD_SIZE 0 to train with the config's numbers as written "
            f"(or run on {reference} workers)"
        )
    problems = []
    if t.MAX_ITER < 1:
        problems.append(error(
            f"SOLVER.MAX_ITER = {s.MAX_ITER} becomes {t.MAX_ITER}{where}: raise SOLVER.MAX_ITER{unscale}"
        ))  # fmt: skip
    if t.IMS_PER_BATCH < num_workers or t.IMS_PER_BATCH % num_workers:
        problems.append(error(
            f"SOLVER.IMS_PER_BATCH = {t.IMS_PER_BATCH}{where} must be a positive multiple of the {num_workers} "
            "worker(s) (each takes IMS_PER_BATCH / workers images)"
        ))  # fmt: skip
    if t.CHECKPOINT_PERIOD < 1:
        problems.append(error(
            f"SOLVER.CHECKPOINT_PERIOD = {s.CHECKPOINT_PERIOD} becomes {t.CHECKPOINT_PERIOD}{where}: it must stay "
            f">= 1 (0 divides by zero); raise SOLVER.CHECKPOINT_PERIOD{unscale}"
        ))  # fmt: skip
    if cfg.TEST.EVAL_PERIOD > 0 and scaled.TEST.EVAL_PERIOD < 1:
        problems.append(warning(
            f"TEST.EVAL_PERIOD = {cfg.TEST.EVAL_PERIOD} becomes 0{where}: no evaluation before the end of training"
        ))  # fmt: skip
    if problems:
        return problems
    try:
        curve = _lr_multipliers(scaled)
    except (ValueError, AssertionError, KeyError, TypeError, ZeroDivisionError) as e:
        return [error(f"SOLVER.LR_SCHEDULER_NAME = {s.LR_SCHEDULER_NAME!r}: the schedule cannot be built from "
                       f"SOLVER.*: {e!r}")]  # fmt: skip
    if not curve:
        return []
    peak = max(curve)
    low = sum(m < LOW_LR_FRACTION for m in curve) / len(curve)
    lr = f"the learning rate peaks at {peak:.1%} of SOLVER.BASE_LR ({peak * t.BASE_LR:.3g})"
    if t.WARMUP_ITERS >= t.MAX_ITER and t.WARMUP_FACTOR < 1:
        message = (
            f"SOLVER.WARMUP_ITERS = {t.WARMUP_ITERS} >= SOLVER.MAX_ITER = {t.MAX_ITER}{where}: the whole run is "
            f"warmup and {lr}. Set SOLVER.WARMUP_ITERS below SOLVER.MAX_ITER{unscale}"
        )
        # Auto-scaling changed the numbers the user wrote into ones nobody wants: stop. A short run as
        # written (a smoke test of a few iterations) is only warned about.
        return [error(message) if scaling else warning(message)]
    if peak < LOW_LR_FRACTION:
        return [warning(f"{lr}{where}: it never exceeds {LOW_LR_FRACTION:.0%} of it (SOLVER.WARMUP_*, GAMMA, "
                         "STEPS, END_LR_FACTOR)")]  # fmt: skip
    if low > 0.5:
        return [warning(
            f"the learning rate stays below {LOW_LR_FRACTION:.0%} of SOLVER.BASE_LR for {low:.0%} of the "
            f"{t.MAX_ITER} iterations{where} (SOLVER.WARMUP_ITERS = {t.WARMUP_ITERS}, LR_SCHEDULER_NAME = "
            f"{s.LR_SCHEDULER_NAME!r}){unscale}"
        )]  # fmt: skip
    if t.WARMUP_ITERS > t.MAX_ITER / 2 and t.WARMUP_FACTOR < 1:
        return [warning(
            f"the warmup (SOLVER.WARMUP_ITERS = {t.WARMUP_ITERS}) takes {t.WARMUP_ITERS / t.MAX_ITER:.0%} of the "
            f"{t.MAX_ITER} iterations{where}"
        )]  # fmt: skip
    return []


def check_schedule(cfg: CfgNode, num_workers: int) -> list[str]:
    """The training schedule as it will run on ``num_workers`` workers, i.e. after detectron2's
    ``DefaultTrainer.auto_scale_workers`` (called on a clone): an error when the scaled
    ``MAX_ITER``/``CHECKPOINT_PERIOD`` fall below 1, the batch does not split over the workers, or
    auto-scaling makes the whole run warmup; a warning when the learning rate never leaves warmup
    as written, or stays below 10% of ``BASE_LR`` for most of the run. Messages show the scaled
    numbers and which keys to set. Raises :class:`ConfigError`; returns the warnings (logged once)."""
    table = [p for p in table_problems(cfg, for_training=True) if p.key.startswith(("SOLVER.", "TEST."))]
    if any(not p.warning for p in table):
        return report(table)  # the values the schedule is computed from are invalid
    return report(table + schedule_problems(cfg, num_workers))
