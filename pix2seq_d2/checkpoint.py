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
* **Files that are not checkpoints.** Every file given as a checkpoint (``MODEL.WEIGHTS`` in
  training, ``--eval-only``, :func:`load_inference_weights` for the predictor and the tools,
  ``--resume``) is inspected by its size and first/last bytes *before* torch or pickle reads
  it (:func:`check_checkpoint_file`). Missing, empty, text (an HTML/XML page from a failed
  download, a git-lfs pointer, a YAML config), truncated or corrupt zip, TensorFlow
  checkpoints, safetensors/ONNX/HDF5/NumPy/archives/images and unknown binary data raise
  :class:`NotACheckpointError` (a ``ValueError``) naming the file, saying what it is and what
  to do. After loading, a file with Pretrained-Pix2Seq or DETR-style keys, or none of the
  model's keys, is the same error (pointing to ``tools/convert_pix2seq_checkpoint.py`` where
  it applies).
* **Resume from a damaged folder.** ``resume_or_load(..., resume=True)`` checks the checkpoint
  named in ``OUTPUT_DIR/last_checkpoint`` (size, magic bytes, zip CRCs, weights-only load).
  When it is missing or corrupt, the error (:class:`ResumeCheckpointError`) names it and the
  newest intact ``model_*.pth`` of the folder, with the command to use that one; with
  ``resume_newest_intact`` (``tools/train_net.py --resume-newest-intact``, or the environment
  variable ``PIX2SEQ_RESUME_NEWEST_INTACT=1``) training resumes from the newest intact one,
  logging which file was skipped. Nothing is ever deleted (:func:`resolve_resume_checkpoint`).
"""

from __future__ import annotations

import argparse
import contextlib
import glob
import logging
import math
import os
import pickle
import pickletools
import re
import secrets
import zipfile
import zlib
from collections.abc import Callable, Mapping
from typing import IO, Any
from urllib.parse import urlparse

import numpy as np
import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.utils.file_io import PathManager

from .input_checks import describe_file_start

__all__ = [
    "CHECKPOINT_PROBLEMS",
    "Pix2SeqCheckpointer",
    "NotACheckpointError",
    "ResumeCheckpointError",
    "UntrustedCheckpointError",
    "atomic_write",
    "check_checkpoint_file",
    "checkpoints_trusted",
    "load_inference_weights",
    "read_checkpoint_file",
    "resolve_resume_checkpoint",
    "resume_newest_intact_default",
    "safe_pickle_load",
    "to_weights_only",
    "RESUME_NEWEST_INTACT_ENV_VAR",
    "TRUST_ENV_VAR",
]

logger = logging.getLogger(__name__)

TRUST_ENV_VAR = "PIX2SEQ_TRUST_CHECKPOINTS"
RESUME_NEWEST_INTACT_ENV_VAR = "PIX2SEQ_RESUME_NEWEST_INTACT"
_TMP_SUFFIX = ".tmp"


class UntrustedCheckpointError(pickle.UnpicklingError):
    """A checkpoint that holds more than weights (arbitrary pickled objects) and was not trusted."""


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes")


def checkpoints_trusted() -> bool:
    """Whether ``PIX2SEQ_TRUST_CHECKPOINTS`` allows loading arbitrary pickles."""
    return _env_flag(TRUST_ENV_VAR)


def resume_newest_intact_default() -> bool:
    """Whether ``PIX2SEQ_RESUME_NEWEST_INTACT`` asks ``--resume`` to skip a corrupt newest checkpoint."""
    return _env_flag(RESUME_NEWEST_INTACT_ENV_VAR)


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


# ---- files that are not checkpoints ---------------------------------------------------------------
class NotACheckpointError(ValueError):
    """A file given as a checkpoint that is not a (usable) one. The message names the file, says what it
    is and what to do; ``path`` is the file and ``kind`` one of :data:`CHECKPOINT_PROBLEMS`."""

    def __init__(self, path: str, kind: str, message: str, what: str | None = None):
        super().__init__(message)
        self.path = path
        self.kind = kind
        self.what = what or message  # what the file is, as in "it is <what>"


# kind -> what it means. File-level kinds come from check_checkpoint_file / read_checkpoint_file;
# the model-level ones ("pretrained_pix2seq", "detr", "foreign") also from comparing keys with the model.
CHECKPOINT_PROBLEMS = {
    "missing": "no such file",
    "folder": "a folder, not a file",
    "unreadable": "a file that cannot be opened (permissions)",
    "empty": "0 bytes",
    "git-lfs": "a git-lfs pointer instead of the file",
    "html": "an HTML page (failed download)",
    "xml": "an XML document (a storage server's error response)",
    "text": "text (incl. JSON, YAML)",
    "truncated": "a PyTorch zip checkpoint cut short",
    "corrupt": "a checkpoint whose data is damaged",
    "not-torch-zip": "a zip archive that is not a PyTorch checkpoint (incl. TorchScript, .npz)",
    "tensorflow": "a TensorFlow checkpoint (index/data shards or its folder)",
    "pretrained_pix2seq": "a Pretrained-Pix2Seq checkpoint (convert it)",
    "detr": "a DETR-style state dict (transformer.*, backbone.0.body.*)",
    "foreign": "a state dict none of whose keys is the model's",
    "not-weights": "a loadable file without a dict of tensors",
    "other-format": "safetensors, ONNX, HDF5, NumPy, an archive, an image, a video, a PDF, TF Lite/protobuf",
    "unknown": "binary data of no known checkpoint format",
}
_MODEL_LEVEL_KINDS = ("pretrained_pix2seq", "detr", "foreign")
_TF_INDEX_MAGIC = (0xDB4775248B80FB57).to_bytes(8, "little")  # the last 8 bytes of a TF checkpoint .index
_TF_DATA_SHARD = re.compile(r"\.data-\d{5}-of-\d{5}$")
_CONVERTER = "python tools/convert_pix2seq_checkpoint.py"
_MAX_SCANNED_PICKLE = 64 << 20  # bytes of a torch zip's data.pkl searched for foreign key names
_PRETRAINED_PIX2SEQ_KEYS = (b"transformer.vocal_classifier.", b"transformer.vocal_embed.", b"transformer.det_embed.")


def _fail(path: str, kind: str, what: str, hint: str = "") -> NotACheckpointError:
    message = f"Cannot load checkpoint {path}: it is {what}."
    return NotACheckpointError(path, kind, message + (f" {hint}" if hint else ""), what)


def _tensorflow(path: str, what: str, source: str | None = None) -> NotACheckpointError:
    return _fail(
        path, "tensorflow", what + " (google-research/pix2seq's official format), which pix2seq_d2 does not read "
        "directly",
        f"Convert it first: {_CONVERTER} --source official {source or path} --output OUT.pth, then use OUT.pth as "
        "MODEL.WEIGHTS with OUT.yaml as --config-file (it holds the architecture read from the checkpoint).",
    )  # fmt: skip


def _pretrained_pix2seq(path: str) -> NotACheckpointError:
    return _fail(
        path, "pretrained_pix2seq", "a Pretrained-Pix2Seq checkpoint (keys such as "
        "transformer.vocal_classifier.weight), whose layout is not pix2seq_d2's",
        f"Convert it first: {_CONVERTER} --source pretrained_pix2seq {path} --output OUT.pth, then use OUT.pth "
        "as MODEL.WEIGHTS with OUT.yaml as --config-file.",
    )  # fmt: skip


def _folder_files(folder: str, suffixes: tuple[str, ...] = (".pth", ".pkl")) -> list[str]:
    with contextlib.suppress(OSError):
        return sorted(n for n in os.listdir(folder) if n.endswith(suffixes) and not n.startswith("."))
    return []


def _shown(names: list[str], limit: int = 6) -> str:
    return ", ".join(names[:limit]) + (f", ... ({len(names)} in all)" if len(names) > limit else "")


def _check_path_kind(path: str) -> None:
    """Errors for a path that is not a regular file: missing, a TF prefix, a folder."""
    if os.path.isfile(path):
        return
    if os.path.isfile(path + ".index"):
        raise _tensorflow(path, "the prefix of a TensorFlow checkpoint (its files are .index and .data-*)")
    if os.path.isdir(path):
        if os.path.isfile(os.path.join(path, "checkpoint")) or glob.glob(os.path.join(glob.escape(path), "*.index")):
            raise _tensorflow(path, "a folder holding a TensorFlow checkpoint")
        if os.path.isfile(os.path.join(path, "saved_model.pb")):
            raise _fail(
                path, "tensorflow", "a TensorFlow SavedModel folder",
                f"Only TF training checkpoints (ckpt-N.index + .data-*) can be converted, with {_CONVERTER} "
                "--source official.",
            )  # fmt: skip
        inside = _folder_files(path)
        hint = f"It holds {_shown(inside)}: give one of them." if inside else "It holds no .pth or .pkl file."
        if os.path.isfile(os.path.join(path, "last_checkpoint")):
            hint += " To continue the training run in this folder, use it as OUTPUT_DIR with --resume."
        raise _fail(path, "folder", "a folder, not a checkpoint file", hint)
    if os.path.exists(path):
        raise _fail(path, "unknown", "not a regular file (a device, a pipe or a socket?)")
    folder = os.path.dirname(path) or "."
    if os.path.isdir(folder):
        nearby = _folder_files(folder)
        where = f"; {folder} holds {_shown(nearby)}" if nearby else f"; {folder} holds no .pth or .pkl file"
    else:
        where = f"; its folder {folder} does not exist either"
    raise NotACheckpointError(path, "missing", f"Checkpoint file not found: {path}{where}.", "missing (deleted?)")


def _zip_members(path: str) -> list[zipfile.ZipInfo]:
    """The members of a zip file; NotACheckpointError ("truncated") when its directory cannot be read."""
    size = os.path.getsize(path)
    try:
        with zipfile.ZipFile(path) as archive:
            members = archive.infolist()
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, ValueError) as e:
        raise _fail(
            path, "truncated", f"a PyTorch checkpoint (zip format, {size:,} bytes) that is truncated or corrupt: its "
            f"zip directory, which is written last, cannot be read ({type(e).__name__}: {e})",
            "The file was cut short (an interrupted download, copy or save, or a full disk). Download or copy it "
            "again; in a training folder, resume from an earlier model_*.pth (see --resume-newest-intact).",
        ) from e  # fmt: skip
    damaged = [m.filename for m in members if m.header_offset + m.compress_size > size]
    if damaged:
        raise _fail(
            path, "truncated", f"a zip archive ({size:,} bytes) whose records {_shown(damaged, 3)} end past the end "
            "of the file: truncated",
            "Download or copy it again.",
        )  # fmt: skip
    return members


def _check_torch_zip(path: str) -> None:
    """A zip file: a PyTorch checkpoint (``<name>/data.pkl``), not TorchScript, an .npz or another archive,
    not a Pretrained-Pix2Seq state dict."""
    members = _zip_members(path)
    names = [m.filename for m in members]
    pickles = [m for m in members if m.filename == "data.pkl" or m.filename.endswith("/data.pkl")]
    if not pickles:
        if names and all(n.endswith(".npy") for n in names):
            what = "a NumPy .npz archive (arrays saved with numpy.savez), not a PyTorch checkpoint"
        else:
            inner = [n for n in names if n.endswith((".pth", ".pt", ".pkl", ".ckpt", ".index"))]
            what = f"a zip archive that is not a PyTorch checkpoint (it holds {_shown(names, 4) or 'nothing'})"
            if inner:
                what += f"; extract {inner[0]} from it first"
        raise _fail(path, "not-torch-zip", what)
    if any("/code/" in n or n.endswith("/constants.pkl") for n in names):
        raise _fail(
            path, "not-torch-zip", "a TorchScript archive (torch.jit.save), not a checkpoint of weights",
            "Save its weights instead: torch.save({'model': torch.jit.load(PATH).state_dict()}, 'OUT.pth').",
        )  # fmt: skip
    if pickles[0].file_size <= _MAX_SCANNED_PICKLE:
        with zipfile.ZipFile(path) as archive:
            try:
                structure = archive.read(pickles[0])
            except (zipfile.BadZipFile, zlib.error, EOFError, OSError) as e:
                raise _fail(
                    path, "corrupt", f"a PyTorch checkpoint whose {pickles[0].filename} is damaged ({e})"
                ) from e
        if any(key in structure for key in _PRETRAINED_PIX2SEQ_KEYS):
            raise _pretrained_pix2seq(path)


def _crc_problem(path: str) -> str | None:
    """The first member of the zip at ``path`` whose data fail their CRC check (or cannot be read), or None."""
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError) as e:
        return f"its records cannot be read ({type(e).__name__}: {e})"
    return None if bad is None else f"record {bad} fails its CRC check"


def check_checkpoint_file(path: str) -> str:
    """Inspect ``path`` (a local file or folder given as a checkpoint) by its size and magic bytes, before
    torch or pickle read anything. Returns how to read it: ``"torch"`` (PyTorch's zip format) or ``"pickle"``
    (a detectron2/Caffe2 ``.pkl``, or a legacy ``torch.save`` file).

    Raises :class:`NotACheckpointError` naming the file and saying what it is, with what to do: missing
    (and what its folder holds), a folder, empty, a git-lfs pointer, an HTML/XML page (a failed download),
    text/JSON/YAML, a truncated or corrupt zip, a zip that is not a PyTorch checkpoint (TorchScript, .npz,
    an archive), a TensorFlow checkpoint (``.index``, ``.data-*``, its prefix or folder: convert with
    ``tools/convert_pix2seq_checkpoint.py --source official``), a Pretrained-Pix2Seq checkpoint (convert
    with ``--source pretrained_pix2seq``), safetensors, ONNX, HDF5, NumPy, a compressed archive, an image,
    or binary data of no known format.
    """
    _check_path_kind(path)
    size = os.path.getsize(path)
    try:
        with open(path, "rb") as f:
            head = f.read(4096)
            f.seek(max(0, size - 8))
            tail = f.read(8) if size >= 8 else b""
    except OSError as e:
        raise NotACheckpointError(path, "unreadable", f"Cannot read checkpoint {path}: {e.strerror or e}.") from e
    if path.endswith(".index") or tail == _TF_INDEX_MAGIC:
        raise _tensorflow(path, "the index of a TensorFlow checkpoint")
    if _TF_DATA_SHARD.search(path):
        raise _tensorflow(path, "a data shard of a TensorFlow checkpoint")
    if head.startswith(b"model_checkpoint_path:"):
        raise _tensorflow(
            path, "the 'checkpoint' state file of a TensorFlow checkpoint folder", os.path.dirname(path) or "."
        )
    described = describe_file_start(head, size)
    kind, what = described if described is not None else (None, "")
    if kind == "zip":
        _check_torch_zip(path)
        return "torch"
    if kind == "pickle" or (path.endswith(".pkl") and head[:1] in (b"(", b"}", b"]", b"c")):
        return "pickle"  # protocol 2+ pickle, or an old text-protocol .pkl (which looks like text)
    hint = ""
    if kind == "empty":
        what = "empty (0 bytes)"
        hint = "An interrupted download or copy, or a full disk? Download or copy it again."
    elif kind in ("html", "xml"):
        hint = "Download it again and check the URL (a browser 'save as' of a download page saves the page)."
    elif kind == "yaml":
        hint = "Pass config files with --config-file; MODEL.WEIGHTS is the .pth file."
    elif kind in ("text", "json"):
        hint = "A checkpoint is binary (torch.save's zip format or a .pkl)."
    elif kind == "safetensors":
        hint = (
            'pix2seq_d2 reads torch.save files. If it holds a pix2seq_d2 state dict: python -c "import torch, '
            f"safetensors.torch as st; torch.save({{'model': st.load_file('{path}')}}, 'OUT.pth')\"."
        )
    elif kind == "onnx" or path.endswith(".onnx"):
        kind, what = "onnx", what or "an ONNX model"
        hint = "An ONNX export cannot be loaded back into PyTorch: use the .pth checkpoint it was exported from."
    elif kind in ("image", "video", "document", "hdf5", "numpy", "archive"):
        hint = "MODEL.WEIGHTS must be a PyTorch checkpoint (.pth) or a detectron2 .pkl."
    elif kind is None and head[4:8] == b"TFL3":
        kind, what = "other-format", "a TensorFlow Lite model"
    elif kind is None and path.endswith(".pb"):
        kind, what = "other-format", "a TensorFlow protobuf graph (.pb)"
    if kind is None:
        shown = " ".join(f"{b:02x}" for b in head[:16])
        raise _fail(
            path, "unknown", f"binary data of no checkpoint format pix2seq_d2 knows ({size:,} bytes starting with "
            f"{shown}): neither a PyTorch checkpoint (a zip archive) nor a pickle",
            "Is it the right file, complete and not encrypted?",
        )  # fmt: skip
    public = {"onnx": "other-format", "safetensors": "other-format", "image": "other-format", "hdf5": "other-format",
              "numpy": "other-format", "archive": "other-format", "video": "other-format",
              "document": "other-format", "json": "text", "yaml": "text"}  # fmt: skip
    raise _fail(path, public.get(kind, kind), what, hint)


def _torch_load_weights(path: str, trusted: bool) -> Any:
    """``torch.load`` on the CPU (weights-only unless ``trusted``; ``argparse.Namespace`` allowed, as
    Pretrained-Pix2Seq/DETR files pickle their arguments), with corruption and refusals as clear errors."""
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            return torch.load(path, map_location=torch.device("cpu"), weights_only=not trusted)
    except pickle.UnpicklingError as e:
        problem = _crc_problem(path) if zipfile.is_zipfile(path) else None
        if problem is not None:
            raise _fail(path, "corrupt", f"a PyTorch checkpoint whose data are damaged: {problem}") from e
        if trusted:
            raise
        raise UntrustedCheckpointError(_refusal(path, _refusal_reason(path, e))) from None
    except (RuntimeError, EOFError, ValueError, KeyError, IndexError, OSError) as e:
        problem = _crc_problem(path) if zipfile.is_zipfile(path) else None
        if problem is None and zipfile.is_zipfile(path):
            raise  # an intact file: not a problem of the file (e.g. out of memory)
        detail = problem or f"torch.load cannot read it ({type(e).__name__}: {str(e).strip()[:200]})"
        raise _fail(
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
            if member is None or member.file_size > _MAX_SCANNED_PICKLE:
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
        shown = _shown(objects, 4)
        whole = " (a whole model saved with torch.save(model) instead of its state_dict?)" if any(
            "nn.modules" in g or g.endswith(("Module", "Model")) for g in objects
        ) else ""  # fmt: skip
        return f"it pickles Python objects: {shown}{whole}"
    lines = [re.sub(r"\x1b\[[0-9;]*m", "", line).strip() for line in str(error).splitlines()]
    return next((line for line in lines if line), type(error).__name__)


def _check_weights(path: str, loaded: Any) -> None:
    """A loaded checkpoint must be a dict of tensors (or ``{"model": ...}``), not Pretrained-Pix2Seq's layout."""
    if not isinstance(loaded, Mapping):
        raise _fail(path, "not-weights", f"a file holding a {type(loaded).__name__}, not a dict of weights")
    state = loaded.get("model", loaded)
    if not isinstance(state, Mapping):
        raise _fail(path, "not-weights", f"a dict whose 'model' entry is a {type(state).__name__}, not a state dict")
    if any(isinstance(k, str) and k.startswith("transformer.vocal_") for k in state):
        raise _pretrained_pix2seq(path)
    if not _holds_tensors(state):
        keys = [str(k) for k in list(loaded)[:6]]
        raise _fail(path, "not-weights", f"a dict without tensors (keys: {', '.join(keys) or 'none'})")


def read_checkpoint_file(path: str, *, trusted: bool | None = None, verify_crc: bool = False) -> dict[str, Any]:
    """Check (:func:`check_checkpoint_file`) and load a local checkpoint file as our loader does:
    weights-only ``torch.load`` or the arrays-only unpickler for ``.pkl``. ``verify_crc`` also checks every
    record of a zip checkpoint against its CRC (torch does not: a flipped bit would load silently).
    Returns the loaded dict; raises :class:`NotACheckpointError` or :class:`UntrustedCheckpointError`."""
    trusted = checkpoints_trusted() if trusted is None else trusted
    fmt = check_checkpoint_file(path)
    if fmt == "torch" and verify_crc:
        problem = _crc_problem(path)
        if problem is not None:
            raise _fail(path, "corrupt", f"a PyTorch checkpoint whose data are damaged: {problem}")
    if fmt == "pickle" and path.endswith(".pkl"):
        loaded = _read_pickle(path, trusted)
    else:
        loaded = _torch_load_weights(path, trusted)
    _check_weights(path, loaded.get("blobs", loaded) if isinstance(loaded, Mapping) else loaded)
    return loaded


def _read_pickle(path: str, trusted: bool) -> Any:
    with PathManager.open(path, "rb") as f:
        try:
            return pickle.load(f, encoding="latin1") if trusted else safe_pickle_load(f)
        except UntrustedCheckpointError as e:
            raise UntrustedCheckpointError(_refusal(path, str(e))) from None
        except (pickle.UnpicklingError, EOFError, ValueError, TypeError, IndexError, KeyError, AttributeError) as e:
            raise _fail(
                path, "corrupt", f"a pickle that cannot be read to its end ({type(e).__name__}: {e}): truncated or "
                "corrupt", "Download or copy it again.",
            ) from e  # fmt: skip


# ---- resuming -------------------------------------------------------------------------------------
class ResumeCheckpointError(ValueError):
    """``--resume`` cannot use the checkpoint named in ``last_checkpoint`` (missing or corrupt). The message
    names it and the newest intact checkpoint of the folder (``newest_intact``, None if there is none) and
    how to resume from that one."""

    def __init__(self, message: str, unusable: str | None, newest_intact: str | None):
        super().__init__(message)
        self.unusable = unusable
        self.newest_intact = newest_intact


_NUMBERED = re.compile(r"^model_(\d+)\.pth$")


def _numbered_checkpoints(save_dir: str) -> list[str]:
    """``model_<iteration>.pth`` and ``model_final.pth`` of ``save_dir``."""
    names = [n for n in _folder_files(save_dir, (".pth",)) if _NUMBERED.match(n) or n == "model_final.pth"]
    return [os.path.join(save_dir, n) for n in names]


def _iteration(path: str, data: Mapping) -> int | None:
    for value in (data.get("iteration"), (data.get("trainer") or {}).get("iteration")):
        if isinstance(value, int):
            return value
    match = _NUMBERED.match(os.path.basename(path))
    return int(match.group(1)) if match else None


def _is(error: Exception) -> str:
    """``error`` (about one file) as a phrase after the file's name: "is truncated ...", "is missing"."""
    if isinstance(error, NotACheckpointError):
        return f"is {error.what}"
    return f"cannot be loaded: {error}"


def _intact(path: str, trusted: bool) -> tuple[int | None, str | None]:
    """(iteration, None) for a checkpoint that passes the checks and loads; (None, why not) otherwise."""
    try:
        data = read_checkpoint_file(path, trusted=trusted, verify_crc=True)
    except (NotACheckpointError, UntrustedCheckpointError) as e:
        return None, f"{os.path.basename(path)} {_is(e)}"
    return _iteration(path, data), None


def _newest_intact(save_dir: str, exclude: set[str], trusted: bool) -> tuple[str | None, int | None, list[str]]:
    """The newest (by iteration) intact ``model_*.pth`` of ``save_dir`` not in ``exclude``, its iteration, and
    why newer ones are not intact. ``model_final.pth`` is placed by the iteration it holds."""
    numbered, final = [], None
    for path in _numbered_checkpoints(save_dir):
        if os.path.abspath(path) in exclude:
            continue
        match = _NUMBERED.match(os.path.basename(path))
        if match:
            numbered.append((int(match.group(1)), path))
        else:
            final = path
    skipped = []
    final_iteration: float | None = None
    if final is not None:
        iteration, problem = _intact(final, trusted)
        if problem is None:
            final_iteration = math.inf if iteration is None else iteration
        else:
            skipped.append(problem)
    for number, path in sorted(numbered, reverse=True):
        if final_iteration is not None and final_iteration >= number:
            break
        iteration, problem = _intact(path, trusted)
        if problem is None:
            return path, iteration, skipped
        skipped.append(problem)
    if final_iteration is not None:
        return final, None if math.isinf(final_iteration) else int(final_iteration), skipped
    return None, None, skipped


def _named_problem(named: str, trusted: bool, verify_named: bool) -> Exception | None:
    """Why the checkpoint ``named`` in last_checkpoint cannot be resumed from, or None. Without ``verify_named``
    it is only inspected (size, magic bytes, zip CRCs); the caller loads it next."""
    try:
        if verify_named:
            read_checkpoint_file(named, trusted=trusted, verify_crc=True)
        elif check_checkpoint_file(named) == "torch":
            crc = _crc_problem(named)
            if crc is not None:
                raise _fail(named, "corrupt", f"a PyTorch checkpoint whose data are damaged: {crc}")
    except (NotACheckpointError, UntrustedCheckpointError) as e:
        return e
    return None


def _resolve_resume(
    save_dir: str, use_newest_intact: bool, trusted: bool, verify_named: bool, known_problem: Exception | None = None
) -> str | None:
    """See :func:`resolve_resume_checkpoint`. ``verify_named=False`` only inspects the named file (the caller
    loads it next and comes back with the error as ``known_problem`` if that fails)."""
    last_file = os.path.join(save_dir, "last_checkpoint")
    named = None
    if os.path.isfile(last_file):
        try:
            with open(last_file, encoding="utf-8") as f:
                name = f.read().strip()
        except (OSError, UnicodeDecodeError):
            name = ""
        if name:
            named = os.path.join(save_dir, name)
            error = known_problem or _named_problem(named, trusted, verify_named)
            if error is None:
                return named
            problem = f"{named}, the checkpoint named in {last_file}, {_is(error)}"
        else:
            problem = f"{last_file}, which names the checkpoint to resume from, is empty or unreadable"
    elif _numbered_checkpoints(save_dir):
        problem = f"{save_dir} holds checkpoints but no last_checkpoint file, which names the one to resume from"
    else:
        return None  # nothing to resume from: detectron2 starts from MODEL.WEIGHTS
    problem = problem.rstrip(".")
    intact, iteration, skipped = _newest_intact(save_dir, {os.path.abspath(named)} if named else set(), trusted)
    not_intact = "; ".join(reason.rstrip(".") for reason in skipped)
    also = f" Newer checkpoints that are not intact either: {not_intact}." if skipped else ""
    kept = "Nothing is deleted"
    if named and os.path.exists(named):
        kept += f": {named} stays on disk (a later save under its name replaces it; copy it elsewhere to keep it)"
    if intact is None:
        listed = f" Not intact: {not_intact}." if skipped else ""
        raise ResumeCheckpointError(
            f"Cannot resume: {problem}, and {save_dir} holds no intact model_*.pth to resume from instead.{listed} "
            "Start without --resume (in a new OUTPUT_DIR to keep these files), with MODEL.WEIGHTS for initial "
            "weights.",
            named,
            None,
        )
    at = f"iteration {iteration}" if iteration is not None else "iteration unknown"
    if use_newest_intact:
        logger.warning(
            f"Resuming from {intact} ({at}), the newest intact checkpoint in {save_dir}, because {problem}.{also} "
            f"{kept}."
        )
        return intact
    raise ResumeCheckpointError(
        f"Cannot resume: {problem}. The newest intact checkpoint in {save_dir} is {intact} ({at}). To resume from "
        "it, run the same command with --resume-newest-intact instead of --resume (tools/train_net.py; elsewhere "
        f"set the environment variable {RESUME_NEWEST_INTACT_ENV_VAR}=1), or make it the last checkpoint: echo "
        f"{os.path.basename(intact)} > {last_file}. {kept}.{also}",
        named,
        intact,
    )


def resolve_resume_checkpoint(save_dir: str, use_newest_intact: bool, *, trusted: bool | None = None) -> str | None:
    """The checkpoint ``--resume`` should load from ``save_dir`` (a local ``OUTPUT_DIR``), or None when there is
    nothing to resume (no ``last_checkpoint`` and no ``model_*.pth``: training starts from ``MODEL.WEIGHTS``).

    Normally the file named in ``save_dir/last_checkpoint``, after checking that it is intact (size and magic
    bytes, every zip record against its CRC, a weights-only load). When it is missing or not intact (or
    ``last_checkpoint`` is missing/empty while ``model_*.pth`` files exist):

    * ``use_newest_intact=False``: raises :class:`ResumeCheckpointError` naming the unusable file and the
      newest intact ``model_*.pth`` (by iteration; ``model_final.pth`` by the iteration it holds), with how to
      resume from it;
    * ``use_newest_intact=True``: logs a warning naming the skipped file and returns the newest intact one.

    Nothing is deleted or rewritten. Raises :class:`ResumeCheckpointError` when no checkpoint is intact.
    """
    trusted = checkpoints_trusted() if trusted is None else trusted
    return _resolve_resume(save_dir, use_newest_intact, trusted, verify_named=True)


# Model parameters whose first dimension is the vocabulary size / the maximum sequence length.
_VOCAB_SUFFIXES = ("token_embed.weight", "output_bias", "output_proj.weight")
_LENGTH_SUFFIXES = ("pos_embed.weight",)


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
            *glob.glob(os.path.join(folder, f".*.pth.*{_TMP_SUFFIX}")),
            *glob.glob(os.path.join(folder, f".last_checkpoint.*{_TMP_SUFFIX}")),
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
            _check_path_kind(local)
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
                raise _fail(filename, "not-weights", "not a pycls checkpoint (pycls files hold 'model_state')")
            state = {k: v for k, v in data["model_state"].items() if not k.endswith("num_batches_tracked")}
            return {"model": state, "__author__": "pycls", "matching_heuristics": True}
        if filename.endswith(".pkl"):  # a torch.save file named .pkl: read it as one
            loaded = self._torch_load(filename)
            return loaded if "model" in loaded else {"model": loaded}
        return super()._load_file(filename)  # DetectionCheckpointer -> self._torch_load, then URL queries

    def _load_pickle(self, filename: str) -> dict[str, Any]:
        data = _read_pickle(filename, self.trusted)
        _check_weights(filename, data.get("blobs", data) if isinstance(data, Mapping) else data)
        if "model" in data and "__author__" in data:  # detectron2 model zoo
            self.logger.info(f"Reading a file from '{data['__author__']}'")
            return data
        blobs = data.get("blobs", data)  # Caffe2 detection models keep their weights under "blobs"
        model = {k: v for k, v in blobs.items() if not k.endswith("_momentum")}
        return {"model": model, "__author__": "Caffe2", "matching_heuristics": True}

    def _torch_load(self, f: str) -> dict[str, Any]:
        loaded = _torch_load_weights(f, self.trusted)
        _check_weights(f, loaded)
        return loaded

    def _load_model(self, checkpoint: Any):
        state = checkpoint.get("model", {})
        if not checkpoint.get("matching_heuristics", False):
            self._check_keys(state)
        self._check_vocabulary(state)
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
            raise _fail(
                path, "detr", f"a DETR-style checkpoint (keys such as {_shown(keys, 3)}), not a pix2seq_d2 one",
                f"A Pretrained-Pix2Seq checkpoint converts with {_CONVERTER} --source pretrained_pix2seq {path} "
                "--output OUT.pth; other DETR-family models cannot be loaded into Pix2Seq.",
            )  # fmt: skip
        nested = next((k for k in ("state_dict", "model_state_dict", "weights", "params") if k in state), None)
        if nested is not None and isinstance(state[nested], Mapping):
            raise _fail(
                path, "foreign", f"a training checkpoint of another framework (e.g. PyTorch Lightning) whose weights "
                f"are under {nested!r}, with keys such as {_shown([str(k) for k in state[nested]], 3)}",
                f"If they are pix2seq_d2 weights, save them as ours: torch.save({{'model': ckpt[{nested!r}]}}, "
                "'OUT.pth') after removing any key prefix (such as 'model.').",
            )  # fmt: skip
        raise _fail(
            path, "foreign", f"a state dict of another model: none of its {len(keys)} tensors is a parameter of "
            f"this one (its keys: {_shown(keys, 3)}; the model's: {_shown(list(own), 3)})",
            "Check MODEL.WEIGHTS and the config (MODEL.META_ARCHITECTURE, MODEL.BACKBONE.NAME); for another "
            "implementation's Pix2Seq use tools/convert_pix2seq_checkpoint.py.",
        )  # fmt: skip

    # ---- resuming ----------------------------------------------------------------------------
    def has_checkpoint(self) -> bool:
        """detectron2's test (a ``last_checkpoint`` file), and also True when ``model_*.pth`` files exist
        without it: resuming then names the problem instead of starting over and overwriting them."""
        if super().has_checkpoint():
            return True
        return self._local_save_dir() and bool(self.save_dir) and bool(_numbered_checkpoints(self.save_dir))

    def get_checkpoint_file(self) -> str:
        """The checkpoint to resume from (:func:`resolve_resume_checkpoint`, without the final load, which
        ``resume_or_load`` does); "" when there is none."""
        if not self._local_save_dir():
            return super().get_checkpoint_file()
        return _resolve_resume(self.save_dir, self.resume_newest_intact, self.trusted, verify_named=False) or ""

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
            if isinstance(e, NotACheckpointError) and e.kind in _MODEL_LEVEL_KINDS:
                raise  # the file is fine; the model is not the one it was saved from
            # damaged in a way only reading it all shows: the model was not touched (files load before weights)
            fallback = _resolve_resume(
                self.save_dir, self.resume_newest_intact, self.trusted, verify_named=False, known_problem=e
            )
            return self.load(fallback)

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
