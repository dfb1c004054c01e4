"""Fetching a published checkpoint by name (``"official/R50_640"``) into the cache folder, checking its files,
and converting it: what ``tools/convert_pix2seq_checkpoint.py --model NAME`` runs.

The table of names, URLs, converter settings and configs is
:data:`pix2seq_d2.model_zoo.PUBLISHED_CHECKPOINTS`; each file is downloaded by
:func:`pix2seq_d2.model_zoo.download` (progress bar, resume, size check) to
``<cache>/<name>/<file>``, where a later run finds it without a request.

An official (TensorFlow) folder is fetched as ``tf.train.latest_checkpoint`` reads it: first the
``checkpoint`` state file, whose ``model_checkpoint_path`` names the prefix ``ckpt-N``; then
``ckpt-N.index``, whose header names the data shards; then every shard; ``config.json`` where the
folder has one. Before anything is converted, each file is checked for what it must be: the state
file's line, the index parsed (every block's crc32c), each shard at least as long as the index's
last tensor in it; a Pretrained-Pix2Seq file must be a PyTorch checkpoint
(:func:`~pix2seq_d2.checkpoint.check_checkpoint_file`). A file that fails is removed from the cache
(the next run downloads it again) and the error names its URL and says what it is instead.
"""

from __future__ import annotations

import os
import re

from pix2seq_d2.checkpoint import NotACheckpointError, check_checkpoint_file
from pix2seq_d2.model_zoo import (
    DownloadError,
    PublishedCheckpoint,
    cache_dir,
    configs_dir,
    download,
    published_checkpoint,
    shipped_config_file,
)
from pix2seq_d2.utils.file_kinds import describe_file_start

from .converter import ConversionError, ConvertedCheckpoint
from .official import convert_official
from .pretrained_pix2seq import convert_pretrained_pix2seq
from .tf_checkpoint import TFCheckpoint, TFCheckpointError

__all__ = ["ABSENT_SUFFIX", "checkpoint_folder", "convert_published", "fetch_checkpoint"]

STATE_FILE = "checkpoint"
CONFIG_JSON = "config.json"
ABSENT_SUFFIX = ".absent"  # "<file>.absent" in the cache: the server has no such (optional) file
_STATE_LINE = re.compile(r'^model_checkpoint_path:\s*"([^"\n]*)"\s*$', re.MULTILINE)
_PREFIX = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.+-]*")


def checkpoint_folder(name: str, cache: str | None = None) -> str:
    """Where published checkpoint ``name``'s files are kept: ``<cache>/<name>``."""
    return os.path.join(cache or cache_dir(), *published_checkpoint(name).name.split("/"))


def _what(path: str) -> str:
    """What a file that is not what was expected looks like, for an error message."""
    with open(path, "rb") as f:
        head = f.read(4096)
    described = describe_file_start(head, os.path.getsize(path))
    return described[1] if described else f"{os.path.getsize(path):,} bytes of binary data"


def _rejected(path: str, url: str, problem: str) -> ConversionError:
    """Remove ``path`` from the cache (the next run downloads it again); the error to raise."""
    error = ConversionError(f"{url}: {problem} (downloaded to {path}, now removed; run again to download it again)")
    os.remove(path)
    return error


class _Fetcher:
    """Downloads the files of one table entry into its cache folder."""

    def __init__(self, entry: PublishedCheckpoint, folder: str, progress: bool, retries: int):
        self.entry, self.folder, self.progress, self.retries = entry, folder, progress, retries

    def get(self, file: str) -> tuple[str, str]:
        """``file`` of the entry, downloaded unless cached -> (local path, its URL)."""
        url = self.entry.file_url(file)
        path = os.path.join(self.folder, file)
        return download(url, path, progress=self.progress, retries=self.retries), url

    def get_optional(self, file: str) -> str | None:
        """Like :meth:`get`, for a file the server may not have (HTTP 404: None, remembered in the cache)."""
        absent = os.path.join(self.folder, file + ABSENT_SUFFIX)
        if os.path.exists(absent):
            return None
        try:
            return self.get(file)[0]
        except DownloadError as e:
            if e.status != 404:
                raise
            with open(absent, "w") as f:
                f.write(f"{self.entry.file_url(file)}: HTTP 404\n")
            return None


def _fetch_official(fetcher: _Fetcher) -> str:
    state, url = fetcher.get(STATE_FILE)
    with open(state, "rb") as f:
        match = _STATE_LINE.search(f.read(65536).decode("utf-8", "replace"))
    if match is None:
        raise _rejected(state, url, f"not a TensorFlow checkpoint state file (model_checkpoint_path: ...): "
                                    f"it is {_what(state)}")  # fmt: skip
    prefix = match.group(1).replace("\\", "/").rsplit("/", 1)[-1]  # a recorded absolute path: its last part
    if not _PREFIX.fullmatch(prefix):
        raise _rejected(state, url, f"names the checkpoint prefix {match.group(1)!r}, which is not a file name")
    index, url = fetcher.get(prefix + ".index")
    try:
        ckpt = TFCheckpoint(index)
    except TFCheckpointError as e:
        raise _rejected(index, url, f"not a TensorFlow checkpoint index: it is {_what(index)} ({e})") from e
    ends: dict[int, int] = {}
    for name in ckpt.keys():
        entry = ckpt.entry(name)
        ends[entry.shard_id] = max(ends.get(entry.shard_id, 0), entry.offset + entry.size)
    for shard_id, data_path in enumerate(ckpt.data_paths):
        path, url = fetcher.get(os.path.basename(data_path))
        size, needed = os.path.getsize(path), ends.get(shard_id, 0)
        if size < needed:
            raise _rejected(path, url, f"{size:,} bytes, but the index stores tensors up to byte {needed:,} of this "
                                       "data shard: truncated")  # fmt: skip
    fetcher.get_optional(CONFIG_JSON)
    return fetcher.folder


def _fetch_file(fetcher: _Fetcher) -> str:
    path, url = fetcher.get(fetcher.entry.file_name)
    try:
        check_checkpoint_file(path, detect_layouts=False)
    except NotACheckpointError as e:
        raise _rejected(path, url, f"not a PyTorch checkpoint: it is {e.what}") from e
    return path


def fetch_checkpoint(name: str, *, cache: str | None = None, progress: bool = True, retries: int = 2) -> str:
    """Download published checkpoint ``name`` into ``<cache>/<name>`` (files already there are not
    downloaded again) and check its files -> the path to convert: the folder of an official checkpoint,
    the file of a Pretrained-Pix2Seq one. ``cache``: default ``$PIX2SEQ_CACHE`` or ``~/.cache/pix2seq_d2``."""
    entry = published_checkpoint(name)
    fetcher = _Fetcher(entry, checkpoint_folder(name, cache), progress, retries)
    return _fetch_official(fetcher) if entry.source == "official" else _fetch_file(fetcher)


def convert_published(
    name: str, *, cache: str | None = None, progress: bool = True, retries: int = 2
) -> ConvertedCheckpoint:
    """:func:`fetch_checkpoint`, then convert it with the table's settings. The result must be based on the
    table's config (else the published files are not the model the name promises: a ConversionError)."""
    entry = published_checkpoint(name)
    path = fetch_checkpoint(name, cache=cache, progress=progress, retries=retries)
    convert = convert_official if entry.source == "official" else convert_pretrained_pix2seq
    converted = convert(path, **entry.options)
    expected = shipped_config_file(entry.config)
    if os.path.realpath(converted.base_config) != os.path.realpath(expected):
        raise ConversionError(
            f"{path}: published checkpoint {name} should convert to {entry.config}, but its tensors make it "
            f"{os.path.relpath(converted.base_config, configs_dir())}; convert the "
            f"files with --source {entry.source} {path} instead"
        )
    converted.notes.append(f"published checkpoint {name}: {entry.url}")
    return converted
