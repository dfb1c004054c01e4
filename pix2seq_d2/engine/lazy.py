"""Explicit-argument builders and hooks for detectron2 LazyConfig (python) configs of Pix2Seq.

The yaml path builds everything from one ``CfgNode`` (``Pix2SeqTrainer``, ``build_optimizer(cfg, model)``,
``build_resumable_train_loader(cfg, mapper)``, ...). A LazyConfig (``configs/lazy/*.py``, run by
``tools/lazyconfig_train_net.py``) describes each object by its constructor's arguments instead, like
``L(Pix2Seq)(backbone=L(ResNet)(...), encoder=L(TransformerEncoder)(...), ...)``. Most of our classes
take explicit arguments already; this module holds what the configs need besides them:

* re-exported from their owners, for the configs:
  :func:`~pix2seq_d2.modeling.backbone.small_resnet.small_resnet_stages`,
  :func:`~pix2seq_d2.modeling.meta_arch.pix2seq.token_decoder`, :func:`~pix2seq_d2.solver.build.build_adamw`,
  :func:`~pix2seq_d2.solver.build.with_gradient_clipping` and :func:`~pix2seq_d2.solver.build.warmup_fraction`
  (what the yaml path's ``build_small_resnet_backbone``, ``Pix2Seq.from_config``,
  ``build_optimizer`` and ``build_lr_scheduler`` call);
* data: :func:`resumable_train_loader`, the exact-resume train loader of
  :func:`~pix2seq_d2.data.resumable_loader.build_resumable_train_loader` from explicit arguments;
* training: :class:`ExactResumeHook` (a resumed run continues the data stream and the per-step RNG
  seeding where it stopped, what ``Pix2SeqTrainer`` does for the yaml path), and, re-exported,
  :func:`~pix2seq_d2.engine.distributed.with_checkpointed_weights` (evaluate the weights that get
  checkpointed: the EMA when enabled, rank 0's buffers; ``Pix2SeqTrainer`` evaluates through it too).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from detectron2.config import get_cfg
from detectron2.engine import HookBase

from pix2seq_d2.config.defaults import add_pix2seq_config
from pix2seq_d2.data.resumable_loader import (
    build_resumable_train_loader,
    continue_stream_at,
    seed_step_rngs,
)
from pix2seq_d2.modeling.backbone.small_resnet import small_resnet_stages
from pix2seq_d2.modeling.meta_arch.pix2seq import token_decoder
from pix2seq_d2.solver.build import build_adamw, warmup_fraction, with_gradient_clipping

from .distributed import with_checkpointed_weights

__all__ = [
    "ExactResumeHook",
    "build_adamw",
    "resumable_train_loader",
    "small_resnet_stages",
    "token_decoder",
    "warmup_fraction",
    "with_checkpointed_weights",
    "with_gradient_clipping",
]


# ---- data ------------------------------------------------------------------------------------------
def resumable_train_loader(
    names: str | Sequence[str],
    mapper: Callable[[dict], dict | None],
    *,
    total_batch_size: int,
    seed: int = -1,
    num_workers: int = 0,
    aspect_ratio_grouping: bool = True,
    filter_empty: bool = True,
    sampler: str = "TrainingSampler",
    repeat_threshold: float = 0.0,
    repeat_sqrt: bool = True,
    random_subset_ratio: float = 0.8,
    num_classes: int | None = None,
):
    """The training loader of the registered datasets ``names``: a
    :class:`~pix2seq_d2.data.resumable_loader.ResumableTrainLoader` (every batch a function of ``(seed,
    iteration)``, so a resumed run continues the stream exactly), or detectron2's loader for a sampler
    it does not support. ``total_batch_size`` is over all workers; ``seed`` < 0 draws one (saved in
    checkpoints); the other arguments are the ``DATALOADER.*`` keys of the same names; ``num_classes``:
    every annotation's category is checked against it first.

    Runs ``build_resumable_train_loader``, which reads these values from a config node: one is made here.
    """
    cfg = get_cfg()  # detectron2's defaults, for the keys the fallback loader reads
    add_pix2seq_config(cfg)
    cfg.DATASETS.TRAIN = (names,) if isinstance(names, str) else tuple(names)
    cfg.SOLVER.IMS_PER_BATCH = total_batch_size
    cfg.SEED = seed
    d = cfg.DATALOADER
    d.NUM_WORKERS = num_workers
    d.ASPECT_RATIO_GROUPING = aspect_ratio_grouping
    d.FILTER_EMPTY_ANNOTATIONS = filter_empty
    d.SAMPLER_TRAIN = sampler
    d.REPEAT_THRESHOLD = repeat_threshold
    d.REPEAT_SQRT = repeat_sqrt
    d.RANDOM_SUBSET_RATIO = random_subset_ratio
    return build_resumable_train_loader(cfg, mapper, num_classes=num_classes)


# ---- training --------------------------------------------------------------------------------------
class ExactResumeHook(HookBase):
    """Exact resume for a trainer built from a LazyConfig (``Pix2SeqTrainer.resume_or_load`` and
    ``run_step`` do the same on the yaml path; see pix2seq_d2/data/resumable_loader.py):

    * before training, a :class:`ResumableTrainLoader` starts its stream at the trainer's start
      iteration (its seed comes back from the checkpoint, where it is saved as ``"data_loader"``);
    * before every step, Python's, numpy's and torch's global RNGs (dropout, drop path) are seeded
      from ``(seed, rank, iteration)``, so a resumed run draws what the uninterrupted run drew.

    ``seed``: the run's seed (``train.seed``) for a loader that is not resumable; < 0: one per process.
    Register it last, so that no hook draws from the global RNGs between its seeding and the step.
    """

    def __init__(self, data_loader, seed: int = -1):
        self.data_loader = data_loader
        self.seed = seed

    def before_train(self) -> None:
        continue_stream_at(self.trainer, self.trainer.start_iter)

    def before_step(self) -> None:
        seed_step_rngs(self.data_loader, self.seed, self.trainer.iter)
