"""Read TensorFlow 2 checkpoints (``tf.train.Checkpoint``, "tensor bundle" V2) with numpy only, no TensorFlow.

This is the first half of converting the official Pix2Seq weights (google-research/pix2seq): it lists the
variables of a checkpoint and returns each one as a numpy array, e.g.::

    ckpt = TFCheckpoint("path/to/ckpt_folder")       # or "path/to/ckpt_folder/ckpt-1" or ".../ckpt-1.index"
    kernel = ckpt["model/encoder/stem_conv/kernel/.ATTRIBUTES/VARIABLE_VALUE"]

A checkpoint is

* ``checkpoint``: a text file whose ``model_checkpoint_path: "ckpt-N"`` line names the newest prefix;
* ``<prefix>.index``: a LevelDB-format table (SSTable) from tensor names to ``BundleEntryProto`` messages
  (dtype, shape, data shard, offset, size, masked crc32c); the empty key holds the ``BundleHeaderProto``
  (number of shards, byte order);
* ``<prefix>.data-SSSSS-of-NNNNN``: the raw tensor bytes, one file per shard.

Everything is decoded here: a minimal protobuf wire-format decoder, an SSTable block parser (uncompressed
blocks only, each block's crc32c checked) and crc32c itself. Opening parses the (small) index only; a tensor's
bytes are memory-mapped from its data shard when it is read, and returned as a read-only numpy view
(bfloat16 tensors are upcast to a new float32 array). Not supported, with an error when such a tensor is read:
string tensors (e.g. ``_CHECKPOINTABLE_OBJECT_GRAPH``, which is still listed by ``keys()``), sliced
(partitioned) variables and dtypes numpy has no equivalent for. Every error is a :class:`TFCheckpointError`
naming the file, and the variable where one is involved.
"""

from __future__ import annotations

import glob
import math
import mmap
import os
import re
from collections.abc import Iterator
from typing import NamedTuple

import numpy as np

from pix2seq_d2.utils.errors import UserError

__all__ = ["TFCheckpoint", "TFCheckpointError", "TensorEntry", "crc32c"]


class TFCheckpointError(UserError, ValueError):
    """A TensorFlow checkpoint that cannot be read; the message names the file (and the variable, if any)."""


# ----------------------------------------------------------------------------------------------- crc32c
_POLY = 0x82F63B78  # Castagnoli polynomial, bit-reflected


def _make_table() -> list[int]:
    table = []
    for n in range(256):
        for _ in range(8):
            n = (n >> 1) ^ _POLY if n & 1 else n >> 1
        table.append(n)
    return table


_TABLE = _make_table()
_TABLE_NP = np.array(_TABLE, dtype=np.uint32)
_PARALLEL_MIN_BYTES = 16384


def _gf2_mulmod(a: int, b):
    """``a * b`` modulo the CRC polynomial, bit-reflected (bit 31 holds x^0); ``b`` an int or a uint32 array."""
    product = b ^ b
    for bit in range(31, -1, -1):
        if a >> bit & 1:
            product ^= b
        b = (b >> 1) ^ (_POLY * (b & 1))  # b * x
    return product


def crc32c(data: bytes | memoryview | np.ndarray) -> int:
    """CRC-32C (Castagnoli) of a bytes-like object, as LevelDB and TensorFlow compute it (before masking).

    Table-driven, byte by byte in Python for short inputs. Long ones are cut into about sqrt(n) rows that numpy
    runs side by side; the row CRCs are then merged pairwise with ``crc(A + B) = crc(A) * x^(8 len(B)) + crc(B)``
    (arithmetic modulo the polynomial).
    """
    buf = np.frombuffer(data, dtype=np.uint8)
    rows, width = 1, 0  # short input: all of it is the head, run in Python
    if buf.size >= _PARALLEL_MIN_BYTES:
        rows = 1 << (buf.size.bit_length() // 2)  # a power of two, so that the pairwise merge comes out even
        width = buf.size // rows
    head = buf.size - rows * width
    crc = 0xFFFFFFFF
    for byte in buf[:head].tobytes():
        crc = _TABLE[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    block = buf[head:].reshape(rows, width)
    crcs = np.full(rows, 0xFFFFFFFF, dtype=np.uint32)
    crcs[0] = crc  # the first row continues after the head
    shift = 0x80000000  # x^0, multiplied by x^8 per column: x^(8 width) at the end
    for j in range(width):
        crcs = _TABLE_NP[(crcs ^ block[:, j]) & 0xFF] ^ (crcs >> 8)
        shift = _TABLE[shift & 0xFF] ^ (shift >> 8)
    crcs ^= 0xFFFFFFFF
    while crcs.size > 1:
        crcs = _gf2_mulmod(shift, crcs[0::2]) ^ crcs[1::2]
        shift = _gf2_mulmod(shift, shift)  # the right-hand rows double in length
    return int(crcs[0])


def _mask(crc: int) -> int:
    """LevelDB's masked CRC, as stored in block trailers and ``BundleEntryProto.crc32c``."""
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


# -------------------------------------------------------------------------------------- protobuf wire format
def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    """Decode the varint at ``buf[pos]``; return (value, position after it)."""
    value = shift = 0
    while True:
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7
        if shift > 63:
            raise ValueError("varint longer than 10 bytes")


def _int64(value: int) -> int:
    return value - (1 << 64) if value >= 1 << 63 else value


def _proto_fields(buf: bytes) -> dict[int, list]:
    """Decode one protobuf message into ``{field number: [values]}`` (ints, or bytes for length-delimited)."""
    fields: dict[int, list] = {}
    pos = 0
    while pos < len(buf):
        key, pos = _varint(buf, pos)
        wire = key & 7
        if wire == 0:
            value, pos = _varint(buf, pos)
        elif wire == 1:
            value, pos = int.from_bytes(buf[pos : pos + 8], "little"), pos + 8
        elif wire == 2:
            length, pos = _varint(buf, pos)
            value, pos = buf[pos : pos + length], pos + length
        elif wire == 5:
            value, pos = int.from_bytes(buf[pos : pos + 4], "little"), pos + 4
        else:
            raise ValueError(f"unsupported protobuf wire type {wire}")
        fields.setdefault(key >> 3, []).append(value)
    if pos != len(buf):
        raise ValueError("truncated protobuf message")
    return fields


# ------------------------------------------------------------------------------------------ SSTable (index)
_MAGIC = 0xDB4775248B80FB57
_FOOTER_SIZE = 48


def _read_block(table: bytes, offset: int, size: int, path: str) -> bytes:
    """Contents of the block at ``offset``, after checking its trailer (compression type, then masked crc32c)."""
    end = offset + size + 5
    if end > len(table) - _FOOTER_SIZE:
        raise TFCheckpointError(f"{path}: the block at offset {offset} runs past the end of the index (corrupt index)")
    kind = table[offset + size]
    if kind != 0:
        raise TFCheckpointError(
            f"{path}: compressed blocks are not supported (Snappy); the block at offset {offset} has "
            f"compression type {kind}"
        )
    if _mask(crc32c(table[offset : offset + size + 1])) != int.from_bytes(table[offset + size + 1 : end], "little"):
        raise TFCheckpointError(f"{path}: crc32c mismatch in the block at offset {offset} (corrupt index file)")
    return table[offset : offset + size]


def _block_entries(block: bytes) -> Iterator[tuple[bytes, bytes]]:
    """The (key, value) pairs of a block: prefix-compressed entries followed by the restart-point array."""
    end = len(block) - 4 - 4 * int.from_bytes(block[-4:], "little")
    key, pos = b"", 0
    while pos < end:
        shared, pos = _varint(block, pos)
        unshared, pos = _varint(block, pos)
        length, pos = _varint(block, pos)
        key = key[:shared] + block[pos : pos + unshared]
        pos += unshared
        yield key, block[pos : pos + length]
        pos += length


def _table_entries(path: str) -> Iterator[tuple[bytes, bytes]]:
    """Every (key, value) pair of the LevelDB-format table at ``path``, in key order."""
    with open(path, "rb") as f:
        table = f.read()
    if len(table) < _FOOTER_SIZE:
        raise TFCheckpointError(f"{path}: {len(table)} bytes is too short for a checkpoint index")
    magic = int.from_bytes(table[-8:], "little")
    if magic != _MAGIC:
        raise TFCheckpointError(f"{path}: bad magic number {magic:#018x} (expected {_MAGIC:#018x}): not a TF index")
    footer = table[-_FOOTER_SIZE:]
    _, pos = _varint(footer, _varint(footer, 0)[1])  # skip the metaindex handle (TF writes no meta blocks)
    index_offset, pos = _varint(footer, pos)
    index_size, _ = _varint(footer, pos)
    for _, handle in _block_entries(_read_block(table, index_offset, index_size, path)):
        offset, pos = _varint(handle, 0)
        yield from _block_entries(_read_block(table, offset, _varint(handle, pos)[0], path))


# --------------------------------------------------------------------------------------------- checkpoint
_DTYPES = {  # TF DataType enum -> (TF dtype name, numpy dtype of the stored bytes or None)
    1: ("float32", "f4"),
    2: ("float64", "f8"),
    3: ("int32", "i4"),
    4: ("uint8", "u1"),
    5: ("int16", "i2"),
    6: ("int8", "i1"),
    7: ("string", None),
    8: ("complex64", "c8"),
    9: ("int64", "i8"),
    10: ("bool", "?"),
    14: ("bfloat16", "u2"),  # upcast to float32 when read
    17: ("uint16", "u2"),
    18: ("complex128", "c16"),
    19: ("float16", "f2"),
    22: ("uint32", "u4"),
    23: ("uint64", "u8"),
}
_DT_STRING, _DT_BFLOAT16 = 7, 14


class TensorEntry(NamedTuple):
    """One ``BundleEntryProto`` of the index: what a tensor is and where its bytes are."""

    dtype_enum: int  # TF DataType enum value
    shape: tuple[int, ...]
    shard_id: int
    offset: int
    size: int  # bytes
    crc32c: int  # masked, as stored
    sliced: bool  # a partitioned variable (its slices are stored under other keys)
    unknown_rank: bool


def _parse_entry(value: bytes) -> TensorEntry:
    """Decode a ``BundleEntryProto``."""
    fields = _proto_fields(value)

    def last(number: int, default: int | bytes = 0):
        return fields.get(number, [default])[-1]

    shape = _proto_fields(last(2, b""))  # TensorShapeProto: repeated dim {size}, unknown_rank
    return TensorEntry(
        dtype_enum=last(1),
        shape=tuple(_int64(_proto_fields(dim).get(1, [0])[-1]) for dim in shape.get(2, [])),
        shard_id=last(3),
        offset=_int64(last(4)),
        size=_int64(last(5)),
        crc32c=last(6),
        sliced=7 in fields,
        unknown_rank=bool(shape.get(3, [0])[-1]),
    )


def _resolve_prefix(path: str) -> str:
    """The checkpoint prefix (``folder/ckpt-N``) meant by a folder, a prefix or an ``.index`` path."""
    if path.endswith(".index"):
        return path[: -len(".index")]
    if not os.path.isdir(path):
        return path
    state = os.path.join(path, "checkpoint")
    if os.path.isfile(state):
        with open(state, encoding="utf-8") as f:
            match = re.search(r'^model_checkpoint_path:\s*"(.*)"\s*$', f.read(), re.MULTILINE)
        if match is None:
            raise TFCheckpointError(f"{state}: no model_checkpoint_path line")
        prefix = os.path.join(path, match.group(1))  # an absolute recorded path replaces the folder
        if not os.path.isfile(prefix + ".index"):  # a folder moved since saving: look next to this file
            prefix = os.path.join(path, os.path.basename(match.group(1)))
        return prefix
    indexes = glob.glob(os.path.join(glob.escape(path), "*.index"))
    if len(indexes) != 1:
        raise TFCheckpointError(
            f"{path}: not a TF checkpoint folder: no 'checkpoint' file and {len(indexes)} *.index files "
            "(need exactly one)"
        )
    return indexes[0][: -len(".index")]


class TFCheckpoint:
    """A TensorFlow 2 checkpoint opened for reading: tensor names, dtypes, shapes and values.

    ``path`` is a checkpoint folder (its ``checkpoint`` file names the newest prefix; without one, the folder
    must hold exactly one ``*.index``), a prefix such as ``folder/ckpt-1``, or the ``.index`` file itself.
    The index is parsed on opening; data shards are memory-mapped on first use (a missing shard is an
    error when a tensor stored in it is read).
    """

    def __init__(self, path: str | os.PathLike) -> None:
        path = os.fspath(path)
        if not os.path.exists(path) and not os.path.isfile(path + ".index"):
            raise TFCheckpointError(f"{path}: no such checkpoint folder, prefix or index file")
        self.prefix: str = _resolve_prefix(path)
        self.index_path: str = self.prefix + ".index"
        if not os.path.isfile(self.index_path):
            raise TFCheckpointError(f"{self.index_path}: index file not found (checkpoint {path})")
        try:
            raw = dict(_table_entries(self.index_path))
            if b"" not in raw:
                raise ValueError("no BundleHeaderProto entry (empty key)")
            header = _proto_fields(raw.pop(b""))
            # Slices of partitioned variables are stored under binary keys starting with a NUL byte; like
            # TensorFlow's own reader, list only the full variables.
            self._entries = {
                key.decode("utf-8", "surrogateescape"): _parse_entry(value)
                for key, value in raw.items()
                if not key.startswith(b"\x00")
            }
        except TFCheckpointError:
            raise
        except (IndexError, ValueError) as exc:
            raise TFCheckpointError(f"{self.index_path}: corrupt index ({exc})") from exc
        num_shards = header.get(1, [0])[-1]
        self._byteorder = ">" if header.get(2, [0])[-1] == 1 else "<"
        self.data_paths: list[str] = [f"{self.prefix}.data-{i:05d}-of-{num_shards:05d}" for i in range(num_shards)]
        self._keys = sorted(self._entries)
        self._shards: dict[int, mmap.mmap | bytes] = {}

    def __repr__(self) -> str:
        return f"TFCheckpoint({self.prefix!r}, {len(self)} tensors)"

    def keys(self) -> list[str]:
        """Every tensor name, sorted (string tensors such as ``_CHECKPOINTABLE_OBJECT_GRAPH`` included)."""
        return list(self._keys)

    def __len__(self) -> int:
        return len(self._keys)

    def __iter__(self) -> Iterator[str]:
        return iter(self._keys)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def entry(self, name: str) -> TensorEntry:
        """The index entry of ``name`` (dtype enum, shape, shard, offset, size, masked crc32c, ...)."""
        if name not in self._entries:
            raise KeyError(f"{name!r} is not in {self.index_path}")
        return self._entries[name]

    def shape(self, name: str) -> tuple[int, ...]:
        """The shape of tensor ``name`` (``()`` for a scalar)."""
        return self.entry(name).shape

    def dtype_name(self, name: str) -> str:
        """TensorFlow's name of the dtype of ``name`` ("float32", "bfloat16", "string", ...)."""
        dtype_enum = self.entry(name).dtype_enum
        return _DTYPES[dtype_enum][0] if dtype_enum in _DTYPES else f"DataType({dtype_enum})"

    def dtype(self, name: str) -> np.dtype:
        """The numpy dtype :meth:`read` returns for ``name``: float32 for bfloat16, ``object`` for string
        tensors (which :meth:`read` refuses); a dtype numpy has no equivalent for is a TFCheckpointError."""
        dtype_enum = self.entry(name).dtype_enum
        if dtype_enum == _DT_STRING:
            return np.dtype(object)
        if dtype_enum == _DT_BFLOAT16:
            return np.dtype(np.float32)
        if dtype_enum not in _DTYPES:
            raise TFCheckpointError(f"{self.index_path}: variable {name!r} has unsupported dtype enum {dtype_enum}")
        return np.dtype(_DTYPES[dtype_enum][1])

    def read(self, name: str, verify: bool = False) -> np.ndarray:
        """Tensor ``name`` as a numpy array of its shape: a read-only view of the memory-mapped data shard
        (native byte order; bfloat16 comes back as a new float32 array). ``verify`` checks its crc32c first."""
        entry = self.entry(name)
        where = f"{self.index_path}: variable {name!r}"
        if entry.sliced:
            raise TFCheckpointError(f"{where} is sliced (partitioned); sliced variables are not supported")
        if entry.dtype_enum == _DT_STRING:
            raise TFCheckpointError(f"{where} is a string tensor; only numeric tensors can be read")
        if entry.unknown_rank:
            raise TFCheckpointError(f"{where} has an unknown rank")
        self.dtype(name)  # raises for unsupported dtypes
        stored = np.dtype(_DTYPES[entry.dtype_enum][1]).newbyteorder(self._byteorder)
        count = math.prod(entry.shape)
        if count * stored.itemsize != entry.size:
            raise TFCheckpointError(
                f"{where}: shape {list(entry.shape)} of {self.dtype_name(name)} needs {count * stored.itemsize} "
                f"bytes but the entry says {entry.size}"
            )
        if not 0 <= entry.shard_id < len(self.data_paths):
            raise TFCheckpointError(f"{where} is in shard {entry.shard_id} of {len(self.data_paths)}")
        data_path = self.data_paths[entry.shard_id]
        buf = self._shard(entry.shard_id, name)
        start, end = entry.offset, entry.offset + entry.size
        if start < 0 or end > len(buf):
            raise TFCheckpointError(
                f"{data_path}: truncated data file: variable {name!r} is stored at bytes [{start}, {end}) "
                f"but the file has {len(buf)} bytes"
            )
        if verify and _mask(crc32c(memoryview(buf)[start:end])) != entry.crc32c:
            raise TFCheckpointError(f"{data_path}: crc32c mismatch for variable {name!r} (corrupt data file)")
        array = np.frombuffer(buf, dtype=stored, count=count, offset=start).reshape(entry.shape)
        if entry.dtype_enum == _DT_BFLOAT16:
            return (array.astype(np.uint32) << 16).view(np.float32)
        return array if stored.isnative else array.astype(stored.newbyteorder("="))

    def __getitem__(self, name: str) -> np.ndarray:
        return self.read(name)

    def items(self) -> Iterator[tuple[str, np.ndarray]]:
        """``(name, array)`` for every tensor in key order, except string tensors (they have no numpy form)."""
        for name in self._keys:
            if self._entries[name].dtype_enum != _DT_STRING:
                yield name, self.read(name)

    def _shard(self, shard_id: int, name: str) -> mmap.mmap | bytes:
        if shard_id not in self._shards:
            path = self.data_paths[shard_id]
            if not os.path.isfile(path):
                raise TFCheckpointError(f"{path}: data shard not found (needed for variable {name!r})")
            with open(path, "rb") as f:
                size = os.fstat(f.fileno()).st_size
                self._shards[shard_id] = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) if size else b""
        return self._shards[shard_id]
