"""Exact resume: a run killed with SIGKILL after a checkpoint and resumed ends with the very same
weights as an uninterrupted run (model, optimizer, scheduler, EMA, hooks, data order, augmentation, RNG)."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys

import numpy as np
import pytest
import torch

from pix2seq_d2.data.resumable_loader import ResumableTrainLoader, index_batches
from pix2seq_d2.utils.seeding import iteration_seed, sample_seed
from tests.helpers import REPO_ROOT, write_tiny_coco


# ---- the index stream ----------------------------------------------------------------------
@pytest.mark.parametrize("grouped", [False, True])
@pytest.mark.parametrize("world_size", [1, 2])
def test_index_batches_started_late_continue_the_uninterrupted_stream(grouped, world_size):
    groups = np.array([0, 1, 1, 0, 1, 0, 0, 1, 1]) if grouped else None

    def stream():
        g = torch.Generator().manual_seed(3)
        while True:
            yield from torch.randperm(9, generator=g).tolist()

    for rank in range(world_size):
        kwargs = dict(rank=rank, world_size=world_size, group_ids=groups)
        full = index_batches(stream(), 3, **kwargs)
        full = [next(full) for _ in range(12)]
        late = index_batches(stream(), 3, start=7, **kwargs)
        assert [next(late) for _ in range(5)] == full[7:]
        positions = [p for batch in full for p, _ in batch]
        assert all(p % world_size == rank for p in positions)  # rank r takes positions r, r+W, ...
        if grouped:
            assert all(len({groups[i] for _, i in batch}) == 1 for batch in full)


def _random_mapper(d: dict) -> dict:
    """A cheap mapper that draws from every global RNG, like augmentations and object order do."""
    return {"index": d["index"], "draws": (random.random(), float(np.random.rand()), float(torch.rand(())))}


@pytest.mark.parametrize("num_workers", [0, 2])
def test_loader_resumed_at_an_iteration_gives_the_same_batches_and_augmentations(num_workers):
    dicts = [{"index": i, "file_name": f"{i}.png", "width": 10 + i % 3, "height": 11} for i in range(10)]

    def loader(start: int, workers: int) -> list:
        from detectron2.data.samplers import TrainingSampler

        data = ResumableTrainLoader(
            dicts, _random_mapper, make_sampler=lambda s: TrainingSampler(len(dicts), seed=s), seed=5,
            batch_size=3, aspect_ratio_grouping=True, num_workers=workers,
        )  # fmt: skip
        data.start_at(start)
        it = iter(data)
        return [next(it) for _ in range(8 - start)]

    torch.manual_seed(123)
    before = torch.get_rng_state()
    uninterrupted = loader(0, 0)
    assert torch.equal(torch.get_rng_state(), before)  # mapping leaves the global RNG alone
    assert loader(5, num_workers) == uninterrupted[5:]
    assert loader(0, num_workers) == uninterrupted
    draws = [x["draws"] for batch in uninterrupted for x in batch]
    assert len(set(draws)) == len(draws)  # every sample gets its own randomness


def test_seeds_differ_by_position_rank_and_iteration():
    assert len({sample_seed(0, p) for p in range(100)}) == 100
    assert sample_seed(0, 1, attempt=1) != sample_seed(0, 1)
    assert len({iteration_seed(0, r, i) for r in range(2) for i in range(50)}) == 100


def test_loader_state_restores_a_random_seed():
    from detectron2.data.samplers import TrainingSampler

    dicts = [{"index": i} for i in range(6)]

    def make():
        return ResumableTrainLoader(
            dicts, _random_mapper, make_sampler=lambda s: TrainingSampler(6, seed=s), seed=int(np.random.randint(1e9)),
            batch_size=2, aspect_ratio_grouping=False,
        )  # fmt: skip

    first, second = make(), make()
    assert first.seed != second.seed
    second.load_state_dict(first.state_dict())
    assert next(iter(second)) == next(iter(first))


# ---- kill -9 and --resume ------------------------------------------------------------------
DRIVER = r'''
"""Train the tiny config on a tiny COCO dataset; optionally SIGKILL itself after iteration KILL_AT."""
import os, signal, sys
import torch
from detectron2.data.datasets import register_coco_instances
from detectron2.engine import HookBase
from detectron2.engine.hooks import PeriodicCheckpointer
from detectron2.utils.env import seed_all_rng
from detectron2.utils.logger import setup_logger
from pix2seq_d2 import Pix2SeqTrainer
from tests.helpers import tiny_cfg

setup_logger()
torch.set_num_threads(1)  # tiny model: one thread is fastest, and immune to a busy machine

json_file, output_dir, kill_at, resume = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4] == "1"
detectron2_mapper = sys.argv[5] == "detectron2"
register_coco_instances("tiny_resume", {}, json_file, os.path.dirname(json_file))


class CountingHook(HookBase):
    """A hook with state: a running sum over the iterations it saw (checkpointed by the trainer)."""
    def __init__(self):
        self.total = 0
    def after_step(self):
        self.total += self.trainer.iter
    def state_dict(self):
        return {"total": self.total}
    def load_state_dict(self, state):
        self.total = state["total"]


class KillAfterCheckpoint(HookBase):
    """Registered last, so it runs after the PeriodicCheckpointer wrote iteration `kill_at`."""
    def after_step(self):
        if self.trainer.iter == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)


cfg = tiny_cfg(
    "DATASETS.TRAIN", ("tiny_resume",), "DATASETS.TEST", (), "SEED", 7,
    "SOLVER.IMS_PER_BATCH", 2, "SOLVER.MAX_ITER", 9, "SOLVER.CHECKPOINT_PERIOD", 3, "SOLVER.WARMUP_ITERS", 2,
    "INPUT.MIN_SIZE_TRAIN", (40, 48, 56), "INPUT.MAX_SIZE_TRAIN", 64,  # random scale + flip per sample
    "MODEL.PIX2SEQ.DROPOUT", 0.1, "MODEL.PIX2SEQ.SEQ_AUG.ENABLED", True, "MODEL.PIX2SEQ.MAX_OBJECTS", 3,
    "DATALOADER.ASPECT_RATIO_GROUPING", True, "MODEL.EMA.ENABLED", True, "MODEL.PIX2SEQ.DROP_PATH", 0.1,
    "SOLVER.AMP.ENABLED", True, "SOLVER.AMP.PRECISION", "float16",  # a grad scaler with state, on the CPU
    "OUTPUT_DIR", output_dir,
)
class TrainerWithDetectron2Mapper(Pix2SeqTrainer):
    """detectron2's DatasetMapper (no token tensors): the model makes the sequences, noise included."""
    @classmethod
    def build_train_loader(cls, cfg):
        from detectron2.data import DatasetMapper
        from pix2seq_d2.data.resumable_loader import build_resumable_train_loader
        mapper = DatasetMapper(cfg, is_train=True)
        return build_resumable_train_loader(cfg, mapper, num_classes=cfg.MODEL.PIX2SEQ.NUM_CLASSES)


seed_all_rng(cfg.SEED)  # what default_setup does in train_net: the same initial weights in every run
trainer = (TrainerWithDetectron2Mapper if detectron2_mapper else Pix2SeqTrainer)(cfg)
counter = CountingHook()
trainer.register_hooks([counter, KillAfterCheckpoint()])
# A stateful hook must run before the PeriodicCheckpointer, which saves the hooks' state in its after_step.
trainer._hooks.remove(counter)
trainer._hooks.insert(next(i for i, h in enumerate(trainer._hooks) if isinstance(h, PeriodicCheckpointer)), counter)
trainer.resume_or_load(resume=resume)
trainer.train()
'''


def _drive(
    tmp_path, json_file, out, kill_at: int = -1, resume: bool = False, mapper: str = "pix2seq"
) -> subprocess.CompletedProcess:
    driver = tmp_path / "driver.py"
    driver.write_text(DRIVER)
    env = dict(os.environ, PYTHONPATH=REPO_ROOT, PYTHONUNBUFFERED="1", DETECTRON2_DATASETS=str(tmp_path))
    cmd = [sys.executable, str(driver), json_file, str(out), str(kill_at), "1" if resume else "0", mapper]
    return subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)


# "detectron2": detectron2's DatasetMapper in the resumable loader; the model makes the sequences
@pytest.mark.parametrize("mapper", ["pix2seq", "detectron2"])
def test_sigkill_after_a_checkpoint_then_resume_matches_the_uninterrupted_run(tmp_path, mapper):
    json_file = write_tiny_coco(str(tmp_path / "data"))

    straight = _drive(tmp_path, json_file, tmp_path / "straight", mapper=mapper)
    assert straight.returncode == 0, straight.stderr[-3000:]

    killed_dir = tmp_path / "killed"
    killed = _drive(tmp_path, json_file, killed_dir, kill_at=5, mapper=mapper)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    assert (killed_dir / "last_checkpoint").read_text() == "model_0000005.pth"
    assert not (killed_dir / "model_final.pth").exists()

    resumed = _drive(tmp_path, json_file, killed_dir, resume=True, mapper=mapper)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "Starting training from iteration 6" in resumed.stdout + resumed.stderr

    expected = torch.load(tmp_path / "straight" / "model_final.pth", weights_only=True)
    got = torch.load(killed_dir / "model_final.pth", weights_only=True)
    assert expected["model"].keys() == got["model"].keys()
    different = [k for k in expected["model"] if not torch.equal(expected["model"][k], got["model"][k])]
    assert not different, f"weights differ after resume: {different[:5]}"
    for key, value in expected["trainer"]["_trainer"]["optimizer"]["state"].items():
        got_state = got["trainer"]["_trainer"]["optimizer"]["state"][key]
        assert all(torch.equal(torch.as_tensor(value[k]), torch.as_tensor(got_state[k])) for k in value)
    assert got["trainer"]["hooks"]["CountingHook"] == expected["trainer"]["hooks"]["CountingHook"] == {"total": 36}
    assert got["trainer"]["hooks"]["LRScheduler"] == expected["trainer"]["hooks"]["LRScheduler"]
    assert got["trainer"]["_trainer"]["grad_scaler"] == expected["trainer"]["_trainer"]["grad_scaler"]
    assert got["iteration"] == expected["iteration"] == 8
    assert got["ema"]["updates"] == expected["ema"]["updates"] == 9
    assert all(torch.equal(expected["ema"]["shadow"][k], got["ema"]["shadow"][k]) for k in expected["ema"]["shadow"])
