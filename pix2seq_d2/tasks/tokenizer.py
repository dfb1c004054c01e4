"""The Pix2Seq sequence format: vocabulary layout, grammar, and boxes/classes <-> tokens.

This module is the one owner of the sequence format: how many tokens an object takes and
which slot holds what, the special tokens, where class and coordinate tokens lie, how
coordinates are normalised, quantised and read back, which tokens the grammar allows at each
slot, and how long sequences are. Decoding, the model, the likelihood evaluator, sequence
augmentation and the beliefs picture ask the tokenizer instead of knowing any of it.

Every object is five tokens: four coordinates then the class. Three vocabulary layouts are
built in (``MODEL.PIX2SEQ.TOKENIZER.LAYOUT``; ``VOCABULARY_LAYOUT_REGISTRY`` takes more):

``pix2seq_d2`` (this project's; C dataset classes, B bins)::

    0 PAD, 1 EOS, 2 START (the detection prompt), 3 NOISE (the fake class of noise objects)
    4 .. 4+C-1        class tokens, one per contiguous dataset class id 0..C-1
    4+C .. 4+C+B-1    coordinate bins, ``ymin xmin ymax xmax`` order
    bin = floor(v * B) clamped to [0, B-1], read back at the bin centre (bin + 0.5) / B;
    v normalised by the image's own size (after augmentation, before batch padding)

``official`` (google-research/pix2seq; vocabulary 3000)::

    0 PAD = EOS, 10 START, 30 NOISE, 100 + k: the class with dataset category id k,
    1000 + b: coordinate bin b (B bins, 1000 for the released models), ``ymin xmin ymax xmax``;
    bin = round(v * (B-1)), read back as b / (B-1); v normalised by the padded square canvas

``pretrained_pix2seq`` (Pretrained-Pix2Seq; 2001 bins)::

    0..2000 coordinate bins, ``xmin ymin xmax ymax``; 2001 + k: class with category id k
    (k = 0..90); 2092 EOS; 2093 NOISE; START is an input-only token (its own embedding row
    2094); bin = floor(v * 2000), read back as b / 2000; v normalised by a fixed 1333 px

A training example is three aligned 1-D tensors of length ``5 * n + 1``::

    input   START y x y x c  y x y x c ...            (teacher forcing)
    target  y x y x c  y x y x c ...  EOS
    weight  1 1 1 1 1  1 1 1 1 1 ...  eos_weight
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from detectron2.utils.registry import Registry

TOKENS_PER_OBJECT = 5
SCORE_MODES = ("class", "class_x_coords")
# Positions inside an object: 0..3 are coordinates, 4 the class.
CLASS_SLOT = 4
COORD_ORDERS = {"yxyx": (1, 0, 3, 2), "xyxy": (0, 1, 2, 3)}  # slot -> index into (x0, y0, x1, y1)


def box_scale(image_hw: torch.Tensor) -> torch.Tensor:
    """Image sizes ``[B, 2]`` (h, w) -> ``[B, 1, 4]`` float (w, h, w, h): what x0 y0 x1 y1 pixel boxes
    ``[B, n, 4]`` are divided by to become fractions of their image (or clamped by to stay inside it)."""
    hw = image_hw.float()
    return torch.stack([hw[:, 1], hw[:, 0], hw[:, 1], hw[:, 0]], dim=-1)[:, None, :]


VOCABULARY_LAYOUT_REGISTRY = Registry("PIX2SEQ_VOCABULARY_LAYOUT")
VOCABULARY_LAYOUT_REGISTRY.__doc__ = """Vocabulary layouts, called as
``layout(num_classes, num_bins, category_ids) -> VocabularyLayout``."""


@dataclass(frozen=True)
class VocabularyLayout:
    """Where every kind of token lies in a vocabulary, and how coordinates are quantised."""

    name: str
    pad: int
    eos: int
    start: int
    noise: int
    class_tokens: tuple[int, ...]  # token of each contiguous dataset class 0..C-1
    class_range: tuple[int, int]  # [lo, hi): the tokens a class slot's argmax runs over without a grammar
    coord_base: int  # token of coordinate bin 0
    num_bins: int
    vocab_size: int  # the decoder's output vocabulary
    input_vocab_size: int  # rows of the input embedding (> vocab_size when START is input-only)
    generatable: tuple[int, int]  # [lo, hi): what the model may emit when decoding without a grammar
    coord_order: str  # "yxyx" or "xyxy"
    rounding: str  # "floor" or "round" (v * scale -> bin)
    bin_values: str  # "centres": (b + 0.5) / B; "ends": b / (B - 1)

    def check(self) -> None:
        tokens = set(self.class_tokens)
        coords = range(self.coord_base, self.coord_base + self.num_bins)
        if len(tokens) != len(self.class_tokens):
            raise ValueError(f"{self.name} layout: two classes share a token ({self.class_tokens})")
        if any(not self.class_range[0] <= t < self.class_range[1] for t in tokens):
            raise ValueError(
                f"{self.name} layout: class tokens {sorted(tokens)} leave the class range {self.class_range}"
            )
        if coords.stop > self.vocab_size or tokens & set(coords) or {self.eos, self.noise} & (tokens | set(coords)):
            raise ValueError(
                f"{self.name} layout: class, coordinate and special tokens overlap or leave the vocabulary"
            )


def _category_ids(num_classes: int, category_ids: Sequence[int]) -> list[int]:
    ids = list(category_ids) if len(category_ids) else list(range(num_classes))
    if len(ids) != num_classes:
        raise ValueError(f"MODEL.PIX2SEQ.TOKENIZER.CATEGORY_IDS has {len(ids)} ids but NUM_CLASSES is {num_classes}")
    return ids


@VOCABULARY_LAYOUT_REGISTRY.register()
def pix2seq_d2(num_classes: int, num_bins: int, category_ids: Sequence[int] = ()) -> VocabularyLayout:
    """This project's compact layout (category ids are not used: classes are contiguous)."""
    coord_base = 4 + num_classes
    vocab = coord_base + num_bins
    return VocabularyLayout(
        "pix2seq_d2", pad=0, eos=1, start=2, noise=3, class_tokens=tuple(range(4, coord_base)),
        class_range=(4, coord_base), coord_base=coord_base, num_bins=num_bins, vocab_size=vocab,
        input_vocab_size=vocab, generatable=(1, vocab), coord_order="yxyx", rounding="floor", bin_values="centres",
    )  # fmt: skip


@VOCABULARY_LAYOUT_REGISTRY.register()
def official(num_classes: int, num_bins: int, category_ids: Sequence[int] = ()) -> VocabularyLayout:
    """google-research/pix2seq's layout: class token = 100 + category id, bins from 1000."""
    ids = _category_ids(num_classes, category_ids)
    return VocabularyLayout(
        "official", pad=0, eos=0, start=10, noise=30, class_tokens=tuple(100 + k for k in ids),
        class_range=(100, 1000), coord_base=1000, num_bins=num_bins, vocab_size=max(3000, 1000 + num_bins),
        input_vocab_size=max(3000, 1000 + num_bins), generatable=(0, max(3000, 1000 + num_bins)),
        coord_order="yxyx", rounding="round", bin_values="ends",
    )  # fmt: skip


@VOCABULARY_LAYOUT_REGISTRY.register()
def pretrained_pix2seq(num_classes: int, num_bins: int, category_ids: Sequence[int] = ()) -> VocabularyLayout:
    """Pretrained-Pix2Seq's layout: bins first, class = num_bins + category id (0..90), then EOS, NOISE."""
    ids = _category_ids(num_classes, category_ids)
    eos = num_bins + 91
    return VocabularyLayout(
        "pretrained_pix2seq", pad=eos, eos=eos, start=eos + 2, noise=eos + 1,
        class_tokens=tuple(num_bins + k for k in ids), class_range=(num_bins, eos), coord_base=0,
        num_bins=num_bins, vocab_size=eos + 2, input_vocab_size=eos + 3, generatable=(0, eos),
        coord_order="xyxy", rounding="floor", bin_values="ends",
    )  # fmt: skip


@dataclass(frozen=True)
class TokenizedObjects:
    """Token tensors of one image (1-D, ``[5n+1]``) or of a batch (``[B, T]``, rows padded with PAD
    and weight 0): ``input``, ``target`` and ``weight`` have equal shapes."""

    input: torch.Tensor  # int64 [5n+1] or [B, T]
    target: torch.Tensor  # int64 [5n+1] or [B, T]
    weight: torch.Tensor  # float32 [5n+1] or [B, T]


@dataclass(frozen=True)
class DecodedObjects:
    """Objects read back from token sequences, one row per object slot.

    ``valid`` marks slots that hold a detection of a dataset class (see :meth:`Pix2SeqTokenizer.decode`).
    """

    boxes: torch.Tensor  # float [N, K, 4] x0 y0 x1 y1 in pixels (corners sorted)
    classes: torch.Tensor  # int64 [N, K] contiguous dataset class ids (-1 where not valid)
    scores: torch.Tensor  # float [N, K] detection scores (0 where not valid)
    valid: torch.Tensor  # bool [N, K]


class Pix2SeqTokenizer:
    """Maps boxes and classes to tokens and back; owns the vocabulary layout and the grammar."""

    tokens_per_object = TOKENS_PER_OBJECT
    class_slot = CLASS_SLOT

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
        self.slot_axes = COORD_ORDERS[lay.coord_order]

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

    # ---- vocabulary ranges and lengths ---------------------------------------------------
    def class_token_range(self) -> tuple[int, int]:
        """Half-open range ``[lo, hi)`` of the class tokens (a superset of the dataset classes' tokens)."""
        return self.layout.class_range

    def coord_token_range(self) -> tuple[int, int]:
        """Half-open range ``[lo, hi)`` of the coordinate tokens."""
        return self.layout.coord_base, self.layout.coord_base + self.num_bins

    def sequence_length(self, num_objects: int) -> int:
        """Decoder positions needed for ``num_objects`` objects (START included)."""
        return self.tokens_per_object * num_objects + 1

    def token_kinds(self, tokens: torch.Tensor) -> dict[str, torch.Tensor]:
        """Boolean masks over ``tokens``: "coord", "class" (dataset classes and NOISE), "eos" (PAD in none)."""
        lo, hi = self.coord_token_range()
        is_class = torch.isin(tokens, self.class_tokens.to(tokens.device)) | (tokens == self.NOISE)
        return {"coord": (tokens >= lo) & (tokens < hi), "class": is_class, "eos": tokens == self.EOS}

    def class_names(self, thing_classes: Sequence[str] | None = None) -> dict[int, str]:
        """Token -> readable class name (dataset class names when given, else "class i"), NOISE included."""
        names = {self.NOISE: "noise"}
        for i, token in enumerate(self.layout.class_tokens):
            names[token] = thing_classes[i] if thing_classes and i < len(thing_classes) else f"class {i}"
        return names

    # ---- grammar ---------------------------------------------------------------------------
    def grammar(
        self, device: torch.device | str = "cpu", allow_eos: bool = True, allow_noise_class: bool = False
    ) -> torch.Tensor:
        """bool ``[5, V]``: the tokens that may be generated at each slot of an object."""
        masks = torch.zeros(self.tokens_per_object, self.vocab_size, dtype=torch.bool, device=device)
        lo, hi = self.coord_token_range()
        masks[: self.class_slot, lo:hi] = True
        masks[0, self.EOS] = allow_eos
        masks[self.class_slot, self.class_tokens.to(device)] = True
        masks[self.class_slot, self.NOISE] = allow_noise_class
        return masks

    def generatable(self, device: torch.device | str = "cpu") -> torch.Tensor:
        """bool ``[V]``: what the model may emit when decoding without a grammar (as its peer decodes)."""
        allowed = torch.zeros(self.vocab_size, dtype=torch.bool, device=device)
        allowed[slice(*self.layout.generatable)] = True
        return allowed

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

    # ---- encoding ------------------------------------------------------------------------
    def _coordinate_scale(self, image_hw: tuple[int, int] | torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        """The (w, h, w, h) pixels that normalise a box: ``[4]`` for one image size (or a fixed
        ``coord_normalizer``), ``[B, 1, 4]`` for a tensor of sizes ``[B, 2]``."""
        if isinstance(image_hw, torch.Tensor) and not self.coord_normalizer:
            return box_scale(image_hw).to(like)
        h, w = self.normalizer_hw(image_hw)
        return like.new_tensor([w, h, w, h])

    def object_tokens(
        self, boxes_xyxy: torch.Tensor, classes: torch.Tensor, image_hw: tuple[int, int] | torch.Tensor
    ) -> torch.Tensor:
        """Boxes ``[n, 4]`` (x0 y0 x1 y1, pixels) and classes ``[n]`` of one image -> tokens ``[n, 5]``;
        or a batch: boxes ``[B, n, 4]``, classes ``[B, n]``, sizes ``[B, 2]`` -> ``[B, n, 5]``."""
        boxes = boxes_xyxy.float()
        if boxes.dim() == 1:
            boxes = boxes.reshape(-1, 4)
        normalized = boxes / self._coordinate_scale(image_hw, boxes)  # [..., n, 4] x0 y0 x1 y1
        coord_tokens = self.quantize(normalized[..., list(self.slot_axes)]) + self.layout.coord_base
        class_tokens = self.class_tokens.to(boxes.device)[classes.long().reshape(boxes.shape[:-1])]
        return torch.cat([coord_tokens, class_tokens[..., None]], dim=-1)

    def check_classes(self, classes: torch.Tensor) -> None:
        """ValueError unless every class id lies in ``[0, num_classes)``."""
        if classes.numel() and (int(classes.min()) < 0 or int(classes.max()) >= self.num_classes):
            raise ValueError(
                f"class ids must lie in [0, {self.num_classes}), got {classes.min().item()}..{classes.max().item()}"
            )

    def encode(self, boxes_xyxy: torch.Tensor, classes: torch.Tensor, image_hw: tuple[int, int]) -> TokenizedObjects:
        """One image's objects (in the order given) -> teacher-forcing input, target and weights."""
        self.check_classes(classes)
        body = self.object_tokens(boxes_xyxy, classes, image_hw).reshape(-1)  # [5n]
        return self.wrap(body, torch.ones(body.numel()))

    def encode_batch(
        self, boxes_xyxy: torch.Tensor, classes: torch.Tensor, num_objects: torch.Tensor, image_hw: torch.Tensor
    ) -> TokenizedObjects:
        """A batch: boxes ``[B, K, 4]``, classes ``[B, K]`` of which the first ``num_objects [B]`` of
        each row are objects (in order), image sizes ``[B, 2]`` -> ``[B, 5K+1]`` tensors, each row
        its image's sequence followed by PAD (target and input) with weight 0."""
        real = torch.arange(classes.shape[1], device=classes.device) < num_objects[:, None]  # [B, K]
        self.check_classes(classes[real])
        body = self.object_tokens(boxes_xyxy, classes.clamp(0, self.num_classes - 1), image_hw)  # [B, K, 5]
        body = body.flatten(1)  # [B, 5K]
        return self.wrap_batch(body, torch.ones(body.shape, device=body.device), num_objects)

    def wrap(
        self, objects: torch.Tensor, weights: torch.Tensor, inputs: torch.Tensor | None = None
    ) -> TokenizedObjects:
        """Object tokens ``[5n]`` (targets), their weights ``[5n]`` and optionally other input tokens
        ``[5n]`` -> ``START inputs`` / ``objects EOS`` / ``weights eos_weight``."""
        num_objects = torch.tensor([objects.numel() // self.tokens_per_object], device=objects.device)
        inputs = None if inputs is None else inputs[None]
        out = self.wrap_batch(objects[None], weights[None], num_objects, inputs)
        return TokenizedObjects(input=out.input[0], target=out.target[0], weight=out.weight[0])

    def wrap_batch(
        self,
        objects: torch.Tensor,
        weights: torch.Tensor,
        num_objects: torch.Tensor,
        inputs: torch.Tensor | None = None,
    ) -> TokenizedObjects:
        """Per row of ``[B, 5K]`` object tokens (targets), weights and optional other input tokens,
        the first ``5 * num_objects`` are the image's -> ``[B, 5K+1]``: ``START inputs PAD..`` /
        ``objects EOS PAD..`` / ``weights eos_weight 0..``."""
        inputs = objects if inputs is None else inputs
        b = objects.shape[0]
        length = (self.tokens_per_object * num_objects.to(objects.device))[:, None]  # [B, 1] EOS position
        position = torch.arange(objects.shape[1] + 1, device=objects.device)[None]  # [1, 5K+1]
        after, at_end = position > length, position == length
        pad = objects.new_full((b, 1), self.PAD)
        target = torch.cat([objects, pad], 1).masked_fill(at_end, self.EOS).masked_fill(after, self.PAD)
        seq_input = torch.cat([objects.new_full((b, 1), self.START), inputs], 1).masked_fill(after, self.PAD)
        weight = torch.cat([weights.float().to(objects.device), weights.new_zeros(b, 1).float()], 1)
        weight = weight.masked_fill(at_end, self.eos_weight).masked_fill(after, 0.0)
        return TokenizedObjects(input=seq_input, target=target, weight=weight)

    # ---- decoding ------------------------------------------------------------------------
    def decode(
        self,
        tokens: torch.Tensor,
        token_logprobs: torch.Tensor,
        class_logprobs: torch.Tensor,
        image_sizes: torch.Tensor,
        score: str = "class",
        constrained: bool = True,
        coord_tokens: torch.Tensor | None = None,
    ) -> DecodedObjects:
        """Generated tokens -> boxes, classes and scores, for a batch, without per-object loops.

        Args:
            tokens: int64 ``[N, 5K]`` generated tokens (START not included).
            token_logprobs: float ``[N, 5K]`` log-probability of each generated token.
            class_logprobs: float ``[N, >=K, R]`` log-probabilities (full-vocabulary softmax) of the
                class range's tokens at each class slot.
            image_sizes: ``[N, 2]`` (height, width) of the images the boxes are in pixels of.
            score: "class" (probability of the reported class) or "class_x_coords" (times the
                probabilities of the object's four coordinate tokens).
            constrained: True (grammar-constrained decoding): an object is valid when its slots hold
                coordinates and a dataset (or noise) class before any EOS, and the reported class
                is the most likely dataset class. False (decoding as the peers do, no grammar):
                every object slot counts, coordinate tokens are clamped into the bin range, and the
                class is the argmax over the whole class range: valid only if that is a dataset class.
            coord_tokens: int64 ``[N, K, 4]`` coordinate tokens to read boxes from instead of the
                generated ones (e.g. the per-slot most likely coordinate).
        """
        if score not in SCORE_MODES:
            raise ValueError(f"unknown score mode {score!r}; known: {SCORE_MODES}")
        tpo, cs = self.tokens_per_object, self.class_slot
        n, length = tokens.shape
        k = length // tpo
        objs = tokens[:, : k * tpo].reshape(n, k, tpo)
        logprobs = token_logprobs[:, : k * tpo].reshape(n, k, tpo)
        coords = objs[..., :cs] if coord_tokens is None else coord_tokens[:, :k]

        range_logprobs = class_logprobs[:, :k]  # [N, K, R]
        lookup = self.class_of_range_index.to(tokens.device)
        if constrained:
            lo, hi = self.coord_token_range()
            coords_ok = ((coords >= lo) & (coords < hi)).all(-1)
            class_ok = torch.isin(objs[..., cs], self.class_tokens.to(tokens.device)) | (objs[..., cs] == self.NOISE)
            # An object counts only if no EOS appeared at or before any of its tokens.
            eos_seen = (tokens[:, : k * tpo] == self.EOS).cumsum(-1).reshape(n, k, tpo)[..., -1] > 0
            in_dataset = (lookup >= 0).nonzero()[:, 0]  # range indices of the dataset classes
            class_logprob, best = range_logprobs[..., in_dataset].max(-1)
            classes = lookup[in_dataset][best]
            valid = coords_ok & class_ok & ~eos_seen
        else:
            class_logprob, range_index = range_logprobs.max(-1)
            classes = lookup[range_index]
            valid = classes >= 0

        bins = (coords - self.layout.coord_base).clamp(0, self.num_bins - 1)
        values = self.dequantize(bins)  # [N, K, 4] in slot order
        xyxy = values[..., list(self.slot_axes)]  # slot_axes is its own inverse for both orders
        xyxy = xyxy * self._coordinate_scale(image_sizes.reshape(n, 2), values)  # pixels
        x0, y0, x1, y1 = xyxy.unbind(-1)
        corners = [torch.minimum(x0, x1), torch.minimum(y0, y1), torch.maximum(x0, x1), torch.maximum(y0, y1)]
        boxes = torch.stack(corners, -1)
        if score == "class_x_coords":
            class_logprob = class_logprob + logprobs[..., :cs].sum(-1)
        classes = torch.where(valid, classes, torch.full_like(classes, -1))
        scores = torch.where(valid, class_logprob.exp(), torch.zeros_like(class_logprob))
        return DecodedObjects(boxes=boxes, classes=classes, scores=scores, valid=valid)
