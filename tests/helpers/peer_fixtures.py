"""The converter fixtures (``tests/fixtures/pix2seq_official/<case>/``): finding cases, building the
converted model of a case, and the relative error the issue's bars are stated in.

Every size comes from the files: another fixture set of the same layout works unchanged.
"""

from __future__ import annotations

import functools
import glob
import json
import os

import numpy as np
import torch
from detectron2.modeling import build_model

from pix2seq_d2.conversion import ConvertedCheckpoint, convert_checkpoint
from tests.helpers import REPO_ROOT

FIXTURES = os.path.join(REPO_ROOT, "tests", "fixtures", "pix2seq_official")
REL_TOL = 1e-4  # max abs error / max abs value of the reference tensor


def cases(kind: str) -> list[str]:
    """Case folders whose ``settings.json`` has ``settings.kind == kind`` ("model", "e2e", "nucleus", "pretrained")."""
    found = []
    for path in sorted(glob.glob(os.path.join(FIXTURES, "*", "settings.json"))):
        with open(path) as f:
            if json.load(f)["settings"]["kind"] == kind:
                found.append(os.path.dirname(path))
    return found


def case_id(path: str) -> str:
    return os.path.basename(path)


def load_io(case: str) -> dict[str, np.ndarray]:
    with np.load(os.path.join(case, "io.npz")) as data:
        return {k: data[k] for k in data.files}


def rel_error(ours: torch.Tensor | np.ndarray, reference: np.ndarray) -> float:
    ours = torch.as_tensor(ours).detach().double()
    reference = torch.as_tensor(reference).double()
    assert ours.shape == reference.shape, f"shape {tuple(ours.shape)} vs reference {tuple(reference.shape)}"
    return float((ours - reference).abs().max() / reference.abs().max().clamp(min=1e-12))


def nhwc(array: np.ndarray) -> torch.Tensor:
    """NHWC numpy -> NCHW float tensor."""
    return torch.from_numpy(np.ascontiguousarray(array)).permute(0, 3, 1, 2).float()


@functools.cache
def converted_model(case: str) -> tuple[torch.nn.Module, ConvertedCheckpoint]:
    """The case's checkpoint converted and loaded into the model its config builds (eval, CPU, float32)."""
    source = "pretrained_pix2seq" if os.path.exists(os.path.join(case, "checkpoint.pth")) else "official"
    path = os.path.join(case, "checkpoint.pth") if source == "pretrained_pix2seq" else case
    converted = convert_checkpoint(source, path)
    cfg = converted.config()
    cfg.MODEL.DEVICE = "cpu"
    model = build_model(cfg).eval()
    missing, unexpected = model.load_state_dict(converted.state_dict, strict=True)
    assert not missing and not unexpected
    return model, converted
