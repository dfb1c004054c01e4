"""``Pix2SeqCheckpointer``: detectron2's checkpointer with crash-safe saving and code-free loading.

* **Atomic saves.** ``model_XXXXXXX.pth``, ``model_final.pth`` and ``last_checkpoint`` are
  written to a temporary file in the same folder, flushed and fsync'ed, then renamed over
  the target with ``os.replace`` (and the folder fsync'ed). A crash or ``kill -9`` while
  saving leaves the previous files intact; at worst a hidden ``.<name>.<pid>.tmp`` file
  remains, which the next save removes.
* **Weights-only loading.** ``.pth`` files are read with ``torch.load(weights_only=True)``:
  tensors, numbers, strings and containers only, so a malicious file cannot run code.
  Our own checkpoints (model, optimizer, scheduler, iteration, hooks, grad scaler, EMA) only
  hold such types; numpy values are converted to tensors / Python numbers when saving.
  detectron2 / Caffe2 ``.pkl`` model-zoo files are plain pickles: they are read with an
  unpickler that only builds numpy arrays and basic containers. A file that needs anything
  else is refused with an error saying so; set the environment variable
  ``PIX2SEQ_TRUST_CHECKPOINTS=1`` to load files you trust without these restrictions.
* **The model's own checks.** A model that defines ``checkpoint_mismatch(state)`` says why a checkpoint
  does not fit it (``Pix2Seq``: a token vocabulary or sequence length other than its own), an
  :class:`IncompatibleCheckpointError` naming the keys to set, instead of detectron2's warning and
  silently re-initialised embeddings. The checkpointer itself knows no model's parameter names.
* **Files that are not checkpoints** are named as such before torch or pickle reads them
  (:class:`~.file_checks.NotACheckpointError`, :mod:`.file_checks`; files are read by :mod:`.weights_only`).
* **Resume from a damaged folder** names the corrupt newest checkpoint and the newest intact one, or
  resumes from that one (:class:`~.resume.ResumeCheckpointError`; :mod:`.resume`).
"""

from __future__ import annotations

import contextlib
import glob
import os
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlparse

import numpy as np
import torch
from detectron2.checkpoint import DetectionCheckpointer
from torch import nn

from pix2seq_d2.utils.errors import UserError
from pix2seq_d2.utils.file_io import TMP_SUFFIX, atomic_write

from .file_checks import (
    CONVERTER_COMMAND,
    MODEL_LEVEL_KINDS,
    NotACheckpointError,
    check_checkpoint_file,
    check_path_kind,
    not_a_checkpoint,
    shown_names,
)
from .resume import numbered_checkpoints, resolve_resume, resume_newest_intact_default
from .weights_only import (
    UntrustedCheckpointError,
    check_weights,
    checkpoints_trusted,
    read_pickle_file,
    torch_load_weights_only,
)

__all__ = ["IncompatibleCheckpointError", "Pix2SeqCheckpointer", "load_inference_weights", "to_weights_only"]


def to_weights_only(obj: Any) -> Any:
    """``obj`` with numpy arrays as tensors and numpy scalars as Python numbers, so that
    ``torch.load(weights_only=True)`` can read it back (containers are rebuilt as dict/list/tuple)."""
    if isinstance(obj, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(obj))
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, dict):
        converted = {k: to_weights_only(v) for k, v in obj.items()}
        if type(obj) is dict:
            return converted
        try:  # keep OrderedDict & co (state_dict metadata included) when they can be rebuilt
            out = type(obj)(converted)
            if hasattr(obj, "_metadata"):
                out._metadata = obj._metadata
            return out
        except TypeError:
            return converted
    if isinstance(obj, list):
        return [to_weights_only(v) for v in obj]
    if isinstance(obj, tuple) and not hasattr(obj, "_fields"):
        return tuple(to_weights_only(v) for v in obj)
    return obj


class IncompatibleCheckpointError(UserError, ValueError):
    """A checkpoint that loads but does not fit the model (its own check says why, e.g. another vocabulary)."""


class Pix2SeqCheckpointer(DetectionCheckpointer):
    """A ``DetectionCheckpointer`` with atomic saves, checked weights-only loads, a vocabulary check and a
    resume that names a corrupt newest checkpoint (see the module docstring). Same constructor, plus
    ``trusted`` (default: ``PIX2SEQ_TRUST_CHECKPOINTS``) and ``resume_newest_intact`` (default:
    ``PIX2SEQ_RESUME_NEWEST_INTACT``; an attribute that may be set later, as ``tools/train_net.py`` does)."""

    def __init__(
        self,
        model,
        save_dir: str = "",
        *,
        trusted: bool | None = None,
        resume_newest_intact: bool | None = None,
        **kwargs,
    ):
        super().__init__(model, save_dir, **kwargs)
        self.trusted = checkpoints_trusted() if trusted is None else trusted
        self.resume_newest_intact = (
            resume_newest_intact_default() if resume_newest_intact is None else resume_newest_intact
        )
        self._loading: str | None = None

    # ---- saving ------------------------------------------------------------------------------
    def _local_save_dir(self) -> bool:
        return "://" not in self.save_dir

    def save(self, name: str, **kwargs: Any) -> None:
        if not self.save_dir or not self.save_to_disk:
            return
        if not self._local_save_dir():  # a remote PathManager folder: no rename there
            return super().save(name, **kwargs)
        data = {"model": self.model.state_dict()}
        for key, obj in self.checkpointables.items():
            data[key] = obj.state_dict()
        data.update(kwargs)
        data = to_weights_only(data)
        basename = f"{name}.pth"
        path = os.path.join(self.save_dir, basename)
        os.makedirs(self.save_dir, exist_ok=True)
        self.remove_stale_temporary_files()
        self.logger.info(f"Saving checkpoint to {path}")
        atomic_write(path, lambda f: torch.save(data, f))
        self.tag_last_checkpoint(basename)

    def tag_last_checkpoint(self, last_filename_basename: str) -> None:
        if not self._local_save_dir():
            return super().tag_last_checkpoint(last_filename_basename)
        path = os.path.join(self.save_dir, "last_checkpoint")
        atomic_write(path, lambda f: f.write(last_filename_basename.encode()))

    def remove_stale_temporary_files(self) -> list[str]:
        """Delete temporary files left in ``save_dir`` by a save that crashed; returns their paths."""
        folder = glob.escape(self.save_dir)
        stale = [
            *glob.glob(os.path.join(folder, f".*.pth.*{TMP_SUFFIX}")),
            *glob.glob(os.path.join(folder, f".last_checkpoint.*{TMP_SUFFIX}")),
        ]
        for p in stale:
            with contextlib.suppress(OSError):
                os.unlink(p)
        return stale

    # ---- loading -----------------------------------------------------------------------------
    def load(self, path: str, *args: Any, **kwargs: Any) -> dict[str, Any]:
        """detectron2's ``load``; a local ``path`` that is missing, a folder or a TensorFlow checkpoint prefix
        is a :class:`NotACheckpointError` saying so (the file's content is checked in ``_load_file``)."""
        if path and "://" not in path:
            local = path if os.path.exists(path) else urlparse(path)._replace(query="").geturl()
            check_path_kind(local)
        self._loading = path
        try:
            return super().load(path, *args, **kwargs)
        finally:
            self._loading = None

    def _load_file(self, filename: str) -> dict[str, Any]:
        fmt = check_checkpoint_file(filename)  # size and magic bytes, before torch or pickle read anything
        if filename.endswith(".pkl") and fmt == "pickle":
            return self._load_pickle(filename)
        if filename.endswith(".pyth"):  # pycls
            data = self._torch_load(filename)
            if not isinstance(data, Mapping) or "model_state" not in data:
                what = "not a pycls checkpoint (pycls files hold 'model_state')"
                raise not_a_checkpoint(filename, "not-weights", what)
            state = {k: v for k, v in data["model_state"].items() if not k.endswith("num_batches_tracked")}
            return {"model": state, "__author__": "pycls", "matching_heuristics": True}
        if filename.endswith(".pkl"):  # a torch.save file named .pkl: read it as one
            loaded = self._torch_load(filename)
            return loaded if "model" in loaded else {"model": loaded}
        return super()._load_file(filename)  # DetectionCheckpointer -> self._torch_load, then URL queries

    def _load_pickle(self, filename: str) -> dict[str, Any]:
        data = read_pickle_file(filename, self.trusted)
        check_weights(filename, data.get("blobs", data) if isinstance(data, Mapping) else data)
        if "model" in data and "__author__" in data:  # detectron2 model zoo
            self.logger.info(f"Reading a file from '{data['__author__']}'")
            return data
        blobs = data.get("blobs", data)  # Caffe2 detection models keep their weights under "blobs"
        model = {k: v for k, v in blobs.items() if not k.endswith("_momentum")}
        return {"model": model, "__author__": "Caffe2", "matching_heuristics": True}

    def _torch_load(self, f: str) -> dict[str, Any]:
        loaded = torch_load_weights_only(f, self.trusted)
        check_weights(f, loaded)
        return loaded

    def _load_model(self, checkpoint: Any):
        state = checkpoint.get("model", {})
        if not checkpoint.get("matching_heuristics", False):
            self._check_keys(state)
        self._check_compatibility(state)
        return super()._load_model(checkpoint)

    def _check_keys(self, state: Mapping) -> None:
        """A :class:`NotACheckpointError` when none of the checkpoint's tensors is one of the model's
        (DETR-style keys are named as such): loading it would silently leave every weight random."""
        own = self.model.state_dict()
        keys = [k for k in state if isinstance(k, str)]
        if not keys or not own or any(k in own or k.removeprefix("module.") in own for k in keys):
            return
        path = self._loading or "(checkpoint)"
        if any(k.startswith(("transformer.", "backbone.0.body.", "class_embed.", "bbox_embed.")) for k in keys):
            raise not_a_checkpoint(
                path, "detr", f"a DETR-style checkpoint (keys such as {shown_names(keys, 3)}), not a pix2seq_d2 one",
                f"A Pretrained-Pix2Seq checkpoint converts with {CONVERTER_COMMAND} --source pretrained_pix2seq {path} "
                "--output OUT.pth; other DETR-family models cannot be loaded into Pix2Seq.",
            )  # fmt: skip
        nested = next((k for k in ("state_dict", "model_state_dict", "weights", "params") if k in state), None)
        if nested is not None and isinstance(state[nested], Mapping):
            raise not_a_checkpoint(
                path, "foreign", f"a training checkpoint of another framework (e.g. PyTorch Lightning) whose weights "
                f"are under {nested!r}, with keys such as {shown_names([str(k) for k in state[nested]], 3)}",
                f"If they are pix2seq_d2 weights, save them as ours: torch.save({{'model': ckpt[{nested!r}]}}, "
                "'OUT.pth') after removing any key prefix (such as 'model.').",
            )  # fmt: skip
        raise not_a_checkpoint(
            path, "foreign", f"a state dict of another model: none of its {len(keys)} tensors is a parameter of "
            f"this one (its keys: {shown_names(keys, 3)}; the model's: {shown_names(list(own), 3)})",
            "Check MODEL.WEIGHTS and the config (MODEL.META_ARCHITECTURE, MODEL.BACKBONE.NAME); for another "
            "implementation's Pix2Seq use tools/convert_pix2seq_checkpoint.py.",
        )  # fmt: skip

    # ---- resuming ----------------------------------------------------------------------------
    def has_checkpoint(self) -> bool:
        """detectron2's test (a ``last_checkpoint`` file), and also True when ``model_*.pth`` files exist
        without it: resuming then names the problem instead of starting over and overwriting them."""
        if super().has_checkpoint():
            return True
        return self._local_save_dir() and bool(self.save_dir) and bool(numbered_checkpoints(self.save_dir))

    def get_checkpoint_file(self) -> str:
        """The checkpoint to resume from (:func:`resolve_resume_checkpoint`, without the final load, which
        ``resume_or_load`` does); "" when there is none."""
        if not self._local_save_dir():
            return super().get_checkpoint_file()
        return resolve_resume(self.save_dir, self.resume_newest_intact, self.trusted, verify_named=False) or ""

    def resume_or_load(self, path: str, *, resume: bool = True) -> dict[str, Any]:
        """detectron2's ``resume_or_load``; with ``resume``, a missing or corrupt checkpoint named in
        ``last_checkpoint`` is a :class:`ResumeCheckpointError` naming it and the newest intact one, or, with
        ``resume_newest_intact``, training resumes from that one (see :func:`resolve_resume_checkpoint`)."""
        if not (resume and self._local_save_dir() and self.has_checkpoint()):
            return super().resume_or_load(path, resume=resume)
        target = self.get_checkpoint_file()
        try:
            return self.load(target)
        except (NotACheckpointError, UntrustedCheckpointError) as e:
            if isinstance(e, NotACheckpointError) and e.kind in MODEL_LEVEL_KINDS:
                raise  # the file is fine; the model is not the one it was saved from
            # damaged in a way only reading it all shows: the model was not touched (files load before weights)
            fallback = resolve_resume(
                self.save_dir, self.resume_newest_intact, self.trusted, verify_named=False, known_problem=e
            )
            return self.load(fallback)

    def _check_compatibility(self, state: Mapping) -> None:
        """The model's own compatibility checks on the checkpoint's state dict (a model that defines
        ``checkpoint_mismatch(state) -> str | None``, as ``Pix2Seq`` does: e.g. another token vocabulary,
        which detectron2's loader would skip with a warning and leave the embedding random)."""
        model = self.model.module if isinstance(self.model, nn.parallel.DistributedDataParallel) else self.model
        check = getattr(model, "checkpoint_mismatch", None)
        mismatch = check(state) if callable(check) else None
        if mismatch:
            raise IncompatibleCheckpointError(mismatch)


def load_inference_weights(cfg, model: torch.nn.Module) -> dict[str, Any]:
    """Load ``cfg.MODEL.WEIGHTS`` into ``model`` for inference (weights-only, vocabulary checked),
    and the checkpoint's weight average instead of its raw weights when ``MODEL.EMA.ENABLED``.
    Returns the checkpoint entries the model did not take."""
    from pix2seq_d2.modeling.ema import use_ema_weights

    checkpoint = Pix2SeqCheckpointer(model).load(cfg.MODEL.WEIGHTS)
    if cfg.MODEL.EMA.ENABLED:
        use_ema_weights(model, checkpoint)
    return checkpoint
