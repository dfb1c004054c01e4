"""An exponential moving average (EMA) of the model's weights: updated every step, checkpointed, evaluated.

``MODEL.EMA.ENABLED`` turns it on. ``ModelEMA`` keeps a float32 copy of every floating-point
entry of the model's ``state_dict`` (parameters and BatchNorm statistics) and after each
optimizer step moves it towards the live weights::

    ema = d * ema + (1 - d) * weights,    d = min(DECAY, (1 + n) / (10 + n))

where ``n`` counts the updates so far (the warm-up of TensorFlow's
``ExponentialMovingAverage``: early averages forget the random initialisation quickly).
Integer entries (``num_batches_tracked``) are copied.

``EMAHook`` does the update after every step; the trainer registers it before its
evaluation hook, saves the average in checkpoints under the key ``"ema"`` (next to the raw
``"model"``), and evaluates with the averaged weights swapped in (``ModelEMA.swapped_into``).
``tools/train_net.py --eval-only`` evaluates the average when the checkpoint has one and
``MODEL.EMA.ENABLED`` is set.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

import torch
from torch import nn

__all__ = ["ModelEMA", "unwrap_model", "use_ema_weights"]

logger = logging.getLogger(__name__)


def unwrap_model(model: nn.Module) -> nn.Module:
    """The module inside a ``DistributedDataParallel`` wrapper (or the model itself)."""
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


class ModelEMA:
    """Exponential moving average of a model's ``state_dict`` (see the module docstring)."""

    def __init__(self, model: nn.Module, decay: float = 0.9999):
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"MODEL.EMA.DECAY must be in [0, 1), got {decay}")
        self.decay = decay
        self.reset(model)

    def reset(self, model: nn.Module) -> None:
        """Start the average afresh at ``model``'s current weights."""
        self.updates = 0
        self.shadow = {k: v.detach().clone().float() if v.is_floating_point() else v.detach().clone()
                       for k, v in unwrap_model(model).state_dict().items()}  # fmt: skip

    def current_decay(self) -> float:
        return min(self.decay, (1 + self.updates) / (10 + self.updates))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """Move the average one step towards ``model``'s current weights."""
        d = self.current_decay()
        for name, value in unwrap_model(model).state_dict().items():
            avg = self.shadow[name]
            if avg.is_floating_point():
                avg.mul_(d).add_(value.detach().float(), alpha=1.0 - d)
            else:
                avg.copy_(value)
        self.updates += 1

    @torch.no_grad()
    def copy_to(self, model: nn.Module) -> None:
        """Load the averaged weights into ``model`` (cast to its dtypes)."""
        unwrap_model(model).load_state_dict(self.shadow)

    @contextlib.contextmanager
    def swapped_into(self, model: nn.Module) -> Iterator[nn.Module]:
        """Inside the block ``model`` holds the averaged weights; its own come back afterwards."""
        inner = unwrap_model(model)
        raw = {k: v.detach().clone() for k, v in inner.state_dict().items()}
        self.copy_to(inner)
        try:
            yield model
        finally:
            inner.load_state_dict(raw)

    # checkpointing (the trainer passes the EMA to its checkpointer as the "ema" entry)
    def state_dict(self) -> dict:
        return {"decay": self.decay, "updates": self.updates, "shadow": self.shadow}

    def load_state_dict(self, state: dict) -> None:
        missing = set(self.shadow) - set(state["shadow"])
        if missing:
            raise KeyError(f"the checkpoint's EMA lacks {len(missing)} model entries, e.g. {sorted(missing)[:3]}")
        self.updates = int(state["updates"])
        for name, value in state["shadow"].items():
            if name in self.shadow:
                self.shadow[name].copy_(value)


def use_ema_weights(model: nn.Module, checkpoint: dict) -> bool:
    """Load the ``"ema"`` entry of a loaded checkpoint's remaining dict into ``model``.

    ``checkpoint`` is what detectron2's ``Checkpointer.load``/``resume_or_load`` return (the
    entries it did not consume). Returns whether averaged weights were loaded; a checkpoint
    without them leaves the model's raw weights and logs a warning.
    """
    if "ema" not in checkpoint:
        logger.warning("MODEL.EMA.ENABLED but the checkpoint has no 'ema' entry: evaluating its raw weights")
        return False
    ema = ModelEMA(model)
    ema.load_state_dict(checkpoint["ema"])
    ema.copy_to(model)
    logger.info(f"Evaluating the exponential moving average of the weights ({ema.updates} updates)")
    return True
