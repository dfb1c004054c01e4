"""Pix2SeqCheckpointer: crash-safe saves, weights-only loads, model-zoo pickles, vocabulary check."""

from __future__ import annotations

import os
import pickle

import numpy as np
import pytest
import torch
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets import register_coco_instances
from detectron2.modeling import build_model

from pix2seq_d2 import Pix2SeqTrainer
from pix2seq_d2.checkpoint import TRUST_ENV_VAR, Pix2SeqCheckpointer, UntrustedCheckpointError

from .conftest import tiny_cfg
from .test_resume import write_tiny_coco


def _model(*opts):
    return build_model(tiny_cfg(*opts))


def _same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def _perturb(model: torch.nn.Module) -> None:
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)


# ---- atomic saves --------------------------------------------------------------------------
def test_a_crash_while_saving_leaves_the_previous_checkpoint_and_last_checkpoint_intact(tmp_path, monkeypatch):
    model = _model()
    checkpointer = Pix2SeqCheckpointer(model, str(tmp_path))
    checkpointer.save("model_final")
    saved = (tmp_path / "model_final.pth").read_bytes()
    _perturb(model)

    real_save = torch.save

    def save_half_then_crash(obj, f, *args, **kwargs):
        import io

        buffer = io.BytesIO()
        real_save(obj, buffer)
        f.write(buffer.getvalue()[: len(buffer.getvalue()) // 2])  # half of the file reached the disk...
        raise OSError("No space left on device")  # ...then the process "crashed"

    monkeypatch.setattr(torch, "save", save_half_then_crash)
    for name in ("model_final", "model_0000009"):
        with pytest.raises(OSError, match="No space left"):
            checkpointer.save(name)
    monkeypatch.undo()

    assert sorted(os.listdir(tmp_path)) == ["last_checkpoint", "model_final.pth"]  # no partial or temp file
    assert (tmp_path / "model_final.pth").read_bytes() == saved
    assert (tmp_path / "last_checkpoint").read_text() == "model_final.pth"
    fresh = _model()
    Pix2SeqCheckpointer(fresh, str(tmp_path)).resume_or_load("", resume=True)
    assert not _same_weights(fresh, model)  # it loaded the saved weights, not the perturbed ones
    _perturb(fresh)
    assert _same_weights(fresh, model)


class _FailsToPickle:
    def __reduce__(self):
        raise RuntimeError("cannot pickle this")


class _BrokenState:
    """A checkpointable whose state makes torch.save fail after the model's tensors were written."""

    def state_dict(self):
        return {"big": torch.zeros(1000), "broken": _FailsToPickle()}

    def load_state_dict(self, state):
        pass


def test_pickling_that_fails_partway_keeps_the_last_good_checkpoint(tmp_path):
    model = _model()
    Pix2SeqCheckpointer(model, str(tmp_path)).save("model_0000004")
    good = (tmp_path / "model_0000004.pth").read_bytes()
    broken = Pix2SeqCheckpointer(model, str(tmp_path), extra=_BrokenState())
    with pytest.raises(RuntimeError, match="cannot pickle"):
        broken.save("model_0000004")
    with pytest.raises(RuntimeError, match="cannot pickle"):
        broken.save("model_final")
    assert sorted(os.listdir(tmp_path)) == ["last_checkpoint", "model_0000004.pth"]
    assert (tmp_path / "model_0000004.pth").read_bytes() == good
    assert (tmp_path / "last_checkpoint").read_text() == "model_0000004.pth"


def test_temporary_files_of_a_killed_save_are_ignored_then_removed(tmp_path):
    model = _model()
    checkpointer = Pix2SeqCheckpointer(model, str(tmp_path))
    checkpointer.save("model_0000001")
    stale = tmp_path / ".model_0000003.pth.4242.abcd1234.tmp"  # what a `kill -9` mid-save leaves
    stale.write_bytes(b"PK\x03\x04 half a zip")
    assert checkpointer.get_all_checkpoint_files() == [str(tmp_path / "model_0000001.pth")]
    checkpointer.resume_or_load("", resume=True)
    checkpointer.save("model_0000003")
    assert not stale.exists()
    assert (tmp_path / "last_checkpoint").read_text() == "model_0000003.pth"


# ---- weights-only loading ------------------------------------------------------------------
class _MakesDirectoryWhenUnpickled:
    """A pickled payload: unpickling it calls os.mkdir(path) -- stands for arbitrary code."""

    def __init__(self, path: str):
        self.path = path

    def __reduce__(self):
        return os.mkdir, (self.path,)


def test_a_pth_with_pickled_code_is_refused_unless_trusted(tmp_path, monkeypatch):
    model = _model()
    marker = tmp_path / "code_ran"
    path = tmp_path / "evil.pth"
    torch.save({"model": model.state_dict(), "payload": _MakesDirectoryWhenUnpickled(str(marker))}, path)

    monkeypatch.delenv(TRUST_ENV_VAR, raising=False)
    with pytest.raises(UntrustedCheckpointError) as error:
        Pix2SeqCheckpointer(_model()).load(str(path))
    message = str(error.value)
    assert "Refused to load" in message and str(path) in message and "not weights-only" in message
    assert f"{TRUST_ENV_VAR}=1" in message
    assert not marker.exists()

    monkeypatch.setenv(TRUST_ENV_VAR, "1")  # the user vouches for the file: it loads (and its code runs)
    trusted = _model()
    Pix2SeqCheckpointer(trusted).load(str(path))
    assert marker.is_dir()
    assert _same_weights(trusted, model)


@pytest.mark.parametrize("amp", [False, True])
def test_a_trainer_checkpoint_loads_weights_only(tmp_path, amp):
    """Model, optimizer, scheduler, iteration, hooks, EMA, grad scaler and the data loader's seed:
    only safe types."""
    json_file = write_tiny_coco(str(tmp_path / "data"))
    name = f"tiny_ckpt_{tmp_path.name}"
    register_coco_instances(name, {}, json_file, str(tmp_path / "data"))
    cfg = tiny_cfg(
        "DATASETS.TRAIN", (name,), "DATASETS.TEST", (), "SOLVER.IMS_PER_BATCH", 2, "SOLVER.MAX_ITER", 2,
        "OUTPUT_DIR", str(tmp_path / "out"), "SOLVER.AMP.ENABLED", amp, "MODEL.EMA.ENABLED", True,
    )  # fmt: skip
    try:
        trainer = Pix2SeqTrainer(cfg)
        trainer.resume_or_load(resume=False)
        trainer.train()
    finally:
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)
    state = torch.load(tmp_path / "out" / "model_final.pth", weights_only=True)
    assert {"model", "trainer", "iteration"} <= set(state)
    assert state["trainer"]["_trainer"]["optimizer"]["state"]  # AdamW moments
    assert state["trainer"]["hooks"]["LRScheduler"]["last_epoch"] == 2
    assert state["trainer"]["data_loader"] == {"seed": cfg.SEED}
    assert state["ema"]["updates"] == 2
    assert ("grad_scaler" in state["trainer"]["_trainer"]) == amp


def test_numpy_values_are_saved_as_weights_only_types(tmp_path):
    class NumpyState:
        def state_dict(self):
            return {"scale": np.float32(2.5), "count": np.int64(3), "table": np.arange(4), "pair": (np.float64(1), 2)}

        def load_state_dict(self, state):
            self.loaded = state

    holder = NumpyState()
    Pix2SeqCheckpointer(_model(), str(tmp_path), extra=holder).save("model_final")
    state = torch.load(tmp_path / "model_final.pth", weights_only=True)["extra"]
    assert state["scale"] == 2.5 and state["count"] == 3 and state["pair"] == (1.0, 2)
    assert torch.equal(state["table"], torch.arange(4))


def _zoo_pickle(path, model, protocol: int) -> None:
    """A detectron2 model-zoo style .pkl: numpy arrays by parameter name."""
    weights = {k: v.numpy() for k, v in model.state_dict().items()}
    with open(path, "wb") as f:
        pickle.dump({"model": weights, "__author__": "test"}, f, protocol=protocol)


@pytest.mark.parametrize("protocol", [2, pickle.HIGHEST_PROTOCOL])
def test_a_model_zoo_pkl_of_numpy_arrays_loads_without_trust(tmp_path, monkeypatch, protocol):
    monkeypatch.delenv(TRUST_ENV_VAR, raising=False)
    source = _model()
    _zoo_pickle(tmp_path / "zoo.pkl", source, protocol)
    target = _model()
    assert not _same_weights(target, source)
    Pix2SeqCheckpointer(target).load(str(tmp_path / "zoo.pkl"))
    assert _same_weights(target, source)


def test_a_pkl_with_pickled_code_is_refused(tmp_path, monkeypatch):
    monkeypatch.delenv(TRUST_ENV_VAR, raising=False)
    marker = tmp_path / "code_ran"
    with open(tmp_path / "evil.pkl", "wb") as f:
        pickle.dump({"model": {}, "__author__": "x", "payload": _MakesDirectoryWhenUnpickled(str(marker))}, f)
    with pytest.raises(UntrustedCheckpointError, match=r"Refused to load .*evil\.pkl.*mkdir"):
        Pix2SeqCheckpointer(_model()).load(str(tmp_path / "evil.pkl"))
    assert not marker.exists()


# ---- vocabulary / sequence-length mismatches -------------------------------------------------
def test_a_checkpoint_with_another_vocabulary_is_a_clear_error(tmp_path):
    Pix2SeqCheckpointer(_model(), str(tmp_path)).save("model_final")  # NUM_BINS 64, NUM_CLASSES 3
    other = _model("MODEL.PIX2SEQ.NUM_BINS", 32)
    with pytest.raises(ValueError) as error:
        Pix2SeqCheckpointer(other).load(str(tmp_path / "model_final.pth"))
    message = str(error.value)
    assert "decoder.token_embed.weight: vocabulary of 71 tokens in the checkpoint, 39 in the model" in message
    assert "NUM_BINS" in message and "NUM_CLASSES" in message and "NUM_BINS=32" in message


def test_a_checkpoint_with_another_sequence_length_is_a_clear_error(tmp_path):
    Pix2SeqCheckpointer(_model(), str(tmp_path)).save("model_final")
    other = _model("MODEL.PIX2SEQ.MAX_OBJECTS", 3, "MODEL.PIX2SEQ.MAX_OBJECTS_TEST", 3)
    with pytest.raises(ValueError, match=r"pos_embed\.weight: 51 sequence positions in the checkpoint, 16 in"):
        Pix2SeqCheckpointer(other).load(str(tmp_path / "model_final.pth"))
