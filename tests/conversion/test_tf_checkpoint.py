"""TFCheckpoint: the TensorFlow 2 checkpoint reader, on the official Pix2Seq fixture checkpoints (written by
TensorFlow 2.15), on broken copies of them, and on tiny synthetic checkpoints written by
tests/tf_checkpoint_writer.py."""

from __future__ import annotations

import glob
import json
import os
import re

import numpy as np
import pytest

from pix2seq_d2.conversion.tf_checkpoint import TFCheckpoint, TFCheckpointError, crc32c
from tests.helpers import REPO_ROOT
from tests.helpers.tf_checkpoint_writer import proto_field, write_tf_checkpoint

FIXTURES = os.path.join(REPO_ROOT, "tests", "fixtures", "pix2seq_official")
INDEXES = sorted(glob.glob(os.path.join(FIXTURES, "*", "ckpt-*.index")))
CASES = [os.path.dirname(path) for path in INDEXES]
CASE_IDS = [os.path.basename(case) for case in CASES]
STRING_KEY = "_CHECKPOINTABLE_OBJECT_GRAPH"


def _listed_keys(case: str) -> list[tuple[str, str, list[int]]]:
    """``checkpoint_keys.txt``: (key, TF dtype name, shape) as tf.train.load_checkpoint reported them."""
    with open(os.path.join(case, "checkpoint_keys.txt"), encoding="utf-8") as f:
        lines = f.read().splitlines()[1:]  # the first line is a comment
    return [(key, dtype, json.loads(shape)) for key, dtype, shape in (line.split("\t") for line in lines)]


def _copy_case(case: str, folder) -> TFCheckpoint:
    """Writable copy of a case's checkpoint files (the fixtures are read-only) in ``folder``."""
    original = TFCheckpoint(case)
    for path in [os.path.join(case, "checkpoint"), original.index_path, *original.data_paths]:
        (folder / os.path.basename(path)).write_bytes(open(path, "rb").read())
    return TFCheckpoint(folder)


def _read_varint(buf: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while buf[pos] & 0x80:
        value |= (buf[pos] & 0x7F) << shift
        pos, shift = pos + 1, shift + 7
    return value | buf[pos] << shift, pos + 1


def _first_data_block(index: bytes) -> tuple[int, int]:
    """(offset, size) of the first data block: footer -> index block handle -> its first entry's handle."""
    pos = 0
    handles = []
    for _ in range(4):  # metaindex offset, size; index offset, size
        value, pos = _read_varint(index[-48:], pos)
        handles.append(value)
    pos = handles[2]
    _, pos = _read_varint(index, pos)  # shared key bytes (0 in a block's first entry)
    key_length, pos = _read_varint(index, pos)
    _, pos = _read_varint(index, pos)  # value length
    offset, pos = _read_varint(index, pos + key_length)  # the value, after the key, is the block handle
    return offset, _read_varint(index, pos)[0]


# ------------------------------------------------------------------------------------------------ tests
def test_fixtures_found():
    assert CASES, f"no */ckpt-*.index under {FIXTURES}"


def test_crc32c_matches_bitwise_reference():
    def bitwise(data: bytes) -> int:
        crc = 0xFFFFFFFF
        for byte in data:
            crc ^= byte
            for _ in range(8):
                crc = (crc >> 1) ^ (0x82F63B78 if crc & 1 else 0)
        return crc ^ 0xFFFFFFFF

    assert crc32c(b"123456789") == 0xE3069283  # the CRC-32C check value
    assert crc32c(b"") == 0
    rng = np.random.default_rng(0)
    for n in [1, 7, 16383, 16384, 16385, 40001]:  # both sides of the switch to the row-parallel path
        data = rng.integers(0, 256, n, dtype=np.uint8).tobytes()
        assert crc32c(data) == bitwise(data), n


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_keys_dtypes_shapes_match_tensorflow(case):
    ckpt = TFCheckpoint(case)
    listed = _listed_keys(case)
    assert [(key, ckpt.dtype_name(key), list(ckpt.shape(key))) for key in ckpt.keys()] == listed
    assert len(ckpt) == len(listed) and list(ckpt) == ckpt.keys()
    assert all(key in ckpt for key, _, _ in listed) and "no/such/key" not in ckpt


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_every_numeric_tensor_reads(case):
    ckpt = TFCheckpoint(case)
    arrays = dict(ckpt.items())
    assert sorted(arrays) == [key for key, dtype, _ in _listed_keys(case) if dtype != "string"]
    for name, array in arrays.items():
        assert array.shape == ckpt.shape(name) and array.dtype == ckpt.dtype(name), name
        assert np.isfinite(array).all(), name
        assert not array.flags.writeable, name  # a view of the read-only memory map
    step = arrays["global_step/.ATTRIBUTES/VARIABLE_VALUE"]
    assert step.dtype == np.int64 and step.shape == ()
    variances = [a for n, a in arrays.items() if re.search(r"^model/(?!.*OPTIMIZER_SLOT).*/moving_variance/", n)]
    assert all((a > 0).all() for a in variances)
    embedding = arrays["model/decoder/ar_decoder.Stoken_embedding/.ATTRIBUTES/VARIABLE_VALUE"]
    positions = arrays["model/decoder/ar_decoder.Sseq_pos_embedding/.ATTRIBUTES/VARIABLE_VALUE"]
    assert embedding.shape == (3000, positions.shape[1])  # the official vocabulary, at the decoder width
    assert arrays["model/decoder/ar_decoder.Soutp_bias/.ATTRIBUTES/VARIABLE_VALUE"].shape == (3000,)
    assert np.std(embedding) > 0  # random weights, not a constant fill


@pytest.mark.parametrize("index", INDEXES, ids=CASE_IDS)
def test_folder_prefix_and_index_path_agree(index):
    by_folder = TFCheckpoint(os.path.dirname(index))
    by_prefix = TFCheckpoint(index[: -len(".index")])
    by_index = TFCheckpoint(index)
    assert by_folder.prefix == by_prefix.prefix == by_index.prefix
    assert by_folder.index_path == by_index.index_path == index
    assert by_folder.keys() == by_prefix.keys() == by_index.keys()
    for name, array in by_folder.items():
        np.testing.assert_array_equal(array, by_prefix[name])
        np.testing.assert_array_equal(array, by_index[name])


def test_data_crc_verification():
    ckpt = TFCheckpoint(CASES[0])
    for name in ckpt.keys():
        if ckpt.dtype_name(name) != "string":
            ckpt.read(name, verify=True)


def test_string_tensor_is_listed_but_not_read():
    ckpt = TFCheckpoint(CASES[0])
    assert STRING_KEY in ckpt and ckpt.dtype_name(STRING_KEY) == "string"
    assert ckpt.dtype(STRING_KEY) == np.dtype(object)
    with pytest.raises(TFCheckpointError, match="string tensor") as err:
        ckpt[STRING_KEY]
    assert ckpt.index_path in str(err.value) and STRING_KEY in str(err.value)
    with pytest.raises(KeyError, match="no/such/key"):
        ckpt["no/such/key"]


def test_missing_data_shard(tmp_path):
    ckpt = _copy_case(CASES[0], tmp_path)
    os.remove(ckpt.data_paths[0])
    ckpt = TFCheckpoint(tmp_path)  # the index alone still lists the tensors
    assert len(ckpt) == len(_listed_keys(CASES[0]))
    with pytest.raises(TFCheckpointError, match="data shard not found") as err:
        ckpt["global_step/.ATTRIBUTES/VARIABLE_VALUE"]
    assert ckpt.data_paths[0] in str(err.value)


def test_truncated_data_file(tmp_path):
    ckpt = _copy_case(CASES[0], tmp_path)
    data_path = ckpt.data_paths[0]
    cut = os.path.getsize(data_path) // 2
    with open(data_path, "r+b") as f:
        f.truncate(cut)
    ckpt = TFCheckpoint(tmp_path)
    past_cut = 0
    for name in ckpt.keys():
        entry = ckpt.entry(name)
        if entry.dtype_enum == 7:  # string
            continue
        if entry.offset + entry.size <= cut:
            ckpt[name]
            continue
        past_cut += 1
        with pytest.raises(TFCheckpointError, match="truncated data file") as err:
            ckpt[name]
        assert data_path in str(err.value) and name in str(err.value)
    assert 0 < past_cut < len(ckpt) - 1


def test_corrupted_data_byte_fails_verification_only(tmp_path):
    ckpt = _copy_case(CASES[0], tmp_path)
    name = "model/decoder/ar_decoder.Stoken_embedding/.ATTRIBUTES/VARIABLE_VALUE"
    entry = ckpt.entry(name)
    with open(ckpt.data_paths[0], "r+b") as f:
        f.seek(entry.offset + entry.size // 2)
        byte = f.read(1)
        f.seek(-1, os.SEEK_CUR)
        f.write(bytes([byte[0] ^ 0x01]))
    ckpt = TFCheckpoint(tmp_path)
    ckpt[name]  # not verified by default
    with pytest.raises(TFCheckpointError, match="crc32c mismatch") as err:
        ckpt.read(name, verify=True)
    assert ckpt.data_paths[0] in str(err.value) and name in str(err.value)


def _patch_index(tmp_path, position: int, xor: int) -> str:
    ckpt = _copy_case(CASES[0], tmp_path)
    index = bytearray(open(ckpt.index_path, "rb").read())
    index[position % len(index)] ^= xor
    open(ckpt.index_path, "wb").write(index)
    return ckpt.index_path


def test_corrupted_index_byte(tmp_path):
    offset, size = _first_data_block(open(INDEXES[0], "rb").read())
    index_path = _patch_index(tmp_path, offset + size // 2, 0x20)
    with pytest.raises(TFCheckpointError, match="crc32c mismatch") as err:
        TFCheckpoint(tmp_path)
    assert index_path in str(err.value)


def test_wrong_magic(tmp_path):
    index_path = _patch_index(tmp_path, -1, 0xFF)
    with pytest.raises(TFCheckpointError, match="bad magic number") as err:
        TFCheckpoint(tmp_path)
    assert index_path in str(err.value)


def test_compressed_block(tmp_path):
    offset, size = _first_data_block(open(INDEXES[0], "rb").read())
    index_path = _patch_index(tmp_path, offset + size, 0x01)  # compression type 0 -> 1 (Snappy), crc left alone
    with pytest.raises(TFCheckpointError, match=r"compressed blocks are not supported \(Snappy\)") as err:
        TFCheckpoint(tmp_path)
    assert index_path in str(err.value) and "crc" not in str(err.value)


def test_missing_paths(tmp_path):
    with pytest.raises(TFCheckpointError, match="not a TF checkpoint folder") as err:
        TFCheckpoint(tmp_path)  # no `checkpoint` file, no *.index
    assert str(tmp_path) in str(err.value)
    missing = str(tmp_path / "nowhere" / "ckpt-1")
    with pytest.raises(TFCheckpointError, match="no such checkpoint") as err:
        TFCheckpoint(missing)
    assert missing in str(err.value)
    (tmp_path / "checkpoint").write_text('model_checkpoint_path: "ckpt-7"\n')
    with pytest.raises(TFCheckpointError, match="index file not found") as err:
        TFCheckpoint(tmp_path)
    assert str(tmp_path / "ckpt-7.index") in str(err.value)


def test_synthetic_dtypes_slices_and_size_mismatch(tmp_path):
    rng = np.random.default_rng(0)
    floats = rng.normal(size=(2, 3)).astype(np.float32)
    bf16 = (floats.view(np.uint32) >> 16).astype(np.uint16)  # the top 16 bits are the bfloat16 value
    halves = floats.astype(np.float16)
    ints = np.arange(4, dtype=np.int64)
    slice_key = b"\x00\x01sliced\x00" + bytes([0x80])  # slices are stored under binary keys starting with NUL
    prefix = write_tf_checkpoint(
        tmp_path,
        [
            ("bf16", 14, (2, 3), bf16.tobytes(), b""),
            ("half", 19, (2, 3), halves.tobytes(), b""),
            ("ints", 9, (4,), ints.tobytes(), b""),
            ("sliced", 1, (2, 3), b"", proto_field(7, b"")),
            (slice_key, 1, (1, 3), floats[:1].tobytes(), b""),
            ("wrong_size", 1, (2, 3), floats.tobytes()[:20], b""),
        ],
    )
    ckpt = TFCheckpoint(tmp_path)  # no `checkpoint` file: the single *.index is used
    assert ckpt.prefix == prefix
    assert ckpt.keys() == ["bf16", "half", "ints", "sliced", "wrong_size"]
    assert ckpt.dtype_name("bf16") == "bfloat16" and ckpt.dtype("bf16") == np.float32
    np.testing.assert_array_equal(ckpt["bf16"], (bf16.astype(np.uint32) << 16).view(np.float32))
    np.testing.assert_allclose(ckpt["bf16"], floats, rtol=2**-7)
    assert ckpt["half"].dtype == np.float16 and (ckpt["half"] == halves).all()
    np.testing.assert_array_equal(ckpt.read("ints", verify=True), ints)
    with pytest.raises(TFCheckpointError, match="sliced") as err:
        ckpt["sliced"]
    assert ckpt.index_path in str(err.value) and "'sliced'" in str(err.value)
    with pytest.raises(TFCheckpointError, match="needs 24 bytes but the entry says 20") as err:
        ckpt["wrong_size"]
    assert ckpt.index_path in str(err.value) and "wrong_size" in str(err.value)


def test_synthetic_big_endian(tmp_path):
    values = np.arange(6, dtype=np.float32).reshape(2, 3) - 2.5
    write_tf_checkpoint(tmp_path, [("x", 1, (2, 3), values.astype(">f4").tobytes(), b"")], big_endian=True)
    array = TFCheckpoint(tmp_path / "ckpt-1")["x"]
    assert array.dtype == np.float32 and array.dtype.isnative
    np.testing.assert_array_equal(array, values)
