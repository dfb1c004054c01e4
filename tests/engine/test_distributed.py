"""Weight consistency across data-parallel workers: the end-of-training agreement check and the
buffer broadcast before evaluation, with two real GLOO processes."""

from __future__ import annotations

import os

import torch
from torch import nn

from pix2seq_d2.engine.distributed import broadcast_buffers_from_main, check_replicas_agree, leave_process_group


def _worker(rank: int, init_file: str, out_dir: str, diverge: bool) -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3))
    model[1].running_mean.fill_(float(rank + 1))  # per-worker BatchNorm statistics
    if diverge and rank == 1:
        with torch.no_grad():
            model[1].bias[2] += 1e-6  # one value of one parameter
    try:
        check_replicas_agree(model)
        outcome = "agree"
    except RuntimeError as e:
        outcome = str(e)
    broadcast_buffers_from_main(model)
    torch.save({"outcome": outcome, "running_mean": model[1].running_mean}, os.path.join(out_dir, f"{rank}.pt"))
    leave_process_group()  # barrier, drop detectron2's cached group handle, destroy


def run_two_workers(tmp_path, diverge: bool) -> list[dict]:
    torch.multiprocessing.spawn(_worker, args=(str(tmp_path / "init"), str(tmp_path), diverge), nprocs=2)
    return [torch.load(tmp_path / f"{rank}.pt") for rank in range(2)]


def test_identical_parameters_agree_and_buffers_are_not_compared(tmp_path):
    results = run_two_workers(tmp_path, diverge=False)
    assert [r["outcome"] for r in results] == ["agree", "agree"]
    # After the broadcast both workers hold rank 0's statistics (they started as 1 and 2).
    assert all(torch.equal(r["running_mean"], torch.ones(3)) for r in results)


def test_a_single_changed_value_is_reported_with_the_parameter_name(tmp_path):
    results = run_two_workers(tmp_path, diverge=True)
    for r in results:
        assert "worker 1 holds different weights than worker 0" in r["outcome"]
        assert "'1.bias'" in r["outcome"]
