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
* **Vocabulary check.** A checkpoint whose token vocabulary (``NUM_CLASSES`` + ``NUM_BINS``)
  or sequence length (``MAX_OBJECTS``) differs from the model's is an error naming those
  keys, instead of detectron2's warning and silently re-initialised embeddings.
"""

from __future__ import annotations

import contextlib
import glob
import logging
import os
import pickle
import secrets
from collections.abc import Callable
from typing import IO, Any

import numpy as np
import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.utils.file_io import PathManager

__all__ = [
    "Pix2SeqCheckpointer",
    "UntrustedCheckpointError",
    "atomic_write",
    "checkpoints_trusted",
    "safe_pickle_load",
    "to_weights_only",
    "TRUST_ENV_VAR",
]

logger = logging.getLogger(__name__)

TRUST_ENV_VAR = "PIX2SEQ_TRUST_CHECKPOINTS"
_TMP_SUFFIX = ".tmp"


class UntrustedCheckpointError(pickle.UnpicklingError):
    """A checkpoint that holds more than weights (arbitrary pickled objects) and was not trusted."""


def checkpoints_trusted() -> bool:
    """Whether ``PIX2SEQ_TRUST_CHECKPOINTS`` allows loading arbitrary pickles."""
    return os.environ.get(TRUST_ENV_VAR, "").strip().lower() in ("1", "true", "yes")


def _fsync_dir(directory: str) -> None:
    with contextlib.suppress(OSError):  # not every platform/filesystem can open or sync a folder
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def atomic_write(path: str, write: Callable[[IO[bytes]], Any]) -> None:
    """Create or replace ``path`` with what ``write(f)`` writes, all or nothing.

    The data go to ``.<name>.<pid>.<random>.tmp`` in the same folder, are fsync'ed, and the
    file is renamed over ``path`` (atomic on POSIX and Windows); on any error the temporary
    file is removed and ``path`` is untouched.
    """
    directory = os.path.dirname(os.path.abspath(path))
    tmp = os.path.join(directory, f".{os.path.basename(path)}.{os.getpid()}.{secrets.token_hex(4)}{_TMP_SUFFIX}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_dir(directory)


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


# Globals a model-zoo pickle may reference: numpy array/scalar reconstruction and OrderedDict.
_SAFE_PICKLE_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"),  # arrays pickled with protocol 5
    ("numpy._core.numeric", "_frombuffer"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("collections", "OrderedDict"),
    ("_codecs", "encode"),  # how Python 3 pickles bytes for protocol 2
}


class _ArraysOnlyUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _SAFE_PICKLE_GLOBALS:
            return super().find_class(module, name)
        raise UntrustedCheckpointError(f"it references {module}.{name}, which is not a numpy array or container")


def safe_pickle_load(f: IO[bytes]) -> Any:
    """Unpickle a detectron2/Caffe2 model-zoo ``.pkl`` (numpy arrays in dicts), building nothing else."""
    return _ArraysOnlyUnpickler(f, encoding="latin1").load()


def _refusal(path: str, reason: str) -> str:
    return (
        f"Refused to load {path}: it is not weights-only ({reason}). Loading it could run arbitrary code. "
        f"If you trust this file, set the environment variable {TRUST_ENV_VAR}=1 to load it anyway."
    )


# Model parameters whose first dimension is the vocabulary size / the maximum sequence length.
_VOCAB_SUFFIXES = ("token_embed.weight", "output_bias", "output_proj.weight")
_LENGTH_SUFFIXES = ("pos_embed.weight",)


class Pix2SeqCheckpointer(DetectionCheckpointer):
    """A ``DetectionCheckpointer`` with atomic saves, weights-only loads and a vocabulary check
    (see the module docstring). Same constructor, plus ``trusted`` (default: ``PIX2SEQ_TRUST_CHECKPOINTS``)."""

    def __init__(self, model, save_dir: str = "", *, trusted: bool | None = None, **kwargs):
        super().__init__(model, save_dir, **kwargs)
        self.trusted = checkpoints_trusted() if trusted is None else trusted

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
            *glob.glob(os.path.join(folder, f".*.pth.*{_TMP_SUFFIX}")),
            *glob.glob(os.path.join(folder, f".last_checkpoint.*{_TMP_SUFFIX}")),
        ]
        for p in stale:
            with contextlib.suppress(OSError):
                os.unlink(p)
        return stale

    # ---- loading -----------------------------------------------------------------------------
    def _load_file(self, filename: str) -> dict[str, Any]:
        if filename.endswith(".pkl"):
            return self._load_pickle(filename)
        if filename.endswith(".pyth"):  # pycls
            data = self._torch_load(filename)
            if "model_state" not in data:
                raise ValueError(f"Cannot load .pyth file {filename}: pycls checkpoints must contain 'model_state'")
            state = {k: v for k, v in data["model_state"].items() if not k.endswith("num_batches_tracked")}
            return {"model": state, "__author__": "pycls", "matching_heuristics": True}
        return super()._load_file(filename)  # .pth: DetectionCheckpointer -> self._torch_load

    def _load_pickle(self, filename: str) -> dict[str, Any]:
        with PathManager.open(filename, "rb") as f:
            if self.trusted:
                data = pickle.load(f, encoding="latin1")
            else:
                try:
                    data = safe_pickle_load(f)
                except UntrustedCheckpointError as e:
                    raise UntrustedCheckpointError(_refusal(filename, str(e))) from None
        if "model" in data and "__author__" in data:  # detectron2 model zoo
            self.logger.info(f"Reading a file from '{data['__author__']}'")
            return data
        blobs = data.get("blobs", data)  # Caffe2 detection models keep their weights under "blobs"
        model = {k: v for k, v in blobs.items() if not k.endswith("_momentum")}
        return {"model": model, "__author__": "Caffe2", "matching_heuristics": True}

    def _torch_load(self, f: str) -> dict[str, Any]:
        try:
            return torch.load(f, map_location=torch.device("cpu"), weights_only=not self.trusted)
        except pickle.UnpicklingError as e:
            if self.trusted:
                raise
            reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise UntrustedCheckpointError(_refusal(f, reason)) from None
        except RuntimeError as e:
            if "zip archive" in str(e) or "PytorchStreamReader" in str(e):
                raise RuntimeError(f"Checkpoint {f} is corrupt or incomplete ({e}); delete it or load another") from e
            raise

    def _load_model(self, checkpoint: Any):
        self._check_vocabulary(checkpoint.get("model", {}))
        return super()._load_model(checkpoint)

    def _check_vocabulary(self, state: dict) -> None:
        """Raise a ``ValueError`` if the checkpoint's vocabulary or sequence length differs from the model's."""
        own = self.model.state_dict()
        problems = []
        for key, value in state.items():
            name = key[len("module.") :] if key.startswith("module.") and key not in own else key
            if name not in own or not hasattr(value, "shape") or tuple(value.shape) == tuple(own[name].shape):
                continue
            got, want = tuple(value.shape), tuple(own[name].shape)
            if name.endswith(_VOCAB_SUFFIXES) and got[:1] != want[:1]:
                problems.append(f"{name}: vocabulary of {got[0]} tokens in the checkpoint, {want[0]} in the model")
            elif name.endswith(_LENGTH_SUFFIXES) and got[:1] != want[:1]:
                problems.append(f"{name}: {got[0]} sequence positions in the checkpoint, {want[0]} in the model")
        if not problems:
            return
        tokenizer = getattr(self.model, "tokenizer", None)
        settings = ""
        if tokenizer is not None:
            settings = (
                f" (this model: TOKENIZER.LAYOUT={tokenizer.layout.name!r}, NUM_CLASSES={tokenizer.num_classes}, "
                f"NUM_BINS={tokenizer.num_bins}, vocabulary {tokenizer.vocab_size})"
            )
        raise ValueError(
            "The checkpoint was trained with another token vocabulary or sequence length: "
            + "; ".join(problems)
            + ". Set MODEL.PIX2SEQ.TOKENIZER.LAYOUT, NUM_CLASSES and NUM_BINS (the vocabulary size follows "
            f"from them){settings}, and MODEL.PIX2SEQ.MAX_SEQ_LEN or MAX_OBJECTS / MAX_OBJECTS_TEST (sequence "
            "positions = 5 x max(MAX_OBJECTS, MAX_OBJECTS_TEST) + 1) to the values it was trained with. A "
            "converted checkpoint's own OUTPUT.yaml has them."
        )


def load_inference_weights(cfg, model: torch.nn.Module) -> dict[str, Any]:
    """Load ``cfg.MODEL.WEIGHTS`` into ``model`` for inference (weights-only, vocabulary checked),
    and the checkpoint's weight average instead of its raw weights when ``MODEL.EMA.ENABLED``.
    Returns the checkpoint entries the model did not take."""
    from .ema import use_ema_weights

    checkpoint = Pix2SeqCheckpointer(model).load(cfg.MODEL.WEIGHTS)
    if cfg.MODEL.EMA.ENABLED:
        use_ema_weights(model, checkpoint)
    return checkpoint
