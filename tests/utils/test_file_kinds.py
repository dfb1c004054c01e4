"""describe_file_start: what a wrong file is, from its first bytes."""

from __future__ import annotations

import pytest

from pix2seq_d2.utils.file_kinds import describe_file_start


@pytest.mark.parametrize(
    "head, kind",
    [(b"", "empty"), (b"version https://git-lfs.github.com/spec/v1\noid sha256:ab\n", "git-lfs"),
     (b"<!DOCTYPE html><html><body>Sign in</body></html>", "html"), (b'<?xml version="1.0"?><Error/>', "xml"),
     (b"\x89PNG\r\n\x1a\n" + bytes(100), "image"), (b"PK\x03\x04" + bytes(100), "zip"),
     (b'{"images": []}', "json"), (b"MODEL:\n  WEIGHTS: x\n", "yaml"), (b"\x1f\x8b\x08" + bytes(100), "archive"),
     (b"\x80\x02}q\x00.", "pickle"), (b"%PDF-1.4", "document")],
)  # fmt: skip
def test_kinds(head, kind):
    described = describe_file_start(head, len(head))
    assert described is not None and described[0] == kind


def test_unknown_binary_is_none():
    assert describe_file_start(bytes(range(1, 200)) * 3, 597) is None
