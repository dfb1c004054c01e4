"""``Pix2SeqTokenizer``: the token space every task writes its sequences in, and the coordinate codec.

It holds the vocabulary layout (:mod:`.vocabulary`): the special tokens, each task's prompt token, the
class tokens of the dataset's classes, the coordinate bins; and it quantises coordinates into bins and
reads them back. What a sequence of a task looks like (an object is five tokens, a polygon a list of
points, ...) belongs to the task (:mod:`pix2seq_d2.tasks`); the tokenizer knows no task's grammar.

A training example of every task is three aligned tensors (:class:`TokenSequences`): the decoder's
input (teacher forcing: the prompt, then the response shifted right), the target and the loss weight of
each target.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from .vocabulary import COORD_ORDERS, VOCABULARY_LAYOUT_REGISTRY

__all__ = ["Pix2SeqTokenizer", "TokenSequences", "box_scale"]


def box_scale(image_hw: torch.Tensor) -> torch.Tensor:
    """Image sizes ``[B, 2]`` (h, w) -> ``[B, 1, 4]`` float (w, h, w, h): what x0 y0 x1 y1 pixel boxes
    ``[B, n, 4]`` are divided by to become fractions of their image (or clamped by to stay inside it)."""
    hw = image_hw.float()
    return torch.stack([hw[:, 1], hw[:, 0], hw[:, 1], hw[:, 0]], dim=-1)[:, None, :]


@dataclass(frozen=True)
class TokenSequences:
    """Token tensors of one example (1-D, ``[T]``) or of a batch (``[B, T]``, rows padded with PAD and
    weight 0): ``input``, ``target`` and ``weight`` have equal shapes."""

    input: torch.Tensor  # int64 [T] or [B, T]
    target: torch.Tensor  # int64 [T] or [B, T]
    weight: torch.Tensor  # float32 [T] or [B, T]


class Pix2SeqTokenizer:
    """The shared token space (a vocabulary layout) and the coordinate quantiser of every task."""

    def __init__(
        self,
        num_classes: int,
        num_bins: int,
        eos_weight: float = 1.0,
        layout: str = "pix2seq_d2",
        category_ids: Sequence[int] = (),
        coord_normalizer: int = 0,
    ):
        """
        Args:
            num_classes, num_bins: dataset classes and coordinate bins.
            eos_weight: loss weight of the EOS target.
            layout: a name in ``VOCABULARY_LAYOUT_REGISTRY``.
            category_ids: the dataset category id of each contiguous class (layouts whose class
                tokens are keyed by category ids); empty: the contiguous ids themselves.
            coord_normalizer: coordinates are divided by this many pixels; 0: by the image's own size.
        """
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        if num_bins < 2:
            raise ValueError(f"num_bins must be >= 2, got {num_bins}")
        if coord_normalizer < 0:
            raise ValueError(f"coord_normalizer must be >= 0 pixels, got {coord_normalizer}")
        self.layout = VOCABULARY_LAYOUT_REGISTRY.get(layout)(num_classes, num_bins, category_ids)
        self.layout.check()
        self.num_classes = num_classes
        self.num_bins = num_bins
        self.eos_weight = float(eos_weight)
        self.coord_normalizer = int(coord_normalizer)
        lay = self.layout
        self.PAD, self.EOS, self.START, self.NOISE = lay.pad, lay.eos, lay.start, lay.noise
        self.vocab_size, self.input_vocab_size = lay.vocab_size, lay.input_vocab_size
        self.class_tokens = torch.tensor(lay.class_tokens)  # [C]
        lo, hi = lay.class_range
        # contiguous class of each token of the class range (-1: no dataset class)
        self.class_of_range_index = torch.full((hi - lo,), -1, dtype=torch.long)
        self.class_of_range_index[self.class_tokens - lo] = torch.arange(num_classes)
        self.slot_axes = COORD_ORDERS[lay.coord_order]  # box coordinate slot -> index into (x0, y0, x1, y1)

    @classmethod
    def from_config(cls, cfg) -> Pix2SeqTokenizer:
        """The tokenizer of ``MODEL.PIX2SEQ`` (NUM_CLASSES, NUM_BINS, EOS_WEIGHT, TOKENIZER.*)."""
        p = cfg.MODEL.PIX2SEQ
        t = p.TOKENIZER
        return cls(p.NUM_CLASSES, p.NUM_BINS, p.EOS_WEIGHT, t.LAYOUT, t.CATEGORY_IDS, t.COORD_NORMALIZER)

    def __repr__(self) -> str:
        return (
            f"Pix2SeqTokenizer(layout={self.layout.name!r}, num_classes={self.num_classes}, "
            f"num_bins={self.num_bins}, vocab_size={self.vocab_size})"
        )

    # ---- vocabulary ---------------------------------------------------------------------
    def prompt_token(self, task: str) -> int:
        """The token that asks the decoder for ``task`` (the layout's, else START)."""
        return self.layout.prompt(task)

    def class_token_range(self) -> tuple[int, int]:
        """Half-open range ``[lo, hi)`` of the class tokens (a superset of the dataset classes' tokens)."""
        return self.layout.class_range

    def coord_token_range(self) -> tuple[int, int]:
        """Half-open range ``[lo, hi)`` of the coordinate tokens."""
        return self.layout.coord_base, self.layout.coord_base + self.num_bins

    def class_names(self, thing_classes: Sequence[str] | None = None) -> dict[int, str]:
        """Token -> readable class name (dataset class names when given, else "class i"), NOISE included."""
        names = {self.NOISE: "noise"}
        for i, token in enumerate(self.layout.class_tokens):
            names[token] = thing_classes[i] if thing_classes and i < len(thing_classes) else f"class {i}"
        return names

    def generatable(self, device: torch.device | str = "cpu") -> torch.Tensor:
        """bool ``[V]``: what the model may emit when decoding without a grammar (as its peer decodes)."""
        allowed = torch.zeros(self.vocab_size, dtype=torch.bool, device=device)
        allowed[slice(*self.layout.generatable)] = True
        return allowed

    def check_classes(self, classes: torch.Tensor) -> None:
        """ValueError unless every class id lies in ``[0, num_classes)``."""
        if classes.numel() and (int(classes.min()) < 0 or int(classes.max()) >= self.num_classes):
            raise ValueError(
                f"class ids must lie in [0, {self.num_classes}), got {classes.min().item()}..{classes.max().item()}"
            )

    # ---- coordinates ---------------------------------------------------------------------
    def quantize(self, normalized: torch.Tensor) -> torch.Tensor:
        """Normalised coordinates in [0, 1] -> bin indices in [0, B-1] (values outside are clamped)."""
        if self.layout.bin_values == "centres":
            scaled = normalized * self.num_bins
        else:
            scaled = normalized * (self.num_bins - 1)
        bins = torch.round(scaled) if self.layout.rounding == "round" else torch.floor(scaled)
        return bins.long().clamp_(0, self.num_bins - 1)

    def dequantize(self, bins: torch.Tensor) -> torch.Tensor:
        """Bin indices -> normalised coordinates (bin centres or bin ends, by layout)."""
        if self.layout.bin_values == "centres":
            return (bins.float() + 0.5) / self.num_bins
        return bins.float() / (self.num_bins - 1)

    def bin_values(self) -> torch.Tensor:
        """float ``[B]``: the normalised coordinate each bin reads back as."""
        return self.dequantize(torch.arange(self.num_bins))

    def normalizer_hw(self, image_hw: tuple[int, int]) -> tuple[int, int]:
        """The (height, width) in pixels that normalised coordinates are fractions of."""
        n = self.coord_normalizer
        return (n, n) if n else (int(image_hw[0]), int(image_hw[1]))

    def coordinate_scale(self, image_hw: tuple[int, int] | torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        """The (w, h, w, h) pixels that normalise a box: ``[4]`` for one image size (or a fixed
        ``coord_normalizer``), ``[B, 1, 4]`` for a tensor of sizes ``[B, 2]``."""
        if isinstance(image_hw, torch.Tensor) and not self.coord_normalizer:
            return box_scale(image_hw).to(like)
        h, w = self.normalizer_hw(image_hw)
        return like.new_tensor([w, h, w, h])
