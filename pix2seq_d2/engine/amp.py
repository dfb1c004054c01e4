"""Mixed-precision training steps for GPUs (float16 + gradient scaling) and CPUs (bfloat16).

Detectron2's ``AMPTrainer`` runs float16 autocast on CUDA only (it asserts a GPU). This
trainer keeps its checkpointed state (the grad scaler) and its loop, but autocasts on the
model's own device with ``SOLVER.AMP.PRECISION``:

* ``"float16"``: gradients are scaled by a ``torch.amp.GradScaler`` (skips steps whose
  gradients overflow, lowers the scale, raises it again after stable steps);
* ``"bfloat16"``: float32's exponent range, so no scaling (the scaler is disabled and its
  ``step`` is a plain ``optimizer.step``);
* ``"auto"``: float16 on a GPU, bfloat16 on the CPU.

The loss itself is computed in float32 (:func:`~pix2seq_d2.modeling.losses.sequence_loss` upcasts the logits).
"""

from __future__ import annotations

import time

import torch
from detectron2.config import CfgNode
from detectron2.engine import AMPTrainer
from detectron2.utils.events import get_event_storage
from torch import nn

from pix2seq_d2.solver.precision import amp_dtype


class MixedPrecisionTrainer(AMPTrainer):
    """``AMPTrainer`` that autocasts on the model's device (CUDA or CPU) in float16 or bfloat16."""

    def __init__(self, model: nn.Module, data_loader, optimizer: torch.optim.Optimizer, precision: torch.dtype):
        self.device_type = next(model.parameters()).device.type
        scaler = torch.amp.GradScaler(self.device_type, enabled=precision == torch.float16)
        super().__init__(model, data_loader, optimizer, grad_scaler=scaler, precision=precision)

    @classmethod
    def from_config(cls, cfg: CfgNode, model: nn.Module, data_loader, optimizer) -> MixedPrecisionTrainer:
        device_type = next(model.parameters()).device.type
        return cls(model, data_loader, optimizer, amp_dtype(cfg.SOLVER.AMP.PRECISION, device_type))

    def run_step(self) -> None:
        # AMPTrainer.run_step with one change: autocast on the model's device type (AMPTrainer's asserts CUDA
        # and uses torch.cuda.amp.autocast). It has no hook for the autocast, so its loop is written here again,
        # using SimpleTrainer's protected _data_loader_iter and _write_metrics as AMPTrainer does;
        # tests/engine/test_trainer.py fails when detectron2 changes AMPTrainer.run_step.
        assert self.model.training, "[MixedPrecisionTrainer] model was changed to eval mode!"
        start = time.perf_counter()
        data = next(self._data_loader_iter)
        data_time = time.perf_counter() - start

        with torch.autocast(self.device_type, dtype=self.precision):
            loss_dict = self.model(data)
            losses = sum(loss_dict.values())
        self.optimizer.zero_grad()
        self.grad_scaler.scale(losses).backward()
        if self.grad_scaler.is_enabled():
            get_event_storage().put_scalar("grad_scale", self.grad_scaler.get_scale(), smoothing_hint=False)
        self.after_backward()
        self._write_metrics(loss_dict, data_time)
        self.grad_scaler.step(self.optimizer)  # unscales first, so clipping sees true gradients
        self.grad_scaler.update()
