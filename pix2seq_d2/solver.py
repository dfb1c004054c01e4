"""Optimizer and learning-rate schedule for Pix2Seq training.

AdamW with no weight decay on norms, biases and embeddings (every 1-D parameter and every
``nn.Embedding``), with gradient clipping from ``SOLVER.CLIP_GRADIENTS``: detectron2's
per-parameter "value"/"norm" types, or "full_model", the global norm over all parameters.
``SOLVER.LR_SCHEDULER_NAME = "WarmupLinearDecayLR"`` gives the paper's warmup then linear
decay to ``SOLVER.END_LR_FACTOR``; any other name goes to detectron2's schedulers.
"""

from __future__ import annotations

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


def build_optimizer(cfg: CfgNode, model: nn.Module) -> torch.optim.Optimizer:
    """AdamW from ``SOLVER.BASE_LR/BETAS/WEIGHT_DECAY`` with ``SOLVER.CLIP_GRADIENTS``."""
    if cfg.SOLVER.OPTIMIZER.upper() != "ADAMW":
        raise ValueError(f"Pix2Seq trains with AdamW; SOLVER.OPTIMIZER={cfg.SOLVER.OPTIMIZER!r} is not supported")
    clip = cfg.SOLVER.CLIP_GRADIENTS
    if clip.ENABLED and clip.CLIP_TYPE == "full_model":
        adamw = with_global_norm_clipping(torch.optim.AdamW, clip.CLIP_VALUE)
    else:
        adamw = maybe_add_gradient_clipping(cfg, torch.optim.AdamW)
    groups = optimizer_param_groups(model, cfg.SOLVER.WEIGHT_DECAY)
    return adamw(groups, lr=cfg.SOLVER.BASE_LR, betas=tuple(cfg.SOLVER.BETAS))


def build_lr_scheduler(cfg: CfgNode, optimizer: torch.optim.Optimizer) -> torch.optim.lr_scheduler.LRScheduler:
    """Warmup + linear decay ("WarmupLinearDecayLR"), or one of detectron2's schedules."""
    if cfg.SOLVER.LR_SCHEDULER_NAME != "WarmupLinearDecayLR":
        return build_d2_lr_scheduler(cfg, optimizer)
    decay = LinearParamScheduler(1.0, cfg.SOLVER.END_LR_FACTOR)
    schedule = WarmupParamScheduler(
        decay,
        cfg.SOLVER.WARMUP_FACTOR,
        min(cfg.SOLVER.WARMUP_ITERS / cfg.SOLVER.MAX_ITER, 1.0),
        cfg.SOLVER.WARMUP_METHOD,
        cfg.SOLVER.RESCALE_INTERVAL,
    )
    return LRMultiplier(optimizer, multiplier=schedule, max_iter=cfg.SOLVER.MAX_ITER)
