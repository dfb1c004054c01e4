"""Training hooks Pix2Seq adds to detectron2's: the weight EMA's update after every step, and the check
that all data-parallel workers end training with the same weights."""

from __future__ import annotations

import logging

from detectron2.engine import HookBase
from detectron2.utils import comm

from pix2seq_d2.engine.distributed import check_replicas_agree
from pix2seq_d2.modeling.ema import ModelEMA

__all__ = ["EMAHook", "ReplicaAgreementHook"]

logger = logging.getLogger(__name__)


class EMAHook(HookBase):
    """Updates a ``ModelEMA`` from the trainer's model after every optimizer step."""

    def __init__(self, ema: ModelEMA):
        self.ema = ema

    def before_train(self) -> None:
        # A fresh run starts averaging from the weights training starts from (MODEL.WEIGHTS are
        # loaded after the trainer, and so the EMA, is built); a resumed one keeps its average.
        if self.ema.updates == 0:
            self.ema.reset(self.trainer.model)

    def after_step(self) -> None:
        self.ema.update(self.trainer.model)


class ReplicaAgreementHook(HookBase):
    """After training, checks that all workers hold the same parameters (see the module docstring)."""

    def after_train(self) -> None:
        # Only after a completed run: after an exception another worker may be gone, and a
        # collective would hang (detectron2's EvalHook guards its final evaluation the same way).
        if comm.get_world_size() == 1 or self.trainer.iter + 1 < self.trainer.max_iter:
            return
        fingerprints = check_replicas_agree(self.trainer.model)
        total = float(fingerprints[0][:, 0].sum())
        logger.info(
            f"Weights agree across {len(fingerprints)} workers "
            f"({len(fingerprints[0])} parameters; sum of all weights {total:.10g})"
        )
