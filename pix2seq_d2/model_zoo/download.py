"""Downloading a file over HTTP(S) into the cache folder: a progress bar, resuming an interrupted download,
a size check, and nothing in place until the whole file has arrived.

``download(url, path)`` returns at once when ``path`` exists (a cache hit makes no request). Otherwise the
bytes go to ``path + ".part"``; a ``.part`` left by an interrupted run is continued with an HTTP ``Range``
request (a server that answers with the whole file instead restarts it from zero). The file is complete
when it has the size the server announced (``Content-Length``, or the total of ``Content-Range``); only
then is it renamed to ``path`` (:func:`~pix2seq_d2.utils.file_io.replace_synced`: atomic, so ``path`` is never
a partial file). A connection
that breaks off is resumed up to ``retries`` times; after that the ``.part`` stays for the next run.

Every failure is a :class:`DownloadError` (a :class:`~pix2seq_d2.utils.errors.UserError`) naming the URL:
an HTTP error status (``status`` holds it), an unreachable server, an HTML page where a file was expected,
or a size that does not match. The cache folder is ``$PIX2SEQ_CACHE``, else ``~/.cache/pix2seq_d2``.
"""

from __future__ import annotations

import http.client
import os
import re
import sys
import urllib.error
import urllib.request

from tqdm import tqdm

from pix2seq_d2.utils.errors import UserError
from pix2seq_d2.utils.file_io import replace_synced

__all__ = ["CACHE_ENV_VAR", "PART_SUFFIX", "DownloadError", "cache_dir", "download"]

CACHE_ENV_VAR = "PIX2SEQ_CACHE"
PART_SUFFIX = ".part"
CHUNK_BYTES = 1 << 20
_CONTENT_RANGE = re.compile(r"^bytes (\d+)-(\d+)/(\d+|\*)$")


class DownloadError(UserError, OSError):
    """A download that failed; the message names the URL. ``status``: the HTTP status, if the server answered."""

    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        self.status = status

    def __str__(self) -> str:  # OSError would format its arguments as a tuple
        return str(self.args[0])


class _Interrupted(Exception):
    """The connection ended before the whole file arrived (the ``.part`` keeps what did)."""


def cache_dir() -> str:
    """Where downloads are kept: ``$PIX2SEQ_CACHE``, else ``~/.cache/pix2seq_d2``."""
    return os.path.expanduser(os.environ.get(CACHE_ENV_VAR) or os.path.join("~", ".cache", "pix2seq_d2"))


def _total_size(response: http.client.HTTPResponse, start: int) -> int | None:
    """The full file's size from a response starting at byte ``start`` (None when the server does not say)."""
    if response.status == 206:
        match = _CONTENT_RANGE.match(response.headers.get("Content-Range", "").strip())
        if match and match.group(3) != "*":
            return int(match.group(3))
        return None
    length = response.headers.get("Content-Length")
    return start + int(length) if length and length.isdigit() else None


def _open(url: str, start: int, timeout: float) -> http.client.HTTPResponse:
    headers = {"User-Agent": "pix2seq_d2", "Accept-Encoding": "identity"}
    if start:
        headers["Range"] = f"bytes={start}-"
    try:
        return urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout)
    except urllib.error.HTTPError as e:
        e.close()
        raise DownloadError(f"cannot download {url}: HTTP {e.code} {e.reason}", status=e.code) from e
    except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", e)
        raise DownloadError(f"cannot download {url}: {reason} (no network, or a proxy is needed?)") from e


def _receive(url: str, part: str, progress: bool, timeout: float) -> None:
    """Continue ``part`` from its current size (or start it) until the whole file is there."""
    have = os.path.getsize(part) if os.path.isfile(part) else 0
    try:
        response = _open(url, have, timeout)
    except DownloadError as e:
        if e.status != 416 or not have:
            raise
        os.remove(part)  # "range not satisfiable": the part is not a prefix of this file; start over
        have, response = 0, _open(url, 0, timeout)
    with response:
        if "text/html" in response.headers.get("Content-Type", ""):
            raise DownloadError(
                f"cannot download {url}: the server sent an HTML page instead of the file (a login, error or "
                "confirmation page?)",
                status=response.status,
            )
        if response.status == 206:
            match = _CONTENT_RANGE.match(response.headers.get("Content-Range", "").strip())
            if not match or int(match.group(1)) != have:  # not the bytes asked for: start over
                os.remove(part)
                raise _Interrupted(f"the server resumed with {response.headers.get('Content-Range')!r}")
        else:
            have = 0  # the server ignores Range: the whole file comes again, from its first byte
        total = _total_size(response, have)
        mode = "ab" if have else "wb"
        name = os.path.basename(part)[: -len(PART_SUFFIX)]
        with (
            open(part, mode) as f,
            tqdm(
                total=total, initial=have, unit="B", unit_scale=True, unit_divisor=1024, desc=name,
                disable=not progress, file=sys.stderr, leave=False,
            ) as bar,
        ):  # fmt: skip
            while True:
                try:
                    chunk = response.read(CHUNK_BYTES)
                except (TimeoutError, http.client.HTTPException, ConnectionError) as e:
                    raise _Interrupted(f"{type(e).__name__}: {e}") from e
                if not chunk:
                    break
                f.write(chunk)
                bar.update(len(chunk))
            f.flush()
            os.fsync(f.fileno())
    size = os.path.getsize(part)
    if total is not None and size < total:
        raise _Interrupted(f"the connection closed after {size:,} of {total:,} bytes")
    if total is not None and size > total:
        os.remove(part)
        raise DownloadError(f"cannot download {url}: received {size:,} bytes but the server announced {total:,}")


def download(url: str, path: str, *, progress: bool = True, retries: int = 2, timeout: float = 60.0) -> str:
    """Download ``url`` to ``path`` (see the module docstring) and return ``path``; if ``path`` exists
    already, return it without a request. ``retries``: how often an interrupted transfer is resumed
    before giving up (the ``.part`` file then stays, and the next call resumes it)."""
    if os.path.isfile(path):
        return path
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    part = path + PART_SUFFIX
    for attempt in range(retries + 1):
        try:
            _receive(url, part, progress, timeout)
            break
        except _Interrupted as e:
            if attempt == retries:
                have = os.path.getsize(part) if os.path.isfile(part) else 0
                raise DownloadError(
                    f"cannot download {url}: interrupted ({e}); {have:,} bytes are kept in {part}: run the same "
                    "command again to resume"
                ) from e
    replace_synced(part, path)
    return path
