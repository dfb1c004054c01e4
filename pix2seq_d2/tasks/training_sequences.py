"""Training sequences from ground-truth objects, for a batch: object order, cap, noise, tokens.

The one place training sequences are made. Two callers, one code path:

* :class:`~pix2seq_d2.data.dataset_mapper.Pix2SeqDatasetMapper` makes each image's sequence in the
  data loader (a batch of one, on the CPU, drawing from the global RNG that the resumable
  loader seeds per sample);
* :class:`~pix2seq_d2.modeling.meta_arch.pix2seq.Pix2Seq` makes them for a whole batch on its own device when the
  inputs carry ``instances`` and no token tensors, as any detectron2 mapper gives them
  (``DatasetMapper``, users' own mappers, ``tools/benchmark.py``).

Everything random (the random object order, the noise objects of sequence augmentation) is
drawn first into :class:`SequenceDraws`; the same draws give the same sequences either way.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from detectron2.structures import Instances

from pix2seq_d2.tasks.tokenizer import TokenSequences, box_scale

from .sequence_augmentation import NoiseDraws, SequenceAugmentation

if TYPE_CHECKING:
    from .detection import DetectionTask

__all__ = ["OBJECT_ORDERS", "ObjectBatch", "SequenceDraws", "TrainingSequences", "TrainingSequenceBuilder"]

logger = logging.getLogger(__name__)


def _top_left_distance(boxes: torch.Tensor) -> torch.Tensor:
    return boxes[..., :2].norm(dim=-1)


# Object order -> sort key of each box [B, N, 4] (x0 y0 x1 y1) -> [B, N]: smallest first, ties
# kept in the dataset's order. "random" keys are the draws' uniform numbers.
OBJECT_ORDERS = {
    "random": None,
    "area": lambda boxes: -(boxes[..., 2:] - boxes[..., :2]).prod(-1),
    "distance": _top_left_distance,
    "none": lambda boxes: torch.arange(boxes.shape[1], device=boxes.device).expand(boxes.shape[:2]).float(),
}


@dataclass
class ObjectBatch:
    """Ground-truth objects of a batch of images, padded: the rows' ``valid`` entries are objects."""

    boxes: torch.Tensor  # float [B, N, 4] x0 y0 x1 y1, pixels of the (augmented) image
    classes: torch.Tensor  # int64 [B, N] contiguous dataset class ids
    valid: torch.Tensor  # bool [B, N]
    image_hw: torch.Tensor  # int64 [B, 2] (h, w) of each image

    @classmethod
    def from_instances(
        cls,
        instances: Sequence[Instances],
        device: torch.device | str = "cpu",
        num_classes: int | None = None,
        names: Sequence[str] | None = None,
    ) -> ObjectBatch:
        """``gt_boxes``/``gt_classes`` of each image's ``Instances`` (their ``image_size`` is the
        image's). Boxes are clipped to the image; empty and non-finite ones are left out (a
        warning names the image). ``num_classes``: class ids outside ``[0, num_classes)`` are
        an error naming the image (``names``: what to call each image, e.g. its file)."""
        names = names or [f"batch item {i}" for i in range(len(instances))]
        n = max([len(x) for x in instances], default=0)
        boxes = torch.zeros(len(instances), n, 4, device=device)
        classes = torch.zeros(len(instances), n, dtype=torch.long, device=device)
        valid = torch.zeros(len(instances), n, dtype=torch.bool, device=device)
        image_hw = torch.tensor([tuple(int(v) for v in x.image_size) for x in instances], device=device)
        for i, inst in enumerate(instances):
            if not (inst.has("gt_boxes") and inst.has("gt_classes")):
                raise ValueError(f"{names[i]}: 'instances' without gt_boxes and gt_classes: no training sequence")
            k = len(inst)
            boxes[i, :k] = inst.gt_boxes.tensor.to(device=device, dtype=torch.float32)
            classes[i, :k] = inst.gt_classes.to(device)
            valid[i, :k] = True
        if num_classes is not None:
            bad = valid & ((classes < 0) | (classes >= num_classes))
            if bad.any():
                i = int(bad.any(1).nonzero()[0])
                raise ValueError(
                    f"{names[i]}: gt_classes {classes[i][bad[i]].tolist()} outside [0, {num_classes}) "
                    "(MODEL.PIX2SEQ.NUM_CLASSES)"
                )
        finite = boxes.isfinite().all(-1)
        if (valid & ~finite).any():
            rows = (valid & ~finite).any(1).nonzero()[:, 0].tolist()
            logger.warning(f"non-finite boxes left out of the training sequences of {[names[i] for i in rows]}")
        boxes = torch.minimum(boxes.nan_to_num(0.0).clamp(min=0), box_scale(image_hw).to(boxes))  # clipped
        nonempty = (boxes[..., 2] > boxes[..., 0]) & (boxes[..., 3] > boxes[..., 1])
        return cls(boxes, classes, valid & finite & nonempty, image_hw)


@dataclass(frozen=True)
class SequenceDraws:
    """The random numbers behind a batch's sequences (None where the setting draws nothing)."""

    order_keys: torch.Tensor | None  # [B, N] uniform: the "random" object order
    noise: NoiseDraws | None  # sequence augmentation

    def rows(self, index: int) -> SequenceDraws:
        """The draws of image ``index`` alone (a batch of one)."""
        keys = None if self.order_keys is None else self.order_keys[index : index + 1]
        return SequenceDraws(keys, None if self.noise is None else self.noise.rows(index))


@dataclass(frozen=True)
class TrainingSequences:
    """A batch's training sequences and which objects they hold."""

    tokens: TokenSequences  # input / target / weight [B, T], rows padded with PAD and weight 0
    lengths: torch.Tensor  # int64 [B]: each row's sequence length (before padding)
    objects: torch.Tensor  # int64 [B, K]: index into the ObjectBatch's N of each real object, in order
    num_objects: torch.Tensor  # int64 [B]: real objects per row (the first ones of ``objects``)

    def row(self, i: int) -> TokenSequences:
        """Image ``i``'s sequence, unpadded."""
        n = int(self.lengths[i])
        t = self.tokens
        return TokenSequences(input=t.input[i, :n], target=t.target[i, :n], weight=t.weight[i, :n])


class TrainingSequenceBuilder:
    """Ground-truth objects -> training sequences: order, at most ``max_objects``, noise, tokens."""

    def __init__(
        self,
        task: DetectionTask,
        max_objects: int,
        object_order: str = "random",
        sequence_augmentation: SequenceAugmentation | None = None,
    ):
        """
        Args:
            task: the detection task, whose format turns the objects into tokens.
            max_objects: at most this many objects per sequence.
            object_order: a key of ``OBJECT_ORDERS``.
            sequence_augmentation: fills the sequences with noise objects (None: off).
        """
        if object_order not in OBJECT_ORDERS:
            raise ValueError(f"object order must be one of {sorted(OBJECT_ORDERS)}, got {object_order!r}")
        if max_objects < 1:
            raise ValueError(f"max_objects must be >= 1, got {max_objects}")
        self.task = task
        self.max_objects = max_objects
        self.object_order = object_order
        self.sequence_augmentation = sequence_augmentation

    def __repr__(self) -> str:
        return (
            f"TrainingSequenceBuilder(max_objects={self.max_objects}, object_order={self.object_order!r}, "
            f"sequence_augmentation={self.sequence_augmentation})"
        )

    def draw(self, objects: ObjectBatch, generator: torch.Generator | None = None) -> SequenceDraws:
        """The random numbers for ``objects`` (from ``generator``, on its device; None: the global RNG)."""
        b, n = objects.classes.shape
        device = objects.boxes.device
        keys = torch.rand(b, n, device=device, generator=generator) if self.object_order == "random" else None
        noise = None
        if self.sequence_augmentation is not None:
            noise = self.sequence_augmentation.draw(b, device, generator)
        return SequenceDraws(keys, noise)

    def order(self, objects: ObjectBatch, draws: SequenceDraws) -> tuple[torch.Tensor, torch.Tensor]:
        """-> index ``[B, K]`` of the objects kept, in sequence order (K = min(N, max_objects)), and
        their number per row ``[B]``; left-out entries sort last."""
        key_of = OBJECT_ORDERS[self.object_order]
        keys = draws.order_keys if key_of is None else key_of(objects.boxes)  # [B, N]
        keys = keys.masked_fill(~objects.valid, float("inf"))
        index = keys.argsort(dim=1, stable=True)[:, : self.max_objects]  # [B, K]
        return index, objects.valid.sum(1).clamp(max=self.max_objects)

    def __call__(
        self, objects: ObjectBatch, draws: SequenceDraws | None = None, generator: torch.Generator | None = None
    ) -> TrainingSequences:
        """The training sequences of ``objects`` with ``draws`` (drawn from ``generator`` if None)."""
        draws = self.draw(objects, generator) if draws is None else draws
        index, num_objects = self.order(objects, draws)
        boxes = objects.boxes.gather(1, index[..., None].expand(-1, -1, 4))  # [B, K, 4]
        classes = objects.classes.gather(1, index)  # [B, K]
        aug = self.sequence_augmentation
        if aug is None:
            tokens = self.task.encode_batch(boxes, classes, num_objects, objects.image_hw)
            lengths = self.task.sequence_length(num_objects)
        else:
            tokens = aug.encode_batch(self.task, boxes, classes, num_objects, objects.image_hw, draws.noise)
            lengths = torch.full_like(num_objects, self.task.sequence_length(aug.max_objects))
        return TrainingSequences(tokens, lengths, index, num_objects)
