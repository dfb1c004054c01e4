"""pix2seq_d2.model_zoo.download against a real HTTP server on 127.0.0.1 (tests/helpers/http_server.py):
whole files, the cache, resuming after an interrupted transfer, servers without ``Range``, error statuses,
HTML pages and the progress bar."""

from __future__ import annotations

import os
import socket

import numpy as np
import pytest

from pix2seq_d2.model_zoo import CACHE_ENV_VAR, DownloadError, cache_dir, download
from pix2seq_d2.model_zoo.download import PART_SUFFIX
from pix2seq_d2.utils.errors import UserError
from tests.helpers.http_server import FileServer

SIZE = 300_000


@pytest.fixture
def payload() -> bytes:
    return np.random.default_rng(0).integers(0, 256, SIZE, dtype=np.uint8).tobytes()


@pytest.fixture
def server(payload):
    with FileServer({"/files/blob.bin": payload}) as running:
        yield running


def test_whole_file_then_cache_hit_without_request(server, payload, tmp_path):
    path = str(tmp_path / "cache" / "blob.bin")
    assert download(server.url("/files/blob.bin"), path, progress=False) == path
    assert open(path, "rb").read() == payload
    assert not os.path.exists(path + PART_SUFFIX)
    assert server.requests == [("/files/blob.bin", None)]
    assert download(server.url("/files/blob.bin"), path, progress=False) == path
    assert len(server.requests) == 1  # the cached file: no second request


def test_interrupted_download_resumes_from_the_partial_file(server, payload, tmp_path):
    path = str(tmp_path / "blob.bin")
    server.cut["/files/blob.bin"] = 100_000
    with pytest.raises(DownloadError, match="interrupted") as err:
        download(server.url("/files/blob.bin"), path, progress=False, retries=0)
    assert server.url("/files/blob.bin") in str(err.value) and path + PART_SUFFIX in str(err.value)
    assert isinstance(err.value, UserError)
    assert not os.path.exists(path)  # nothing in place until the whole file is there
    assert os.path.getsize(path + PART_SUFFIX) == 100_000

    download(server.url("/files/blob.bin"), path, progress=False, retries=0)
    assert server.requests == [("/files/blob.bin", None), ("/files/blob.bin", "bytes=100000-")]
    assert open(path, "rb").read() == payload
    assert not os.path.exists(path + PART_SUFFIX)


def test_a_broken_connection_is_resumed_within_one_call(server, payload, tmp_path):
    path = str(tmp_path / "blob.bin")
    server.cut["/files/blob.bin"] = 123_457
    download(server.url("/files/blob.bin"), path, progress=False, retries=1)
    assert server.requests == [("/files/blob.bin", None), ("/files/blob.bin", "bytes=123457-")]
    assert open(path, "rb").read() == payload


def test_a_server_without_range_support_restarts_from_zero(server, payload, tmp_path):
    path = str(tmp_path / "blob.bin")
    with open(path + PART_SUFFIX, "wb") as f:
        f.write(b"\xff" * 5000)  # not even a prefix of the file: must not survive
    server.ranges = False
    download(server.url("/files/blob.bin"), path, progress=False)
    assert server.requests == [("/files/blob.bin", "bytes=5000-")]  # asked to resume, got the whole file
    assert open(path, "rb").read() == payload


def test_a_part_longer_than_the_file_starts_over(server, payload, tmp_path):
    path = str(tmp_path / "blob.bin")
    with open(path + PART_SUFFIX, "wb") as f:
        f.write(b"\x00" * (SIZE + 10))
    download(server.url("/files/blob.bin"), path, progress=False)
    assert server.requests == [("/files/blob.bin", f"bytes={SIZE + 10}-"), ("/files/blob.bin", None)]  # 416
    assert open(path, "rb").read() == payload


def test_http_errors_name_the_url_and_leave_nothing(server, tmp_path):
    path = str(tmp_path / "missing.bin")
    with pytest.raises(DownloadError, match="HTTP 404") as err:
        download(server.url("/files/missing.bin"), path, progress=False)
    assert err.value.status == 404 and server.url("/files/missing.bin") in str(err.value)
    server.status["/files/blob.bin"] = 403
    with pytest.raises(DownloadError, match="HTTP 403") as err:
        download(server.url("/files/blob.bin"), path, progress=False)
    assert err.value.status == 403
    assert os.listdir(tmp_path) == []


def test_an_html_page_is_not_saved_as_the_file(server, tmp_path):
    server.html["/files/blob.bin"] = True
    path = str(tmp_path / "blob.bin")
    with pytest.raises(DownloadError, match="HTML page") as err:
        download(server.url("/files/blob.bin"), path, progress=False)
    assert server.url("/files/blob.bin") in str(err.value)
    assert not os.path.exists(path) and not os.path.exists(path + PART_SUFFIX)


def test_an_unreachable_server_is_a_download_error(tmp_path):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{s.getsockname()[1]}/blob.bin"
    with pytest.raises(DownloadError, match="cannot download") as err:
        download(url, str(tmp_path / "blob.bin"), progress=False, timeout=5)
    assert url in str(err.value) and err.value.status is None


def test_progress_bar_on_stderr(server, tmp_path, capsys):
    download(server.url("/files/blob.bin"), str(tmp_path / "blob.bin"), progress=True)
    err = capsys.readouterr().err
    assert "blob.bin" in err and "293k" in err.lower()  # tqdm: name and size (300000 B = 293 KiB)


def test_cache_dir_from_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv(CACHE_ENV_VAR, str(tmp_path / "zoo"))
    assert cache_dir() == str(tmp_path / "zoo")
    monkeypatch.delenv(CACHE_ENV_VAR)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert cache_dir() == os.path.join(str(tmp_path), ".cache", "pix2seq_d2")
