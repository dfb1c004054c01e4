"""Writing files all or nothing: the one atomic writer of checkpoints, converted weights, configs and
generated datasets (a crash or ``kill -9`` while writing leaves the previous file intact), and its final
step on its own (:func:`replace_synced`) for downloads, which fill a resumable ``.part`` file first."""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Callable
from typing import IO, Any

__all__ = ["TMP_SUFFIX", "atomic_write", "atomic_write_bytes", "replace_synced"]

TMP_SUFFIX = ".tmp"


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
    tmp = os.path.join(directory, f".{os.path.basename(path)}.{os.getpid()}.{secrets.token_hex(4)}{TMP_SUFFIX}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        replace_synced(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def replace_synced(tmp: str, path: str) -> None:
    """Rename the complete, fsync'ed file ``tmp`` over ``path`` (atomic on POSIX and Windows) and sync the
    folder, so that the new name survives a crash: :func:`atomic_write`'s last step, on its own for writers
    that fill their temporary file themselves (a resumable download's ``.part``)."""
    os.replace(tmp, path)
    _fsync_dir(os.path.dirname(os.path.abspath(path)))


def atomic_write_bytes(path: str, data: bytes) -> None:
    """:func:`atomic_write` of ``data``."""
    atomic_write(path, lambda f: f.write(data))
