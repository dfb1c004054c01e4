"""Optimizer and learning-rate schedule for Pix2Seq training.

AdamW with no weight decay on norms, biases and embeddings (every 1-D parameter and every
``nn.Embedding``), with gradient clipping from ``SOLVER.CLIP_GRADIENTS``: detectron2's
per-parameter "value"/"norm" types, or "full_model", the global norm over all parameters.
``SOLVER.LR_SCHEDULER_NAME = "WarmupLinearDecayLR"`` gives the paper's warmup then linear
decay to ``SOLVER.END_LR_FACTOR``; any other name goes to detectron2's schedulers.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import torch
from detectron2.config import CfgNode
from detectron2.solver import build_lr_scheduler as build_d2_lr_scheduler
from detectron2.solver.build import maybe_add_gradient_clipping
from detectron2.solver.lr_scheduler import LRMultiplier, WarmupParamScheduler
from fvcore.common.param_scheduler import LinearParamScheduler
from torch import nn


def optimizer_param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Two parameter groups: with ``weight_decay``, and without (norms, biases, embeddings)."""
    embedding_params = {id(p) for m in model.modules() if isinstance(m, nn.Embedding) for p in m.parameters()}
    decay, no_decay = [], []
    for p in model.parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim <= 1 or id(p) in embedding_params else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def with_global_norm_clipping(optimizer_cls: type, max_norm: float) -> type:
    """A subclass of ``optimizer_cls`` whose ``step`` first clips the global gradient norm."""

    class GlobalNormClipping(optimizer_cls):
        def step(self, closure=None):
            params = [p for group in self.param_groups for p in group["params"]]
            torch.nn.utils.clip_grad_norm_(params, max_norm)
            return super().step(closure)

    GlobalNormClipping.__name__ = f"{optimizer_cls.__name__}WithGlobalNormClipping"
    return GlobalNormClipping


def with_gradient_clipping(
    optimizer_cls: type[torch.optim.Optimizer],
    *,
    enabled: bool = True,
    clip_type: str = "full_model",
    clip_value: float = 1.0,
    norm_type: float = 2.0,
) -> type[torch.optim.Optimizer]:
    """``optimizer_cls`` with ``SOLVER.CLIP_GRADIENTS``'s clipping before each step: "full_model" clips
    the global norm over all parameters to ``clip_value``; "value" and "norm" are detectron2's
    per-parameter clippers; ``enabled`` False returns ``optimizer_cls``."""
    if not enabled:
        return optimizer_cls
    if clip_type == "full_model":
        return with_global_norm_clipping(optimizer_cls, clip_value)
    # detectron2's per-parameter clippers are only offered through a config node.
    clip = {"ENABLED": True, "CLIP_TYPE": clip_type, "CLIP_VALUE": clip_value, "NORM_TYPE": norm_type}
    return maybe_add_gradient_clipping(CfgNode({"SOLVER": {"CLIP_GRADIENTS": clip}}), optimizer_cls)


def build_adamw(
    params: Iterable[dict] | Iterable[nn.Parameter],
    *,
    lr: float,
    betas: Sequence[float] = (0.9, 0.999),
    clip_gradients: Mapping | None = None,
) -> torch.optim.Optimizer:
    """AdamW over ``params`` (e.g. :func:`optimizer_param_groups`: each group carries its weight
    decay) with the clipping of :func:`with_gradient_clipping` (``clip_gradients``: its keyword
    arguments; None: no clipping)."""
    optimizer_cls = with_gradient_clipping(torch.optim.AdamW, **dict(clip_gradients or {"enabled": False}))
    return optimizer_cls(list(params), lr=lr, betas=tuple(betas))


def build_optimizer(cfg: CfgNode, model: nn.Module) -> torch.optim.Optimizer:
    """AdamW from ``SOLVER.BASE_LR/BETAS/WEIGHT_DECAY`` with ``SOLVER.CLIP_GRADIENTS``."""
    if cfg.SOLVER.OPTIMIZER.upper() != "ADAMW":
        raise ValueError(f"Pix2Seq trains with AdamW; SOLVER.OPTIMIZER={cfg.SOLVER.OPTIMIZER!r} is not supported")
    clip = cfg.SOLVER.CLIP_GRADIENTS
    clipping = dict(
        enabled=clip.ENABLED, clip_type=clip.CLIP_TYPE, clip_value=clip.CLIP_VALUE, norm_type=clip.NORM_TYPE
    )
    groups = optimizer_param_groups(model, cfg.SOLVER.WEIGHT_DECAY)
    return build_adamw(groups, lr=cfg.SOLVER.BASE_LR, betas=cfg.SOLVER.BETAS, clip_gradients=clipping)


def warmup_fraction(warmup_iters: int, max_iter: int) -> float:
    """The ``warmup_length`` (a fraction of training) of a ``WarmupParamScheduler`` whose warmup lasts
    ``warmup_iters`` iterations, at most the whole run (``SOLVER.WARMUP_ITERS`` / ``SOLVER.MAX_ITER``)."""
    if max_iter < 1:
        raise ValueError(f"max_iter must be >= 1, got {max_iter}")
    return min(warmup_iters / max_iter, 1.0)


def build_lr_scheduler(cfg: CfgNode, optimizer: torch.optim.Optimizer) -> torch.optim.lr_scheduler.LRScheduler:
    """Warmup + linear decay ("WarmupLinearDecayLR"), or one of detectron2's schedules."""
    if cfg.SOLVER.LR_SCHEDULER_NAME != "WarmupLinearDecayLR":
        return build_d2_lr_scheduler(cfg, optimizer)
    decay = LinearParamScheduler(1.0, cfg.SOLVER.END_LR_FACTOR)
    schedule = WarmupParamScheduler(
        decay,
        cfg.SOLVER.WARMUP_FACTOR,
        warmup_fraction(cfg.SOLVER.WARMUP_ITERS, cfg.SOLVER.MAX_ITER),
        cfg.SOLVER.WARMUP_METHOD,
        cfg.SOLVER.RESCALE_INTERVAL,
    )
    return LRMultiplier(optimizer, multiplier=schedule, max_iter=cfg.SOLVER.MAX_ITER)
