"""The seeds of exact resume: every random draw of a training run is seeded from (the run's seed, what
the draw is for, where it happens), so that a resumed run draws exactly what the uninterrupted run drew.

:func:`sample_seed` seeds the augmentation of each sample of the data stream, :func:`iteration_seed`
the global RNGs at each training step (dropout, drop path), :func:`sequence_seed` the training
sequences the model makes itself. :func:`process_seed` is ``SEED`` when it is >= 0, else one seed
drawn once per process.
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import Iterator

import numpy as np
import torch

__all__ = [
    "iteration_seed",
    "mix_seed",
    "process_seed",
    "sample_seed",
    "seed_global_rngs",
    "seeded_rngs",
    "sequence_seed",
]


def mix_seed(*values: int) -> int:
    """A 32-bit seed from integers (numpy's SeedSequence hashing: nearby inputs give unrelated seeds)."""
    return int(np.random.SeedSequence([v % 2**64 for v in values]).generate_state(1)[0])


def sample_seed(seed: int, position: int, attempt: int = 0) -> int:
    """Seed of the RNGs while mapping the sample at ``position`` of the stream (``attempt``: replacement number)."""
    return mix_seed(seed, 1, position, attempt)


def iteration_seed(seed: int, rank: int, iteration: int) -> int:
    """Seed of the global RNGs for training step ``iteration`` on worker ``rank`` (dropout etc.)."""
    return mix_seed(seed, 2, rank, iteration)


def sequence_seed(seed: int, rank: int, iteration: int, call: int) -> int:
    """Seed of the training sequences the model makes itself at step ``iteration`` on worker
    ``rank`` (``call``: the how-many-th forward of that step, e.g. with gradient accumulation)."""
    return mix_seed(seed, 3, rank, iteration, call)


def seed_global_rngs(seed: int) -> None:
    """Seed Python's ``random``, numpy's global RNG and torch (CPU and CUDA)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


@contextlib.contextmanager
def seeded_rngs(seed: int) -> Iterator[None]:
    """Inside the block the global CPU RNGs are seeded with ``seed``; their state is restored on exit."""
    states = random.getstate(), np.random.get_state(), torch.get_rng_state()
    random.seed(seed)
    np.random.seed(seed)
    torch.random.default_generator.manual_seed(seed)
    try:
        yield
    finally:
        random.setstate(states[0])
        np.random.set_state(states[1])
        torch.set_rng_state(states[2])


_PROCESS_SEED: list[int] = []


def process_seed(seed: int) -> int:
    """``seed`` (``SEED``) when it is >= 0, else one seed drawn once per process (a resumed run is then not exact)."""
    if seed >= 0:
        return seed
    if not _PROCESS_SEED:
        _PROCESS_SEED.append(int(np.random.SeedSequence().generate_state(1)[0]))
    return _PROCESS_SEED[0]
