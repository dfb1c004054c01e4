"""Pix2SeqCheckpointer: crash-safe saves, weights-only loads, model-zoo pickles, vocabulary check, files that are
not checkpoints (named with what they are), and --resume with a damaged newest checkpoint."""

from __future__ import annotations

import argparse
import os
import pickle
import re
import struct
import zipfile

import numpy as np
import pytest
import torch
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets import register_coco_instances
from detectron2.modeling import build_model

from pix2seq_d2 import Pix2SeqTrainer
from pix2seq_d2.checkpoint import (
    RESUME_NEWEST_INTACT_ENV_VAR,
    TRUST_ENV_VAR,
    NotACheckpointError,
    Pix2SeqCheckpointer,
    ResumeCheckpointError,
    UntrustedCheckpointError,
    check_checkpoint_file,
    load_inference_weights,
    read_checkpoint_file,
    resolve_resume_checkpoint,
)
from tests.helpers import tiny_cfg, write_tiny_coco
from tests.helpers.tf_checkpoint_writer import write_tf_checkpoint_arrays


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


# ---- files that are not checkpoints ----------------------------------------------------------
def _saved_checkpoint(folder) -> bytes:
    """The bytes of a real checkpoint of the tiny model, saved by Pix2SeqCheckpointer."""
    Pix2SeqCheckpointer(_model(), str(folder)).save("source")
    return (folder / "source.pth").read_bytes()


def _write_bad_weights(tmp_path, kind: str) -> str:
    """A file (or folder) of ``kind`` given as MODEL.WEIGHTS; returns its path."""
    path = tmp_path / f"{kind}.pth"
    if kind == "empty":
        path.write_bytes(b"")
    elif kind == "text":
        path.write_text("weights are at https://example.org/model.pth\n")
    elif kind == "html":
        path.write_text(
            "<!DOCTYPE html>\n<html><head><title>Sign in - Google Accounts</title></head><body></body></html>"
        )
    elif kind == "git-lfs":
        path.write_text("version https://git-lfs.github.com/spec/v1\noid sha256:9f86d081884c7d65\nsize 183447624\n")
    elif kind == "truncated":
        data = _saved_checkpoint(tmp_path / "saved")
        path.write_bytes(data[: len(data) // 2])
    elif kind == "random":
        path.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    elif kind == "pretrained_pix2seq":
        weights = {"transformer.vocal_classifier.weight": torch.zeros(5, 4), "input_proj.0.weight": torch.zeros(4, 2)}
        torch.save({"model": weights, "args": argparse.Namespace(nheads=8), "epoch": 3}, path)
    elif kind == "detr":
        torch.save({"model": {"transformer.encoder.layers.0.linear1.weight": torch.zeros(2), "class_embed.weight":
                    torch.zeros(2), "query_embed.weight": torch.zeros(2)}}, path)  # fmt: skip
    elif kind == "foreign":
        torch.save({"conv1.weight": torch.zeros(2), "fc.weight": torch.zeros(2)}, path)  # e.g. a torchvision ResNet
    elif kind == "safetensors":
        header = b'{"decoder.norm.weight":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}'
        path = tmp_path / "model.safetensors"
        path.write_bytes(len(header).to_bytes(8, "little") + header + b"\0\0\0\0")
    elif kind.startswith("tensorflow"):
        prefix = write_tf_checkpoint_arrays(tmp_path / "tf", {"model/decoder/w": np.zeros((2, 3), np.float32)})
        return {"tensorflow-folder": str(tmp_path / "tf"), "tensorflow-index": prefix + ".index",
                "tensorflow-prefix": prefix, "tensorflow-data": prefix + ".data-00000-of-00001"}[kind]  # fmt: skip
    elif kind == "missing":
        pass
    return str(path)


# kind -> (NotACheckpointError.kind, words the message must contain)
BAD_WEIGHTS = {
    "missing": ("missing", "not found"),
    "empty": ("empty", "empty (0 bytes)"),
    "text": ("text", "text, not binary data (it starts with 'weights are at"),
    "html": ("html", "an HTML page"),
    "git-lfs": ("git-lfs", "git-lfs pointer"),
    "truncated": ("truncated", "truncated or corrupt"),
    "random": ("unknown", "neither a PyTorch checkpoint"),
    "pretrained_pix2seq": ("pretrained_pix2seq", "--source pretrained_pix2seq"),
    "detr": ("detr", "DETR-style"),
    "foreign": ("foreign", "none of its 2 tensors"),
    "safetensors": ("other-format", "safetensors"),
    "tensorflow-folder": ("tensorflow", "--source official"),
    "tensorflow-index": ("tensorflow", "--source official"),
    "tensorflow-prefix": ("tensorflow", "--source official"),
    "tensorflow-data": ("tensorflow", "--source official"),
}


@pytest.mark.parametrize("bad", sorted(BAD_WEIGHTS))
def test_weights_that_are_not_a_checkpoint_are_named_with_what_they_are(tmp_path, bad):
    path = _write_bad_weights(tmp_path, bad)
    kind, words = BAD_WEIGHTS[bad]
    model = _model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    # MODEL.WEIGHTS in training and --eval-only: DefaultTrainer.resume_or_load -> checkpointer.resume_or_load
    with pytest.raises(NotACheckpointError) as error:
        Pix2SeqCheckpointer(model, str(tmp_path / "out")).resume_or_load(path, resume=False)
    assert error.value.kind == kind and error.value.path == path
    assert path in str(error.value) and words in str(error.value), str(error.value)
    assert isinstance(error.value, ValueError)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # nothing was loaded
    # the predictor, the demo and the tools
    with pytest.raises(NotACheckpointError, match=re.escape(path)):
        cfg = tiny_cfg()
        cfg.MODEL.WEIGHTS = path  # (merge_from_list would literal_eval the path)
        load_inference_weights(cfg, model)


def test_a_checkpoint_with_a_damaged_record_is_caught_by_its_crc(tmp_path):
    Pix2SeqCheckpointer(_model(), str(tmp_path)).save("model_0000009", iteration=9)
    path = tmp_path / "model_0000009.pth"
    _flip_a_data_byte(path)
    Pix2SeqCheckpointer(_model()).load(str(path))  # torch itself does not notice...
    with pytest.raises(NotACheckpointError, match=r"record .*/data/\d+ fails its CRC check") as error:
        read_checkpoint_file(str(path), verify_crc=True)  # ...the resume check does
    assert error.value.kind == "corrupt"


def _flip_a_data_byte(path) -> None:
    """Flip the first byte of a tensor record of a torch zip checkpoint, leaving the zip structure intact."""
    data = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as archive:
        member = next(m for m in archive.infolist() if "/data/" in m.filename and m.file_size > 0)
    start = member.header_offset
    name_length, extra_length = struct.unpack("<HH", data[start + 26 : start + 30])
    data[start + 30 + name_length + extra_length] ^= 0xFF
    path.write_bytes(bytes(data))


def test_real_checkpoints_and_model_zoo_files_pass_the_inspection(tmp_path):
    _saved_checkpoint(tmp_path)
    assert check_checkpoint_file(str(tmp_path / "source.pth")) == "torch"
    _zoo_pickle(tmp_path / "zoo.pkl", _model(), protocol=2)
    assert check_checkpoint_file(str(tmp_path / "zoo.pkl")) == "pickle"
    with pytest.raises(NotACheckpointError, match=r"a folder, not a checkpoint file\. It holds source\.pth, zoo\.pkl"):
        check_checkpoint_file(str(tmp_path))


# ---- --resume with a damaged newest checkpoint -----------------------------------------------
def _two_checkpoints(folder) -> tuple[torch.nn.Module, dict]:
    """model_0000004.pth and model_0000009.pth (different weights) in ``folder``; last_checkpoint names the
    second. Returns the model and the state dict saved at iteration 4."""
    model = _model()
    checkpointer = Pix2SeqCheckpointer(model, str(folder))
    checkpointer.save("model_0000004", iteration=4)
    at_4 = {k: v.clone() for k, v in model.state_dict().items()}
    _perturb(model)
    checkpointer.save("model_0000009", iteration=9)
    assert (folder / "last_checkpoint").read_text() == "model_0000009.pth"
    return model, at_4


@pytest.mark.parametrize("damage", ["truncated", "deleted", "crc"])
def test_resume_names_the_unusable_newest_checkpoint_and_the_newest_intact_one(tmp_path, damage):
    _, at_4 = _two_checkpoints(tmp_path)
    newest, intact = tmp_path / "model_0000009.pth", tmp_path / "model_0000004.pth"
    if damage == "truncated":
        newest.write_bytes(newest.read_bytes()[:5000])
    elif damage == "deleted":
        newest.unlink()
    else:
        _flip_a_data_byte(newest)
    remains = newest.read_bytes() if newest.exists() else None

    fresh = _model()
    with pytest.raises(ResumeCheckpointError) as error:
        Pix2SeqCheckpointer(fresh, str(tmp_path), resume_newest_intact=False).resume_or_load("", resume=True)
    message = str(error.value)
    what = {"truncated": "truncated or corrupt", "deleted": "is missing", "crc": "fails its CRC check"}[damage]
    assert f"{newest}, the checkpoint named in {tmp_path / 'last_checkpoint'}, " in message and what in message
    assert f"The newest intact checkpoint in {tmp_path} is {intact} (iteration 4)" in message
    assert "--resume-newest-intact" in message and f"echo model_0000004.pth > {tmp_path / 'last_checkpoint'}" in message
    assert error.value.newest_intact == str(intact) and error.value.unusable == str(newest)

    resumed = Pix2SeqCheckpointer(fresh, str(tmp_path), resume_newest_intact=True).resume_or_load("", resume=True)
    assert resumed["iteration"] == 4
    assert all(torch.equal(at_4[k], v) for k, v in fresh.state_dict().items())
    assert (newest.read_bytes() if newest.exists() else None) == remains  # nothing deleted or rewritten
    assert (tmp_path / "last_checkpoint").read_text() == "model_0000009.pth"
    assert resolve_resume_checkpoint(str(tmp_path), use_newest_intact=True) == str(intact)


def test_resolve_resume_checkpoint_edge_cases(tmp_path):
    assert resolve_resume_checkpoint(str(tmp_path), use_newest_intact=False) is None  # nothing to resume: fresh start
    _two_checkpoints(tmp_path)
    assert resolve_resume_checkpoint(str(tmp_path), use_newest_intact=False) == str(tmp_path / "model_0000009.pth")

    (tmp_path / "last_checkpoint").unlink()  # checkpoints without last_checkpoint: not a silent fresh start
    expected = rf"no last_checkpoint file.*newest intact checkpoint in {re.escape(str(tmp_path))} is .*model_0000009"
    with pytest.raises(ResumeCheckpointError, match=expected + r"\.pth \(iteration 9\)"):
        resolve_resume_checkpoint(str(tmp_path), use_newest_intact=False)
    assert Pix2SeqCheckpointer(_model(), str(tmp_path)).has_checkpoint()

    (tmp_path / "last_checkpoint").write_text("model_0000009.pth")
    for name in ("model_0000009.pth", "model_0000004.pth"):
        (tmp_path / name).write_bytes(b"")
    with pytest.raises(ResumeCheckpointError, match=r"holds no intact model_\*\.pth.*model_0000004\.pth is empty"):
        resolve_resume_checkpoint(str(tmp_path), use_newest_intact=True)
    assert sorted(os.listdir(tmp_path)) == ["last_checkpoint", "model_0000004.pth", "model_0000009.pth"]


def test_the_trainer_resumes_from_the_newest_intact_checkpoint(tmp_path, monkeypatch):
    """Through Pix2SeqTrainer.resume_or_load (as tools/train_net.py --resume): the iteration continues after
    the intact checkpoint. PIX2SEQ_RESUME_NEWEST_INTACT=1 is what --resume-newest-intact sets."""
    json_file = write_tiny_coco(str(tmp_path / "data"), sizes=[(48, 64), (64, 48)])
    name = f"tiny_resume_{tmp_path.name}"
    register_coco_instances(name, {}, json_file, str(tmp_path / "data"))
    out = tmp_path / "out"
    cfg = tiny_cfg(
        "DATASETS.TRAIN", (name,), "DATASETS.TEST", (), "SOLVER.IMS_PER_BATCH", 2, "SOLVER.MAX_ITER", 4,
        "SOLVER.CHECKPOINT_PERIOD", 2, "OUTPUT_DIR", str(out),
    )  # fmt: skip
    try:
        trainer = Pix2SeqTrainer(cfg)
        trainer.resume_or_load(resume=False)
        trainer.train()  # saves model_0000001, model_0000003, model_final (iteration 3)
        final = out / "model_final.pth"
        final.write_bytes(final.read_bytes()[:-100])  # the last save was cut short
        with pytest.raises(ResumeCheckpointError, match=r"model_final\.pth, the checkpoint named in .*is .*truncated"):
            Pix2SeqTrainer(cfg).resume_or_load(resume=True)
        monkeypatch.setenv(RESUME_NEWEST_INTACT_ENV_VAR, "1")
        resumed = Pix2SeqTrainer(cfg)
        resumed.resume_or_load(resume=True)
    finally:
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)
    assert resumed.start_iter == 4  # model_0000003.pth: iteration 3, so training continues at 4
    assert final.exists()
