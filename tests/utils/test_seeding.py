"""The seeds of exact resume: distinct per purpose and position, and scoped RNG seeding restores the state."""

from __future__ import annotations

import random

import numpy as np
import torch

from pix2seq_d2.utils.seeding import iteration_seed, mix_seed, process_seed, sample_seed, seeded_rngs, sequence_seed


def test_seeds_differ_by_purpose_and_position_and_repeat_for_the_same_inputs():
    seeds = {sample_seed(7, 0), sample_seed(7, 1), sample_seed(7, 0, attempt=1), iteration_seed(7, 0, 0),
             iteration_seed(7, 1, 0), sequence_seed(7, 0, 0, 0), sequence_seed(7, 0, 0, 1)}  # fmt: skip
    assert len(seeds) == 7
    assert sample_seed(7, 3) == sample_seed(7, 3) and mix_seed(1, 2) != mix_seed(2, 1)
    assert all(0 <= s < 2**32 for s in seeds)


def test_seeded_rngs_draw_the_same_and_restore_the_global_state():
    random.seed(1)
    np.random.seed(1)
    torch.manual_seed(1)
    before = random.random(), np.random.rand(), torch.rand(1).item()
    random.seed(1)
    np.random.seed(1)
    torch.manual_seed(1)
    with seeded_rngs(5):
        first = random.random(), np.random.rand(), torch.rand(1).item()
    with seeded_rngs(5):
        assert (random.random(), np.random.rand(), torch.rand(1).item()) == first
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == before  # as if nothing happened


def test_process_seed_is_the_seed_or_one_drawn_once():
    assert process_seed(3) == 3
    drawn = process_seed(-1)
    assert drawn >= 0 and process_seed(-1) == drawn
