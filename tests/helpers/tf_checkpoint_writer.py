"""A tiny TensorFlow 2 checkpoint writer for tests: real ``ckpt-1.index`` + ``ckpt-1.data-00000-of-00001`` files
in the tensor-bundle V2 format that :class:`pix2seq_d2.conversion.TFCheckpoint` (and TensorFlow) read.

* :func:`write_tf_checkpoint`: raw entries (name, TF dtype enum, shape, bytes, extra ``BundleEntryProto``
  fields), for synthetic cases the reader must handle or refuse (bfloat16, sliced variables, wrong sizes,
  big-endian bundles);
* :func:`write_tf_checkpoint_arrays`: numpy arrays by name, plus the ``checkpoint`` text file, so that the
  folder opens like one written by ``tf.train.Checkpoint`` (e.g. a fixture checkpoint with a tensor dropped,
  added or reshaped).

Index blocks are uncompressed, without prefix compression, two entries per data block (so that the index
block has several entries), each with its masked crc32c; every entry carries its data's masked crc32c.
String tensors (``_CHECKPOINTABLE_OBJECT_GRAPH``) are not written.
"""

from __future__ import annotations

import os

import numpy as np

from pix2seq_d2.conversion.tf_checkpoint import crc32c

__all__ = ["TF_DTYPE_ENUMS", "proto_field", "write_tf_checkpoint", "write_tf_checkpoint_arrays"]

# numpy dtype -> TF DataType enum (DT_FLOAT=1, DT_DOUBLE=2, DT_INT32=3, DT_INT64=9, DT_BOOL=10, DT_HALF=19, ...)
TF_DTYPE_ENUMS = {
    np.dtype(np.float32): 1,
    np.dtype(np.float64): 2,
    np.dtype(np.int32): 3,
    np.dtype(np.uint8): 4,
    np.dtype(np.int16): 5,
    np.dtype(np.int8): 6,
    np.dtype(np.complex64): 8,
    np.dtype(np.int64): 9,
    np.dtype(np.bool_): 10,
    np.dtype(np.uint16): 17,
    np.dtype(np.complex128): 18,
    np.dtype(np.float16): 19,
    np.dtype(np.uint32): 22,
    np.dtype(np.uint64): 23,
}
_MAGIC = 0xDB4775248B80FB57


def _varint(n: int) -> bytes:
    out = b""
    while n > 0x7F:
        out, n = out + bytes([n & 0x7F | 0x80]), n >> 7
    return out + bytes([n])


def proto_field(number: int, value: int | bytes) -> bytes:
    """One protobuf field: length-delimited for bytes, varint for ints."""
    if isinstance(value, bytes):
        return _varint(number << 3 | 2) + _varint(len(value)) + value
    return _varint(number << 3) + _varint(value)


def _masked_crc(data: bytes) -> int:
    crc = crc32c(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def _block(entries: list[tuple[bytes, bytes]]) -> bytes:
    """A table block (no prefix compression, one restart point) with its trailer."""
    body = b"".join(_varint(0) + _varint(len(k)) + _varint(len(v)) + k + v for k, v in entries)
    body += (0).to_bytes(4, "little") + (1).to_bytes(4, "little")
    return body + b"\0" + _masked_crc(body + b"\0").to_bytes(4, "little")


def write_tf_checkpoint(
    folder: str | os.PathLike,
    tensors: list[tuple[str | bytes, int, tuple, bytes, bytes]],
    big_endian: bool = False,
) -> str:
    """Write ``folder/ckpt-1.{index,data-00000-of-00001}`` (no ``checkpoint`` file) from (name, TF dtype enum,
    shape, raw bytes, extra BundleEntryProto fields); the table gets two entries per data block.
    Returns the prefix ``folder/ckpt-1``."""
    folder = os.fspath(folder)
    header = proto_field(1, 1) + proto_field(2, int(big_endian)) + proto_field(3, proto_field(1, 1))
    entries, data = [(b"", header)], b""
    for name, dtype_enum, shape, raw, extra in tensors:
        shape_proto = b"".join(proto_field(2, proto_field(1, dim)) for dim in shape)
        entry = (
            proto_field(1, dtype_enum)
            + proto_field(2, shape_proto)
            + proto_field(4, len(data))
            + proto_field(5, len(raw))
        )
        entry += _varint(6 << 3 | 5) + _masked_crc(raw).to_bytes(4, "little") + extra
        entries.append((name.encode() if isinstance(name, str) else name, entry))
        data += raw
    entries.sort()
    table, index = b"", []
    for i in range(0, len(entries), 2):
        block = _block(entries[i : i + 2])
        index.append((entries[i : i + 2][-1][0], _varint(len(table)) + _varint(len(block) - 5)))
        table += block
    meta, index_block = _block([]), _block(index)
    footer = _varint(len(table)) + _varint(len(meta) - 5)  # metaindex handle, then index handle
    footer += _varint(len(table) + len(meta)) + _varint(len(index_block) - 5)
    footer = footer.ljust(40, b"\0") + _MAGIC.to_bytes(8, "little")
    prefix = os.path.join(folder, "ckpt-1")
    with open(prefix + ".index", "wb") as f:
        f.write(table + meta + index_block + footer)
    with open(prefix + ".data-00000-of-00001", "wb") as f:
        f.write(data)
    return prefix


def write_tf_checkpoint_arrays(folder: str | os.PathLike, arrays: dict[str, np.ndarray]) -> str:
    """Write ``arrays`` (name -> numpy array of a dtype in :data:`TF_DTYPE_ENUMS`, stored little-endian) as
    ``folder/ckpt-1.*`` plus the ``checkpoint`` file naming it, like a ``tf.train.Checkpoint`` folder.
    Returns the prefix ``folder/ckpt-1``."""
    os.makedirs(folder, exist_ok=True)
    tensors = []
    for name, value in arrays.items():
        array = np.asarray(value)
        dtype = array.dtype.newbyteorder("=")
        if dtype not in TF_DTYPE_ENUMS:
            raise TypeError(f"{name!r}: no TensorFlow dtype for numpy {array.dtype} in this writer")
        raw = np.ascontiguousarray(array, dtype=dtype.newbyteorder("<")).tobytes()
        tensors.append((name, TF_DTYPE_ENUMS[dtype], tuple(array.shape), raw, b""))
    prefix = write_tf_checkpoint(folder, tensors)
    with open(os.path.join(os.fspath(folder), "checkpoint"), "w", encoding="utf-8") as f:
        f.write('model_checkpoint_path: "ckpt-1"\nall_model_checkpoint_paths: "ckpt-1"\n')
    return prefix
