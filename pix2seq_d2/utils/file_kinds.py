"""What a file is, from its first bytes: the error messages that name a wrong file (an image that is an
HTML page, a checkpoint that is a git-lfs pointer, ...) say what it looks like instead."""

from __future__ import annotations

import re

__all__ = ["IMAGE_SIGNATURES", "describe_file_start"]


_TEXT_CONTROL = set("\n\r\t\f\v")


def _looks_like_text(head: bytes) -> bool:
    """Whether ``head`` (a file's first bytes) is text: UTF-8 without NUL bytes, nearly all printable."""
    if not head or b"\x00" in head:
        return False
    for cut in range(4):  # the first bytes may end inside a multi-byte character
        try:
            text = head[: len(head) - cut].decode("utf-8")
            break
        except UnicodeDecodeError:
            continue
    else:
        return False
    text = text.lstrip("\ufeff")
    printable = sum(ch.isprintable() or ch in _TEXT_CONTROL for ch in text)
    return printable >= 0.95 * max(1, len(text))


def _text_start(head: bytes, limit: int = 60) -> str:
    """The first non-blank line of ``head`` (decoded leniently), shortened to ``limit`` characters."""
    text = head.decode("utf-8", errors="replace").lstrip("\ufeff \t\r\n")
    line = text.splitlines()[0] if text else ""
    return line if len(line) <= limit else line[: limit - 3] + "..."


_ARCHIVES = {
    b"\x1f\x8b": "gzip",
    b"BZh": "bzip2",
    b"\xfd7zXZ\x00": "xz",
    b"7z\xbc\xaf\x27\x1c": "7-Zip",
    b"Rar!\x1a\x07": "RAR",
}
IMAGE_SIGNATURES = {
    b"\xff\xd8\xff": "a JPEG image",
    b"\x89PNG\r\n\x1a\n": "a PNG image",
    b"GIF87a": "a GIF image",
    b"GIF89a": "a GIF image",
    b"II*\x00": "a TIFF image",
    b"MM\x00*": "a TIFF image",
    b"BM": "a BMP image",
}


def describe_file_start(head: bytes, size: int | None = None) -> tuple[str, str] | None:
    """What a file that is not what was expected looks like, from its first bytes (``head``, at
    least 512 bytes where the file has them) and its ``size``: ``(kind, description)`` or None.

    Shared by the image reader and the checkpoint checks, to say *what* a wrong file is: empty,
    a git-lfs pointer, an HTML/XML page (a failed download), JSON/YAML/other text, an archive,
    an image, a video, a PDF, a safetensors/HDF5/NumPy/ONNX file. Kinds: ``empty``, ``git-lfs``,
    ``html``, ``xml``, ``json``, ``yaml``, ``text``, ``archive``, ``zip``, ``image``, ``video``,
    ``document``, ``safetensors``, ``hdf5``, ``numpy``, ``onnx``, ``pickle``. None: not one of
    these (binary of another kind).
    """
    if size == 0 or not head:
        return "empty", "an empty file (0 bytes)"
    if head.startswith(b"version https://git-lfs"):
        return "git-lfs", (
            f"a git-lfs pointer ({size if size is not None else len(head)} bytes of text standing in for the real "
            "file, which was never downloaded): run `git lfs pull` in its repository, or download the file itself"
        )
    stripped = head.lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    if stripped.startswith((b"<!doctype html", b"<html", b"<head", b"<!--")) or (
        stripped.startswith(b"<") and b"<html" in stripped[:1024]
    ):
        return "html", (
            "an HTML page, not the file itself: a failed download (an error, login or redirect page saved "
            f"under this name?); it starts with {_text_start(head)!r}"
        )
    if stripped.startswith(b"<svg") or (stripped.startswith(b"<?xml") and b"<svg" in stripped[:1024]):
        return "image", "an SVG (vector) image"
    if stripped.startswith(b"<?xml"):
        return "xml", (
            "an XML document, not the file itself: a failed download (a storage server's error response, such as "
            f"'AccessDenied' or 'NoSuchKey'?); it starts with {_text_start(head)!r}"
        )
    if head.startswith((b"PK\x03\x04", b"PK\x05\x06")):
        return "zip", "a zip archive"
    for magic, name in _ARCHIVES.items():
        if head.startswith(magic):
            return "archive", f"a {name}-compressed archive: extract it first"
    if len(head) > 262 and head[257:262] == b"ustar":
        return "archive", "a tar archive: extract it first"
    for magic, name in IMAGE_SIGNATURES.items():
        if head.startswith(magic):
            return "image", name
    if head.startswith(b"RIFF") and head[8:12] == b"WEBP":
        return "image", "a WebP image"
    if head[4:8] == b"ftyp":
        brand = head[8:12]
        if brand in (b"heic", b"heix", b"hevc", b"heim", b"heis", b"mif1", b"msf1", b"avif", b"avis"):
            return "image", f"a HEIF/AVIF image ({brand.decode('ascii', 'replace')})"
        return "video", f"an MP4/QuickTime video ({brand.decode('ascii', 'replace').strip()})"
    if head.startswith(b"RIFF") and head[8:12] == b"AVI ":
        return "video", "an AVI video"
    if head.startswith(b"\x1a\x45\xdf\xa3"):
        return "video", "a Matroska/WebM video"
    if head.startswith(b"%PDF"):
        return "document", "a PDF document"
    if head.startswith((b"\xff\xfe", b"\xfe\xff")):
        return "text", "UTF-16 text, not binary data"
    if head.startswith(b"\x89HDF\r\n\x1a\n"):
        return "hdf5", "an HDF5 file (Keras/TensorFlow .h5 weights?)"
    if head.startswith(b"\x93NUMPY"):
        return "numpy", "a NumPy .npy array"
    if len(head) >= 9 and head[8:9] == b"{":
        header = int.from_bytes(head[:8], "little")
        if 2 <= header and (size is None or header <= size - 8) and head[8:].lstrip(b"{ ").startswith(b'"'):
            return "safetensors", "a safetensors file (Hugging Face's tensor format)"
    if head[:1] == b"\x80" and len(head) > 1 and 2 <= head[1] <= 5:
        return "pickle", "a Python pickle"
    if _looks_like_text(head[:4096]):
        start = _text_start(head)
        if stripped.startswith((b"{", b"[")):
            return "json", f"JSON text, not binary data (it starts with {start!r})"
        if re.search(rb"^(_BASE_|MODEL|SOLVER|INPUT|DATASETS)\s*:", head, re.MULTILINE):
            return "yaml", f"a YAML config file (it starts with {start!r})"
        return "text", f"text, not binary data (it starts with {start!r})"
    if len(head) > 3 and head[0] == 0x08 and 1 <= head[1] <= 20 and head[2] in (0x12, 0x1A, 0x22, 0x3A, 0x42):
        return "onnx", "an ONNX model (a protobuf, as exported for inference runtimes)"
    return None
