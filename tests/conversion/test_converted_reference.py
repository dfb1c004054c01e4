"""Converted checkpoints stay bit-identical: every fixture converts to exactly the tensors (names, dtypes,
shapes, bytes) and the OUTPUT.yaml body that the converter wrote at commit 7b380e4, before the model zoo
changed where configs live (``converted_reference.json``: a sha256 over all tensors per fixture).

After an intended change of the conversion, rewrite the reference with
``python -m tests.conversion.test_converted_reference`` and say why in the commit.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os

import pytest
import torch

from pix2seq_d2.conversion import ConvertedCheckpoint, config_yaml, convert_checkpoint
from pix2seq_d2.model_zoo import configs_dir
from tests.helpers import REPO_ROOT

FIXTURES = os.path.join(REPO_ROOT, "tests", "fixtures", "pix2seq_official")
REFERENCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "converted_reference.json")
CASES = [("official", os.path.dirname(p)) for p in sorted(glob.glob(os.path.join(FIXTURES, "*", "ckpt-*.index")))]
CASES += [("pretrained_pix2seq", p) for p in sorted(glob.glob(os.path.join(FIXTURES, "*", "checkpoint.pth")))]


def case_name(path: str) -> str:
    return os.path.relpath(path, FIXTURES)


def tensor_digest(state_dict: dict[str, torch.Tensor]) -> str:
    """sha256 over every tensor's name, dtype, shape and bytes, in name order."""
    digest = hashlib.sha256()
    for name in sorted(state_dict):
        tensor = state_dict[name].contiguous()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.numpy().tobytes())
    return digest.hexdigest()


def config_body(converted: ConvertedCheckpoint) -> str:
    """OUTPUT.yaml after its ``_BASE_`` line (the header names local paths), with a fixed MODEL.WEIGHTS."""
    lines = config_yaml(converted, weights="W.pth").splitlines(keepends=True)
    start = next(i for i, line in enumerate(lines) if line.startswith("_BASE_:"))
    return "".join(lines[start + 1 :])


def summary(converted: ConvertedCheckpoint) -> dict:
    return {
        "tensors": len(converted.state_dict),
        "sha256": tensor_digest(converted.state_dict),
        "base_config": os.path.relpath(converted.base_config, configs_dir()).replace(os.sep, "/"),
        "config_body": config_body(converted),
    }


def test_every_fixture_has_a_reference():
    with open(REFERENCE) as f:
        assert sorted(json.load(f)) == sorted(case_name(path) for _, path in CASES)


@pytest.mark.parametrize("source, path", CASES, ids=[case_name(p) for _, p in CASES])
def test_conversion_is_bit_identical_to_the_reference(source, path):
    with open(REFERENCE) as f:
        reference = json.load(f)[case_name(path)]
    converted = convert_checkpoint(source, path)
    assert os.path.isfile(converted.base_config) and os.path.isabs(converted.base_config)
    assert summary(converted) == reference


def write_reference() -> None:
    """Rewrite converted_reference.json from the converter as it is now."""
    reference = {case_name(path): summary(convert_checkpoint(source, path)) for source, path in CASES}
    with open(REFERENCE, "w") as f:
        json.dump(reference, f, indent=1, sort_keys=True)
        f.write("\n")


if __name__ == "__main__":
    write_reference()
