"""Small helpers on detectron2's structures that trace (FLOP counting, ``TracingAdapter``, export)."""

from __future__ import annotations

import torch
from detectron2.structures import ImageList

__all__ = ["image_sizes_tensor"]


def image_sizes_tensor(images: ImageList, device: torch.device) -> torch.Tensor:
    """``images.image_sizes`` as an int64 ``[B, 2]`` (h, w) tensor.

    Under tracing (FLOP counting, ``TracingAdapter``, ``torch.jit.trace``) ``ImageList`` holds the
    sizes as 0-d tensors, which ``torch.tensor`` cannot take; stacking keeps them in the graph.
    """
    sizes = [torch.stack([torch.as_tensor(h), torch.as_tensor(w)]) for h, w in images.image_sizes]
    return torch.stack(sizes).to(device=device, dtype=torch.long)
