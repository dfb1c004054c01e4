"""The training loss: the token-weighted mean over all workers' tokens, and a non-finite loss stopping training
with the iteration and the files named."""

from __future__ import annotations

import os

import pytest
import torch

from pix2seq_d2 import Pix2SeqTrainer
from pix2seq_d2.engine.distributed import leave_process_group
from tests.helpers import train_cfg


def test_a_non_finite_loss_stops_training_naming_the_iteration_and_the_files(registered, tmp_path):
    name = registered[0]
    trainer = Pix2SeqTrainer(train_cfg(name, tmp_path, "MODEL.PIXEL_STD", [0.0, 0.0, 0.0]))  # x / 0: inf
    with pytest.raises(FloatingPointError, match=r"Non-finite training loss .* at iteration 0; batch files: .*\.png"):
        trainer.train()


# ---- config keys ------------------------------------------------------------------------------


def test_the_loss_check_passes_finite_losses():
    from pix2seq_d2.modeling.losses import check_finite_loss

    check_finite_loss(torch.tensor(1.5), [{"file_name": "a.png"}])
    with pytest.raises(FloatingPointError, match=r"iteration None; batch files: a\.png, b\.png"):
        check_finite_loss(torch.tensor(float("nan")), [{"file_name": "a.png"}, {"file_name": "b.png"}])


def test_loss_is_the_weighted_mean_over_tokens_of_the_batch():
    logits = torch.randn(2, 3, 7)
    target = torch.randint(0, 7, (2, 3))
    weight = torch.tensor([[1.0, 1.0, 0.5], [1.0, 0.0, 0.0]])
    ce = torch.nn.functional.cross_entropy(logits.flatten(0, 1), target.flatten(), reduction="none")
    expected = (ce * weight.flatten()).sum() / weight.sum()
    from pix2seq_d2.modeling.losses import sequence_loss

    torch.testing.assert_close(sequence_loss(logits, target, weight), expected)


def _loss_worker(rank: int, world_size: int, init_file: str, shards: list, out_dir: str) -> None:
    """One GLOO worker: its shard's loss through a shared parameter, gradients averaged as DDP does."""
    import torch.distributed as dist

    from pix2seq_d2.modeling.losses import sequence_loss

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size)
    features, target, weight = shards[rank]
    projection = torch.nn.Parameter(torch.linspace(-1, 1, 8 * 5).reshape(8, 5))
    sequence_loss(features @ projection, target, weight).backward()
    dist.all_reduce(projection.grad)
    projection.grad /= world_size
    torch.save(projection.grad, os.path.join(out_dir, f"grad{rank}.pt"))
    leave_process_group()  # barrier, drop detectron2's cached group handle, destroy


def test_loss_normalisation_across_workers_matches_one_process_over_the_whole_batch(tmp_path):
    """Two real GLOO workers with unequal token weights: the averaged gradient must equal the
    gradient of one process computing the weighted mean over both workers' tokens."""
    gen = torch.Generator().manual_seed(0)
    shards = []
    for batch, length in ((3, 6), (1, 2)):  # worker 1 has far fewer tokens than worker 0
        features = torch.randn(batch, length, 8, generator=gen)
        target = torch.randint(0, 5, (batch, length), generator=gen)
        weight = torch.rand(batch, length, generator=gen)
        shards.append((features, target, weight))
    torch.multiprocessing.spawn(
        _loss_worker, args=(2, str(tmp_path / "init"), shards, str(tmp_path)), nprocs=2, join=True
    )
    grads = [torch.load(tmp_path / f"grad{rank}.pt") for rank in range(2)]
    torch.testing.assert_close(grads[0], grads[1])

    projection = torch.nn.Parameter(torch.linspace(-1, 1, 8 * 5).reshape(8, 5))
    logits = torch.cat([(f @ projection).flatten(0, 1) for f, _, _ in shards])
    target = torch.cat([t.flatten() for _, t, _ in shards])
    weight = torch.cat([w.flatten() for _, _, w in shards])
    ce = torch.nn.functional.cross_entropy(logits, target, reduction="none")
    ((ce * weight).sum() / weight.sum()).backward()
    torch.testing.assert_close(grads[0], projection.grad)
