"""What a file given as a checkpoint is, told before torch or pickle reads it.

Every file given as a checkpoint (``MODEL.WEIGHTS`` in training, ``--eval-only``, the predictor and the
tools, ``--resume``) is inspected by its size and first/last bytes (:func:`check_checkpoint_file`).
Missing, empty, text (an HTML/XML page from a failed download, a git-lfs pointer, a YAML config),
truncated or corrupt zip, TensorFlow checkpoints, safetensors/ONNX/HDF5/NumPy/archives/images and
unknown binary data raise :class:`NotACheckpointError` (a :class:`~pix2seq_d2.utils.errors.UserError`)
naming the file, saying what it is and what to do. After loading, a file with Pretrained-Pix2Seq or
DETR-style keys, or none of the model's keys, is the same error (pointing to
``tools/convert_pix2seq_checkpoint.py`` where it applies); the kinds are listed in
:data:`CHECKPOINT_PROBLEMS`.
"""

from __future__ import annotations

import contextlib
import glob
import os
import re
import zipfile
import zlib

from pix2seq_d2.utils.errors import UserError
from pix2seq_d2.utils.file_kinds import describe_file_start

__all__ = [
    "CHECKPOINT_PROBLEMS",
    "CONVERTER_COMMAND",
    "MODEL_LEVEL_KINDS",
    "NotACheckpointError",
    "check_checkpoint_file",
    "check_path_kind",
    "checkpoint_files_in",
    "crc_problem",
    "not_a_checkpoint",
    "pretrained_pix2seq_error",
    "shown_names",
]


class NotACheckpointError(UserError, ValueError):
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
MODEL_LEVEL_KINDS = ("pretrained_pix2seq", "detr", "foreign")
_TF_INDEX_MAGIC = (0xDB4775248B80FB57).to_bytes(8, "little")  # the last 8 bytes of a TF checkpoint .index
_TF_DATA_SHARD = re.compile(r"\.data-\d{5}-of-\d{5}$")
CONVERTER_COMMAND = "python tools/convert_pix2seq_checkpoint.py"
MAX_SCANNED_PICKLE = 64 << 20  # bytes of a torch zip's data.pkl searched for foreign key names
_PRETRAINED_PIX2SEQ_KEYS = (b"transformer.vocal_classifier.", b"transformer.vocal_embed.", b"transformer.det_embed.")


def not_a_checkpoint(path: str, kind: str, what: str, hint: str = "") -> NotACheckpointError:
    message = f"Cannot load checkpoint {path}: it is {what}."
    return NotACheckpointError(path, kind, message + (f" {hint}" if hint else ""), what)


def _tensorflow(path: str, what: str, source: str | None = None) -> NotACheckpointError:
    return not_a_checkpoint(
        path, "tensorflow", what + " (google-research/pix2seq's official format), which pix2seq_d2 does not read "
        "directly",
        f"Convert it first: {CONVERTER_COMMAND} --source official {source or path} --output OUT.pth, then use "
        "OUT.pth as MODEL.WEIGHTS with OUT.yaml as --config-file (it holds the architecture read from the checkpoint).",
    )  # fmt: skip


def pretrained_pix2seq_error(path: str) -> NotACheckpointError:
    return not_a_checkpoint(
        path, "pretrained_pix2seq", "a Pretrained-Pix2Seq checkpoint (keys such as "
        "transformer.vocal_classifier.weight), whose layout is not pix2seq_d2's",
        f"Convert it first: {CONVERTER_COMMAND} --source pretrained_pix2seq {path} --output OUT.pth, then use OUT.pth "
        "as MODEL.WEIGHTS with OUT.yaml as --config-file.",
    )  # fmt: skip


def checkpoint_files_in(folder: str, suffixes: tuple[str, ...] = (".pth", ".pkl")) -> list[str]:
    with contextlib.suppress(OSError):
        return sorted(n for n in os.listdir(folder) if n.endswith(suffixes) and not n.startswith("."))
    return []


def shown_names(names: list[str], limit: int = 6) -> str:
    return ", ".join(names[:limit]) + (f", ... ({len(names)} in all)" if len(names) > limit else "")


def check_path_kind(path: str) -> None:
    """Errors for a path that is not a regular file: missing, a TF prefix, a folder."""
    if os.path.isfile(path):
        return
    if os.path.isfile(path + ".index"):
        raise _tensorflow(path, "the prefix of a TensorFlow checkpoint (its files are .index and .data-*)")
    if os.path.isdir(path):
        if os.path.isfile(os.path.join(path, "checkpoint")) or glob.glob(os.path.join(glob.escape(path), "*.index")):
            raise _tensorflow(path, "a folder holding a TensorFlow checkpoint")
        if os.path.isfile(os.path.join(path, "saved_model.pb")):
            raise not_a_checkpoint(
                path, "tensorflow", "a TensorFlow SavedModel folder",
                f"Only TF training checkpoints (ckpt-N.index + .data-*) can be converted, with {CONVERTER_COMMAND} "
                "--source official.",
            )  # fmt: skip
        inside = checkpoint_files_in(path)
        hint = f"It holds {shown_names(inside)}: give one of them." if inside else "It holds no .pth or .pkl file."
        if os.path.isfile(os.path.join(path, "last_checkpoint")):
            hint += " To continue the training run in this folder, use it as OUTPUT_DIR with --resume."
        raise not_a_checkpoint(path, "folder", "a folder, not a checkpoint file", hint)
    if os.path.exists(path):
        raise not_a_checkpoint(path, "unknown", "not a regular file (a device, a pipe or a socket?)")
    folder = os.path.dirname(path) or "."
    if os.path.isdir(folder):
        nearby = checkpoint_files_in(folder)
        where = f"; {folder} holds {shown_names(nearby)}" if nearby else f"; {folder} holds no .pth or .pkl file"
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
        raise not_a_checkpoint(
            path, "truncated", f"a PyTorch checkpoint (zip format, {size:,} bytes) that is truncated or corrupt: its "
            f"zip directory, which is written last, cannot be read ({type(e).__name__}: {e})",
            "The file was cut short (an interrupted download, copy or save, or a full disk). Download or copy it "
            "again; in a training folder, resume from an earlier model_*.pth (see --resume-newest-intact).",
        ) from e  # fmt: skip
    damaged = [m.filename for m in members if m.header_offset + m.compress_size > size]
    if damaged:
        raise not_a_checkpoint(
            path, "truncated", f"a zip archive ({size:,} bytes) whose records {shown_names(damaged, 3)} end past the "
            "end of the file: truncated",
            "Download or copy it again.",
        )  # fmt: skip
    return members


def _check_torch_zip(path: str, detect_layouts: bool = True) -> None:
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
            what = f"a zip archive that is not a PyTorch checkpoint (it holds {shown_names(names, 4) or 'nothing'})"
            if inner:
                what += f"; extract {inner[0]} from it first"
        raise not_a_checkpoint(path, "not-torch-zip", what)
    if any("/code/" in n or n.endswith("/constants.pkl") for n in names):
        raise not_a_checkpoint(
            path, "not-torch-zip", "a TorchScript archive (torch.jit.save), not a checkpoint of weights",
            "Save its weights instead: torch.save({'model': torch.jit.load(PATH).state_dict()}, 'OUT.pth').",
        )  # fmt: skip
    if detect_layouts and pickles[0].file_size <= MAX_SCANNED_PICKLE:
        with zipfile.ZipFile(path) as archive:
            try:
                structure = archive.read(pickles[0])
            except (zipfile.BadZipFile, zlib.error, EOFError, OSError) as e:
                raise not_a_checkpoint(
                    path, "corrupt", f"a PyTorch checkpoint whose {pickles[0].filename} is damaged ({e})"
                ) from e
        if any(key in structure for key in _PRETRAINED_PIX2SEQ_KEYS):
            raise pretrained_pix2seq_error(path)


def crc_problem(path: str) -> str | None:
    """The first member of the zip at ``path`` whose data fail their CRC check (or cannot be read), or None."""
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError) as e:
        return f"its records cannot be read ({type(e).__name__}: {e})"
    return None if bad is None else f"record {bad} fails its CRC check"


def check_checkpoint_file(path: str, *, detect_layouts: bool = True) -> str:
    """Inspect ``path`` (a local file or folder given as a checkpoint) by its size and magic bytes, before
    torch or pickle read anything. Returns how to read it: ``"torch"`` (PyTorch's zip format) or ``"pickle"``
    (a detectron2/Caffe2 ``.pkl``, or a legacy ``torch.save`` file).

    Raises :class:`NotACheckpointError` naming the file and saying what it is, with what to do: missing
    (and what its folder holds), a folder, empty, a git-lfs pointer, an HTML/XML page (a failed download),
    text/JSON/YAML, a truncated or corrupt zip, a zip that is not a PyTorch checkpoint (TorchScript, .npz,
    an archive), a TensorFlow checkpoint (``.index``, ``.data-*``, its prefix or folder: convert with
    ``tools/convert_pix2seq_checkpoint.py --source official``), a Pretrained-Pix2Seq checkpoint (convert
    with ``--source pretrained_pix2seq``), safetensors, ONNX, HDF5, NumPy, a compressed archive, an image,
    or binary data of no known format. ``detect_layouts=False`` leaves a zip whose keys are another
    release's layout alone (the converters read those files).
    """
    check_path_kind(path)
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
        _check_torch_zip(path, detect_layouts)
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
        raise not_a_checkpoint(
            path, "unknown", f"binary data of no checkpoint format pix2seq_d2 knows ({size:,} bytes starting with "
            f"{shown}): neither a PyTorch checkpoint (a zip archive) nor a pickle",
            "Is it the right file, complete and not encrypted?",
        )  # fmt: skip
    public = {"onnx": "other-format", "safetensors": "other-format", "image": "other-format", "hdf5": "other-format",
              "numpy": "other-format", "archive": "other-format", "video": "other-format",
              "document": "other-format", "json": "text", "yaml": "text"}  # fmt: skip
    raise not_a_checkpoint(path, public.get(kind, kind), what, hint)
