"""The Pix2Seq vocabulary and the conversion between boxes/classes and token sequences.

Vocabulary layout (one shared vocabulary for every token)::

    0                      PAD    padding after the end of a sequence (never predicted)
    1                      EOS    end of sequence
    2                      START  the detection prompt that starts every sequence
    3                      NOISE  the "fake" class of sequence-augmentation noise objects
    4 .. 4+C-1             class tokens, one per contiguous dataset class id 0..C-1
    4+C .. 4+C+B-1         coordinate tokens, one per quantisation bin 0..B-1

Each object is five tokens ``ymin xmin ymax xmax class`` (the paper's order).
Coordinates are normalised by the image's own size (after augmentation, before
batch padding), quantised into ``B`` bins with ``bin = floor(v * B)`` clamped to
``[0, B-1]`` and dequantised to bin centres ``(bin + 0.5) / B``, so a round trip
moves a coordinate by at most half a bin.

A training example is three aligned 1-D tensors of length ``5 * n + 1``::

    input   START y x y x c  y x y x c ...            (teacher forcing)
    target  y x y x c  y x y x c ...  EOS
    weight  1 1 1 1 1  1 1 1 1 1 ...  eos_weight
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

TOKENS_PER_OBJECT = 5
SCORE_MODES = ("class", "class_x_coords")
# Positions inside an object: 0..3 are coordinates (ymin, xmin, ymax, xmax), 4 the class.
CLASS_SLOT = 4


@dataclass(frozen=True)
class TokenizedObjects:
    """The token tensors of one image: ``input``, ``target`` and ``weight`` are 1-D, equal length."""

    input: torch.Tensor  # int64 [5n+1]
    target: torch.Tensor  # int64 [5n+1]
    weight: torch.Tensor  # float32 [5n+1]


@dataclass(frozen=True)
class DecodedObjects:
    """Objects read back from token sequences, one row per object slot.

    ``valid`` marks slots whose five tokens form an object (coordinates in the coordinate
    slots, a dataset class or the noise class in the class slot, before any EOS).
    """

    boxes: torch.Tensor  # float [N, K, 4] x0 y0 x1 y1 in pixels of the given image sizes
    classes: torch.Tensor  # int64 [N, K] contiguous dataset class ids (-1 where not valid)
    scores: torch.Tensor  # float [N, K] detection scores (0 where not valid)
    valid: torch.Tensor  # bool [N, K]


class Pix2SeqTokenizer:
    """Maps boxes and classes to vocabulary tokens and back; holds the vocabulary layout."""

    PAD = 0
    EOS = 1
    START = 2
    NOISE = 3
    NUM_SPECIAL = 4

    def __init__(self, num_classes: int, num_bins: int, eos_weight: float = 1.0):
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        if num_bins < 2:
            raise ValueError(f"num_bins must be >= 2, got {num_bins}")
        self.num_classes = num_classes
        self.num_bins = num_bins
        self.eos_weight = float(eos_weight)
        self.class_offset = self.NUM_SPECIAL
        self.coord_offset = self.class_offset + num_classes
        self.vocab_size = self.coord_offset + num_bins

    @classmethod
    def from_config(cls, cfg) -> Pix2SeqTokenizer:
        """The tokenizer of ``MODEL.PIX2SEQ`` (NUM_CLASSES, NUM_BINS, EOS_WEIGHT)."""
        p = cfg.MODEL.PIX2SEQ
        return cls(p.NUM_CLASSES, p.NUM_BINS, p.EOS_WEIGHT)

    def __repr__(self) -> str:
        return (
            f"Pix2SeqTokenizer(num_classes={self.num_classes}, num_bins={self.num_bins}, vocab_size={self.vocab_size})"
        )

    # ---- vocabulary ranges -------------------------------------------------------------
    def class_token_range(self) -> tuple[int, int]:
        """Half-open range ``[lo, hi)`` of the dataset class tokens."""
        return self.class_offset, self.coord_offset

    def coord_token_range(self) -> tuple[int, int]:
        """Half-open range ``[lo, hi)`` of the coordinate tokens."""
        return self.coord_offset, self.vocab_size

    # ---- coordinates ---------------------------------------------------------------------
    def quantize(self, normalized: torch.Tensor) -> torch.Tensor:
        """Normalised coordinates in [0, 1] -> bin indices in [0, B-1] (values outside are clamped)."""
        bins = torch.floor(normalized * self.num_bins).long()
        return bins.clamp_(0, self.num_bins - 1)

    def dequantize(self, bins: torch.Tensor) -> torch.Tensor:
        """Bin indices -> normalised coordinates at the bin centres."""
        return (bins.float() + 0.5) / self.num_bins

    # ---- encoding ------------------------------------------------------------------------
    def object_tokens(self, boxes_xyxy: torch.Tensor, classes: torch.Tensor, image_hw: tuple[int, int]) -> torch.Tensor:
        """Boxes ``[n, 4]`` (x0 y0 x1 y1, pixels) and classes ``[n]`` -> tokens ``[n, 5]``."""
        h, w = image_hw
        boxes = boxes_xyxy.float().reshape(-1, 4)
        scale = boxes.new_tensor([h, w, h, w])
        yxyx = boxes[:, [1, 0, 3, 2]] / scale  # [n, 4] normalised ymin xmin ymax xmax
        coord_tokens = self.quantize(yxyx) + self.coord_offset
        class_tokens = classes.long().reshape(-1, 1) + self.class_offset
        return torch.cat([coord_tokens, class_tokens], dim=1)

    def encode(self, boxes_xyxy: torch.Tensor, classes: torch.Tensor, image_hw: tuple[int, int]) -> TokenizedObjects:
        """One image's objects (in the order given) -> teacher-forcing input, target and weights."""
        if classes.numel() and (int(classes.min()) < 0 or int(classes.max()) >= self.num_classes):
            raise ValueError(
                f"class ids must lie in [0, {self.num_classes}), got {classes.min().item()}..{classes.max().item()}"
            )
        body = self.object_tokens(boxes_xyxy, classes, image_hw).reshape(-1)  # [5n]
        start = body.new_full((1,), self.START)
        eos = body.new_full((1,), self.EOS)
        weight = torch.ones(body.numel() + 1)
        weight[-1] = self.eos_weight
        return TokenizedObjects(input=torch.cat([start, body]), target=torch.cat([body, eos]), weight=weight)

    # ---- decoding ------------------------------------------------------------------------
    def decode(
        self,
        tokens: torch.Tensor,
        token_logprobs: torch.Tensor,
        class_logprobs: torch.Tensor,
        image_sizes: torch.Tensor,
        score: str = "class",
    ) -> DecodedObjects:
        """Generated tokens -> boxes, classes and scores, for a batch, without per-object loops.

        Args:
            tokens: int64 ``[N, 5K]`` generated tokens (START not included).
            token_logprobs: float ``[N, 5K]`` log-probability of each generated token.
            class_logprobs: float ``[N, >=K, C]`` log-probabilities of the real classes at each
                class slot (full-vocabulary softmax). The reported class is their argmax.
            image_sizes: ``[N, 2]`` (height, width) used to turn normalised coordinates into pixels.
            score: "class" (probability of the reported class) or "class_x_coords" (times the
                probabilities of the object's four coordinate tokens).
        """
        if score not in SCORE_MODES:
            raise ValueError(f"unknown score mode {score!r}; known: {SCORE_MODES}")
        n, length = tokens.shape
        k = length // TOKENS_PER_OBJECT
        objs = tokens[:, : k * TOKENS_PER_OBJECT].reshape(n, k, TOKENS_PER_OBJECT)
        logprobs = token_logprobs[:, : k * TOKENS_PER_OBJECT].reshape(n, k, TOKENS_PER_OBJECT)

        coord_lo, coord_hi = self.coord_token_range()
        class_lo, class_hi = self.class_token_range()
        coords = objs[..., :CLASS_SLOT]
        cls_tok = objs[..., CLASS_SLOT]
        coords_ok = ((coords >= coord_lo) & (coords < coord_hi)).all(-1)
        class_ok = ((cls_tok >= class_lo) & (cls_tok < class_hi)) | (cls_tok == self.NOISE)
        # An object counts only if no EOS appeared at or before any of its tokens.
        eos_seen = (tokens[:, : k * TOKENS_PER_OBJECT] == self.EOS).cumsum(-1).reshape(n, k, TOKENS_PER_OBJECT)
        valid = coords_ok & class_ok & (eos_seen[..., -1] == 0)

        yxyx = self.dequantize((coords - coord_lo).clamp(0, self.num_bins - 1))  # [N, K, 4]
        hw = image_sizes.to(yxyx).reshape(n, 1, 2)
        x0 = yxyx[..., 1] * hw[..., 1]
        y0 = yxyx[..., 0] * hw[..., 0]
        x1 = yxyx[..., 3] * hw[..., 1]
        y1 = yxyx[..., 2] * hw[..., 0]
        corners = [torch.minimum(x0, x1), torch.minimum(y0, y1), torch.maximum(x0, x1), torch.maximum(y0, y1)]
        boxes = torch.stack(corners, -1)
        class_logprob, classes = class_logprobs[:, :k].max(-1)  # [N, K]
        if score == "class_x_coords":
            class_logprob = class_logprob + logprobs[..., :CLASS_SLOT].sum(-1)
        classes = torch.where(valid, classes, torch.full_like(classes, -1))
        scores = torch.where(valid, class_logprob.exp(), torch.zeros_like(class_logprob))
        return DecodedObjects(boxes=boxes, classes=classes, scores=scores, valid=valid)
