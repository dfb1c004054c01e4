"""The autocast dtype of mixed-precision training (``SOLVER.AMP.PRECISION``)."""

from __future__ import annotations

import torch

__all__ = ["PRECISIONS", "amp_dtype"]

PRECISIONS = {"float16": torch.float16, "bfloat16": torch.bfloat16}


def amp_dtype(precision: str, device_type: str) -> torch.dtype:
    """``SOLVER.AMP.PRECISION`` ("auto", "float16", "bfloat16") -> the autocast dtype on ``device_type``."""
    if precision == "auto":
        return torch.float16 if device_type == "cuda" else torch.bfloat16
    if precision not in PRECISIONS:
        raise ValueError(f"SOLVER.AMP.PRECISION must be 'auto' or one of {sorted(PRECISIONS)}, got {precision!r}")
    return PRECISIONS[precision]
