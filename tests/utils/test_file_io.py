"""atomic_write: all or nothing, and no temporary file left behind."""

from __future__ import annotations

import os

import pytest

from pix2seq_d2.utils.file_io import TMP_SUFFIX, atomic_write, atomic_write_bytes


def test_a_failed_write_leaves_the_previous_file_and_no_temporary_file(tmp_path):
    path = str(tmp_path / "data.bin")
    atomic_write_bytes(path, b"old")

    def half_then_crash(f):
        f.write(b"new, but only ha")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        atomic_write(path, half_then_crash)
    assert open(path, "rb").read() == b"old"
    assert os.listdir(tmp_path) == ["data.bin"]


def test_a_write_replaces_the_file_through_a_temporary_file_in_the_same_folder(tmp_path, monkeypatch):
    path = str(tmp_path / "data.bin")
    renames = []
    real_replace = os.replace
    monkeypatch.setattr(os, "replace", lambda src, dst: renames.append((src, dst)) or real_replace(src, dst))
    synced = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: synced.append(fd) or real_fsync(fd))
    atomic_write_bytes(path, b"new")
    assert open(path, "rb").read() == b"new"
    ((src, dst),) = renames
    assert dst == path and os.path.dirname(src) == str(tmp_path) and src.endswith(TMP_SUFFIX)
    assert len(synced) >= 1  # the data reach the disk before the rename
