"""Optimisation: AdamW with Pix2Seq's parameter groups and gradient clipping, the warmup + linear-decay
schedule (:mod:`.build`), and the autocast dtype of mixed precision (:mod:`.precision`)."""

from .build import build_adamw, build_lr_scheduler, build_optimizer, warmup_fraction, with_gradient_clipping
from .precision import PRECISIONS, amp_dtype

__all__ = [
    "PRECISIONS",
    "amp_dtype",
    "build_adamw",
    "build_lr_scheduler",
    "build_optimizer",
    "warmup_fraction",
    "with_gradient_clipping",
]
