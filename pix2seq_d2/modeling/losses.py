"""The Pix2Seq training loss: token-weighted cross-entropy of the target sequences, summed over all
workers' tokens, and the check that stops training on a non-finite loss with the batch's files named."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from detectron2.utils import comm

from pix2seq_d2.utils.events import current_training_iteration

__all__ = ["check_finite_loss", "sequence_loss"]


def sequence_loss(logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Sum of token-weighted cross-entropy divided by the total weight over all workers.

    ``logits [B, T, V]``, ``target [B, T]``, ``weight [B, T]``. DDP averages gradients over workers, so
    each worker's sum is scaled by the world size: the gradient then equals that of (all workers'
    weighted sum / total weight).
    """
    ce = F.cross_entropy(logits.flatten(0, 1).float(), target.flatten(), reduction="none")  # [B*T]
    total_weight = weight.sum().detach()
    world_size = comm.get_world_size()
    if world_size > 1:
        total_weight = total_weight.clone()
        torch.distributed.all_reduce(total_weight)
    return (ce * weight.flatten()).sum() * world_size / total_weight.clamp(min=1e-6)


def check_finite_loss(loss: torch.Tensor, batched_inputs: list[dict]) -> None:
    """Raise ``FloatingPointError`` naming the iteration and the batch's files if ``loss`` is NaN/inf."""
    if bool(torch.isfinite(loss.detach()).all()):
        return
    files = [x.get("file_name", "?") for x in batched_inputs]
    shown = ", ".join(dict.fromkeys(files))  # a multi-view batch repeats its files
    raise FloatingPointError(
        f"Non-finite training loss {loss.detach().float().cpu().tolist()} at iteration {current_training_iteration()}; "
        f"batch files: {shown}. Lower SOLVER.BASE_LR, enable SOLVER.CLIP_GRADIENTS, or check these images' "
        "annotations."
    )
