"""Where in a generated sequence a model finds objects, and where it repeats itself.

A Pix2Seq model emits objects one after another. Counting, at each position of the sequence,
how often the object there matches a ground-truth box that no earlier position matched ("new")
and how often it matches one that an earlier position already found ("repeat") shows what
limits recall: a model that stops early has short sequences; a model that repeats objects
(what under-trained sequence-augmented models do, see docs/studies/sequence_augmentation.md) has many
repeats early on.
``tools/analyze_positions.py`` runs it over a dataset.
"""

from __future__ import annotations

import torch
from detectron2.structures import Boxes, pairwise_iou


def new_and_repeated(pred_boxes: torch.Tensor, gt_boxes: torch.Tensor, iou_thresh: float = 0.5) -> torch.Tensor:
    """Classify each predicted box, in generation order, against the ground truth.

    Args:
        pred_boxes: ``[K, 4]`` XYXY boxes in the order they were generated.
        gt_boxes: ``[G, 4]`` XYXY ground-truth boxes of the same image (same coordinates).
        iou_thresh: a prediction matches the ground-truth box it overlaps most if IoU >= this.
    Returns:
        int64 ``[K]``: 1 = matches a ground-truth box not matched before, 2 = matches one that
        an earlier position matched, 0 = matches none.
    """
    kinds = torch.zeros(len(pred_boxes), dtype=torch.long)
    if len(pred_boxes) == 0 or len(gt_boxes) == 0:
        return kinds
    iou = pairwise_iou(Boxes(pred_boxes.float()), Boxes(gt_boxes.float()))  # [K, G]
    best_iou, best_gt = iou.max(dim=1)  # [K]
    found: set[int] = set()
    for k in range(len(pred_boxes)):
        if best_iou[k] < iou_thresh:
            continue
        gt = int(best_gt[k])
        kinds[k] = 2 if gt in found else 1
        found.add(gt)
    return kinds


class PositionStats:
    """Accumulates :func:`new_and_repeated` over images; rates per position."""

    def __init__(self, num_positions: int, iou_thresh: float = 0.5):
        self.iou_thresh = iou_thresh
        self.new = torch.zeros(num_positions)
        self.repeated = torch.zeros(num_positions)
        self.emitted = torch.zeros(num_positions)  # images with an object at this position
        self.images = 0

    def add(self, pred_boxes: torch.Tensor, gt_boxes: torch.Tensor, valid: torch.Tensor | None = None) -> None:
        """One image: its ``[K, 4]`` predicted boxes in generation order (K at most
        ``num_positions``); ``valid`` ``[K]`` marks positions that hold an object (default: all;
        after EOS or a malformed object they do not)."""
        k = len(pred_boxes)
        if k > len(self.new):
            raise ValueError(f"{k} predictions but only {len(self.new)} positions are tracked")
        valid = torch.ones(k, dtype=torch.bool) if valid is None else valid.bool().cpu()
        kinds = torch.zeros(k, dtype=torch.long)
        kinds[valid] = new_and_repeated(pred_boxes.cpu()[valid], gt_boxes.cpu(), self.iou_thresh)
        self.new[:k] += (kinds == 1).float()
        self.repeated[:k] += (kinds == 2).float()
        self.emitted[:k] += valid.float()
        self.images += 1

    def rows(self) -> list[dict[str, float]]:
        """Per position: the fraction of images with an object there, a new find, a repeat."""
        n = max(self.images, 1)
        return [
            {"position": i, "emitted": float(e) / n, "new": float(a) / n, "repeated": float(r) / n}
            for i, (e, a, r) in enumerate(zip(self.emitted, self.new, self.repeated))
        ]
