"""Exact resume on the trainer's side: a resumed run continues the data stream where the checkpoint was
written, and every training step seeds the global RNGs (dropout, drop path) from (the run's seed, rank,
iteration), so a run killed with ``kill -9`` and resumed ends with the weights of an uninterrupted run.

``Pix2SeqTrainer`` (the yaml path) calls :func:`continue_stream_at` after loading a checkpoint and
:func:`seed_step_rngs` before each step; a LazyConfig trainer registers :class:`ExactResumeHook`, which
does the same. The data side is :mod:`pix2seq_d2.data.resumable_loader`.
"""

from __future__ import annotations

from detectron2.engine import HookBase
from detectron2.utils import comm

from pix2seq_d2.data.resumable_loader import ResumableTrainLoader
from pix2seq_d2.utils.seeding import iteration_seed, process_seed, seed_global_rngs

__all__ = ["ExactResumeHook", "continue_stream_at", "seed_step_rngs", "training_seed"]


def training_seed(loader, seed: int) -> int:
    """The seed of a training run: its resumable loader's (saved in checkpoints), else ``seed``
    (``SEED``, when >= 0), else one drawn once per process (then a resumed run is not exact)."""
    if isinstance(loader, ResumableTrainLoader):
        return loader.seed
    return process_seed(seed)


def seed_step_rngs(loader, seed: int, iteration: int) -> None:
    """Before training step ``iteration``: seed the global RNGs (dropout, drop path) from the run's
    seed (:func:`training_seed` of ``loader`` and ``seed``), this worker's rank and the iteration, so
    that a resumed run draws exactly what the uninterrupted run drew."""
    seed_global_rngs(iteration_seed(training_seed(loader, seed), comm.get_rank(), iteration))


def continue_stream_at(trainer, start_iter: int) -> None:
    """A resumed run: the resumable train loader of ``trainer`` (detectron2's ``SimpleTrainer``)
    continues its stream at ``start_iter`` (other loaders: nothing to do)."""
    loader = trainer.data_loader
    if isinstance(loader, ResumableTrainLoader):
        loader.start_at(start_iter)
        trainer.reset_data_loader(lambda: loader)  # a new iterator, from start_iter


class ExactResumeHook(HookBase):
    """Exact resume for a trainer built from a LazyConfig (``Pix2SeqTrainer.resume_or_load`` and
    ``run_step`` do the same on the yaml path):

    * before training, a :class:`~pix2seq_d2.data.resumable_loader.ResumableTrainLoader` starts its stream
      at the trainer's start iteration (its seed comes back from the checkpoint, where it is saved as
      ``"data_loader"``);
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
