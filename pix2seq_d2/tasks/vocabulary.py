"""The shared token space of every task: vocabulary layouts.

One vocabulary serves every task the decoder runs: special tokens (PAD, EOS, the task prompts, the
noise class), class tokens, coordinate bins (and, in later layouts, text). A layout says where each
kind of token lies and how coordinates are quantised; the tasks (:mod:`pix2seq_d2.tasks`) write their
sequences with these tokens. Three layouts are built in (``MODEL.PIX2SEQ.TOKENIZER.LAYOUT``;
``VOCABULARY_LAYOUT_REGISTRY`` takes more):

``pix2seq_d2`` (this project's; C dataset classes, B bins)::

    0 PAD, 1 EOS, 2 START (the detection prompt), 3 NOISE (the fake class of noise objects)
    4 .. 4+C-1        class tokens, one per contiguous dataset class id 0..C-1
    4+C .. 4+C+B-1    coordinate bins, ``ymin xmin ymax xmax`` order
    bin = floor(v * B) clamped to [0, B-1], read back at the bin centre (bin + 0.5) / B;
    v normalised by the image's own size (after augmentation, before batch padding)

``official`` (google-research/pix2seq; vocabulary 3000)::

    0 PAD = EOS, 10 START (the detection prompt), 30 NOISE, 100 + k: the class with dataset category
    id k, 1000 + b: coordinate bin b (B bins, 1000 for the released models), ``ymin xmin ymax xmax``;
    bin = round(v * (B-1)), read back as b / (B-1); v normalised by the padded square canvas

``pretrained_pix2seq`` (Pretrained-Pix2Seq; 2001 bins)::

    0..2000 coordinate bins, ``xmin ymin xmax ymax``; 2001 + k: class with category id k
    (k = 0..90); 2092 EOS; 2093 NOISE; START is an input-only token (its own embedding row
    2094); bin = floor(v * 2000), read back as b / 2000; v normalised by a fixed 1333 px
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from detectron2.utils.registry import Registry

__all__ = ["COORD_ORDERS", "VOCABULARY_LAYOUT_REGISTRY", "VocabularyLayout"]

COORD_ORDERS = {"yxyx": (1, 0, 3, 2), "xyxy": (0, 1, 2, 3)}  # slot -> index into (x0, y0, x1, y1)


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
    prompts: tuple[tuple[str, int], ...] = ()  # (task name, its prompt token); a task not listed: START

    def prompt(self, task: str) -> int:
        """The prompt token of ``task`` (START for a task the layout does not name)."""
        return dict(self.prompts).get(task, self.start)

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
        prompts=(("detection", 2),),
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
        # the multi-task release's prompts (vocab.py): detection, instance segmentation, keypoints, captioning
        prompts=(("detection", 10), ("instance_segmentation", 11), ("keypoints", 12), ("captioning", 13)),
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
        coord_order="xyxy", rounding="floor", bin_values="ends", prompts=(("detection", eos + 2),),
    )  # fmt: skip
