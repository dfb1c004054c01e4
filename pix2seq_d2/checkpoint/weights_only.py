"""The one loader of untrusted checkpoint files: weights-only, so that a malicious file cannot run code.

``.pth`` files are read with ``torch.load(weights_only=True)`` (``argparse.Namespace`` allowed, as
Pretrained-Pix2Seq/DETR files pickle their arguments); detectron2 / Caffe2 ``.pkl`` model-zoo files with
an unpickler that only builds numpy arrays and basic containers (:func:`safe_pickle_load`). A file that
needs anything else is refused (:class:`UntrustedCheckpointError`, naming the Python objects it would
build) unless ``PIX2SEQ_TRUST_CHECKPOINTS=1`` (:func:`checkpoints_trusted`). :func:`load_weights_only`
checks the file (:func:`~.file_checks.check_checkpoint_file`) and loads it; :func:`read_checkpoint_file`
also requires pix2seq_d2's layout (a dict of tensors, not another release's keys). The checkpointer, the
resume logic and the converters all read files through here.
"""

from __future__ import annotations

import argparse
import os
import pickle
import pickletools
import re
import zipfile
import zlib
from collections.abc import Mapping
from typing import IO, Any

import torch
from detectron2.utils.file_io import PathManager

from pix2seq_d2.utils.errors import UserError

from .file_checks import (
    MAX_SCANNED_PICKLE,
    check_checkpoint_file,
    crc_problem,
    not_a_checkpoint,
    pretrained_pix2seq_error,
    shown_names,
)

__all__ = [
    "TRUST_ENV_VAR",
    "UntrustedCheckpointError",
    "check_weights",
    "checkpoints_trusted",
    "env_flag",
    "load_weights_only",
    "read_checkpoint_file",
    "read_pickle_file",
    "safe_pickle_load",
    "torch_load_weights_only",
]

TRUST_ENV_VAR = "PIX2SEQ_TRUST_CHECKPOINTS"


class UntrustedCheckpointError(UserError, pickle.UnpicklingError):
    """A checkpoint that holds more than weights (arbitrary pickled objects) and was not trusted; ``reason``
    says what it would build ("it pickles Python objects: ...")."""

    def __init__(self, message: str, reason: str = ""):
        super().__init__(message)
        self.reason = reason or message


def env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes")


def checkpoints_trusted() -> bool:
    """Whether ``PIX2SEQ_TRUST_CHECKPOINTS`` allows loading arbitrary pickles."""
    return env_flag(TRUST_ENV_VAR)


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


def _refusal(path: str, reason: str) -> UntrustedCheckpointError:
    return UntrustedCheckpointError(
        f"Refused to load {path}: it is not weights-only ({reason}). Loading it could run arbitrary code. "
        f"If you trust this file, set the environment variable {TRUST_ENV_VAR}=1 to load it anyway.",
        reason,
    )


def torch_load_weights_only(path: str, trusted: bool) -> Any:
    """``torch.load`` on the CPU (weights-only unless ``trusted``; ``argparse.Namespace`` allowed, as
    Pretrained-Pix2Seq/DETR files pickle their arguments), with corruption and refusals as clear errors."""
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            return torch.load(path, map_location=torch.device("cpu"), weights_only=not trusted)
    except pickle.UnpicklingError as e:
        problem = crc_problem(path) if zipfile.is_zipfile(path) else None
        if problem is not None:
            raise not_a_checkpoint(path, "corrupt", f"a PyTorch checkpoint whose data are damaged: {problem}") from e
        if trusted:
            raise
        raise _refusal(path, _refusal_reason(path, e)) from None
    except (RuntimeError, EOFError, ValueError, KeyError, IndexError, OSError) as e:
        is_zip = zipfile.is_zipfile(path)
        problem = crc_problem(path) if is_zip else None
        if problem is None and is_zip:
            raise  # an intact file: not a problem of the file (e.g. out of memory)
        detail = problem or f"torch.load cannot read it ({type(e).__name__}: {str(e).strip()[:200]})"
        raise not_a_checkpoint(
            path, "corrupt", f"a damaged or incomplete checkpoint: {detail}", "Download or copy it again."
        ) from e


def _holds_tensors(obj: Mapping, depth: int = 2) -> bool:
    """Whether ``obj`` holds an array or tensor among its values, or (``depth`` > 1) in a dict among them."""
    return any(
        hasattr(v, "shape") or (depth > 1 and isinstance(v, Mapping) and _holds_tensors(v, depth - 1))
        for v in obj.values()
    )


def _pickled_globals(path: str) -> list[str]:
    """The classes and functions the main pickle of a torch zip checkpoint refers to (read with pickletools,
    nothing is built); [] when it cannot be read."""
    try:
        with zipfile.ZipFile(path) as archive:
            member = next((m for m in archive.infolist() if m.filename.endswith("data.pkl")), None)
            if member is None or member.file_size > MAX_SCANNED_PICKLE:
                return []
            data = archive.read(member)
        found, strings = [], []
        for opcode, arg, _ in pickletools.genops(data):
            if opcode.name in ("SHORT_BINUNICODE", "BINUNICODE", "UNICODE", "BINUNICODE8"):
                strings.append(arg)
            elif opcode.name == "GLOBAL":
                found.append(arg.replace(" ", "."))
            elif opcode.name == "STACK_GLOBAL" and len(strings) >= 2:
                found.append(f"{strings[-2]}.{strings[-1]}")
        return list(dict.fromkeys(found))
    except (zipfile.BadZipFile, ValueError, EOFError, OSError, zlib.error):
        return []


# Globals torch's weights-only unpickler builds by itself (tensor rebuilding, storages, containers).
_TORCH_BUILT = ("torch._utils.", "torch.", "collections.OrderedDict", "argparse.Namespace", "_codecs.encode")


def _refusal_reason(path: str, error: Exception) -> str:
    """Why ``torch.load(weights_only=True)`` refused ``path``: the Python objects its pickle would build."""
    objects = [g for g in _pickled_globals(path) if not g.startswith(_TORCH_BUILT) or g.startswith("torch.nn.modules.")]
    if objects:
        shown = shown_names(objects, 4)
        whole = " (a whole model saved with torch.save(model) instead of its state_dict?)" if any(
            "nn.modules" in g or g.endswith(("Module", "Model")) for g in objects
        ) else ""  # fmt: skip
        return f"it pickles Python objects: {shown}{whole}"
    lines = [re.sub(r"\x1b\[[0-9;]*m", "", line).strip() for line in str(error).splitlines()]
    return next((line for line in lines if line), type(error).__name__)


def check_weights(path: str, loaded: Any) -> None:
    """A loaded checkpoint must be a dict of tensors (or ``{"model": ...}``), not Pretrained-Pix2Seq's layout."""
    if not isinstance(loaded, Mapping):
        raise not_a_checkpoint(path, "not-weights", f"a file holding a {type(loaded).__name__}, not a dict of weights")
    state = loaded.get("model", loaded)
    if not isinstance(state, Mapping):
        what = f"a dict whose 'model' entry is a {type(state).__name__}, not a state dict"
        raise not_a_checkpoint(path, "not-weights", what)
    if any(isinstance(k, str) and k.startswith("transformer.vocal_") for k in state):
        raise pretrained_pix2seq_error(path)
    if not _holds_tensors(state):
        keys = [str(k) for k in list(loaded)[:6]]
        raise not_a_checkpoint(path, "not-weights", f"a dict without tensors (keys: {', '.join(keys) or 'none'})")


def load_weights_only(
    path: str, *, trusted: bool | None = None, verify_crc: bool = False, detect_layouts: bool = True
) -> Any:
    """Check (:func:`~.file_checks.check_checkpoint_file`) and load a local checkpoint file, whatever its
    layout: weights-only ``torch.load``, or the arrays-only unpickler for ``.pkl``. ``verify_crc`` also
    checks every record of a zip checkpoint against its CRC (torch does not: a flipped bit would load
    silently); ``detect_layouts=False`` accepts other releases' layouts (the converters read those).
    Raises :class:`~.file_checks.NotACheckpointError` or :class:`UntrustedCheckpointError`."""
    trusted = checkpoints_trusted() if trusted is None else trusted
    fmt = check_checkpoint_file(path, detect_layouts=detect_layouts)
    if fmt == "torch" and verify_crc:
        problem = crc_problem(path)
        if problem is not None:
            raise not_a_checkpoint(path, "corrupt", f"a PyTorch checkpoint whose data are damaged: {problem}")
    if fmt == "pickle" and path.endswith(".pkl"):
        return read_pickle_file(path, trusted)
    return torch_load_weights_only(path, trusted)


def read_checkpoint_file(path: str, *, trusted: bool | None = None, verify_crc: bool = False) -> dict[str, Any]:
    """:func:`load_weights_only` of a pix2seq_d2 (or detectron2 model-zoo) checkpoint: the loaded dict must
    hold tensors in this project's layout (:func:`check_weights`)."""
    loaded = load_weights_only(path, trusted=trusted, verify_crc=verify_crc)
    check_weights(path, loaded.get("blobs", loaded) if isinstance(loaded, Mapping) else loaded)
    return loaded


def read_pickle_file(path: str, trusted: bool) -> Any:
    with PathManager.open(path, "rb") as f:
        try:
            return pickle.load(f, encoding="latin1") if trusted else safe_pickle_load(f)
        except UntrustedCheckpointError as e:
            raise _refusal(path, e.reason) from None
        except (pickle.UnpicklingError, EOFError, ValueError, TypeError, IndexError, KeyError, AttributeError) as e:
            raise not_a_checkpoint(
                path, "corrupt", f"a pickle that cannot be read to its end ({type(e).__name__}: {e}): truncated or "
                "corrupt", "Download or copy it again.",
            ) from e  # fmt: skip
