"""The rule table of the start-up config checks: each numeric or enumerated key, its allowed values, and why.

:data:`RULES` lists one :class:`Rule` per key (a :class:`Range`, :class:`Each`, :class:`OneOf` or
:class:`Boolean` spec, when it applies, whether only in training, whether only a warning). The
checks of :mod:`pix2seq_d2.config.checks` evaluate it first; each failing rule names the key, its
value and the allowed range. :func:`rule_table` lists it for documentation. Settings that depend on
each other, the datasets and the schedule are checked in :mod:`pix2seq_d2.config.checks`.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from detectron2.config import CfgNode

from pix2seq_d2.data.image_io import IMAGE_FORMATS
from pix2seq_d2.data.transforms import TEST_RESIZES
from pix2seq_d2.evaluation.coco_evaluation import BACKEND_CHOICES
from pix2seq_d2.modeling.backbone.resnet import STEM_POOL_PADDINGS
from pix2seq_d2.modeling.meta_arch.pix2seq import INPUT_PROJECTIONS, POSITION_ENCODINGS
from pix2seq_d2.modeling.transformer import ACTIVATIONS
from pix2seq_d2.solver.precision import PRECISIONS
from pix2seq_d2.tasks.detection import SCORE_MODES
from pix2seq_d2.tasks.sequence_augmentation import CLASS_CORRUPTIONS
from pix2seq_d2.tasks.training_sequences import OBJECT_ORDERS
from pix2seq_d2.tasks.vocabulary import VOCABULARY_LAYOUT_REGISTRY

from .problems import Problem

__all__ = [
    "RULES",
    "Boolean",
    "Condition",
    "Each",
    "OneOf",
    "Range",
    "Rule",
    "Spec",
    "rule_table",
]

SMALL_RESNET_BACKBONE = "build_small_resnet_backbone"
VIT_BACKBONE = "build_pix2seq_vit_backbone"
PIX2SEQ_RESNET_BACKBONE = "build_pix2seq_resnet_backbone"


# ---- value specs --------------------------------------------------------------------------------
def _fmt(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else str(x)


@dataclass(frozen=True)
class Range:
    """A number (or integer) between optional bounds."""

    integer: bool = False
    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False
    hi_open: bool = False
    finite: bool = True

    def accepts(self, value: Any) -> bool:
        kind = numbers.Integral if self.integer else numbers.Real
        if isinstance(value, bool) or not isinstance(value, kind) or math.isnan(value):
            return False
        if self.finite and not math.isfinite(value):
            return False
        if self.lo is not None and (value <= self.lo if self.lo_open else value < self.lo):
            return False
        return not (self.hi is not None and (value >= self.hi if self.hi_open else value > self.hi))

    def describe(self) -> str:
        what = "an integer" if self.integer else "a finite number" if self.finite else "a number"
        if self.lo is not None and self.hi is not None:
            left, right = "(" if self.lo_open else "[", ")" if self.hi_open else "]"
            return f"{what} in {left}{_fmt(self.lo)}, {_fmt(self.hi)}{right}"
        if self.lo is not None:
            return f"{what} {'>' if self.lo_open else '>='} {_fmt(self.lo)}"
        if self.hi is not None:
            return f"{what} {'<' if self.hi_open else '<='} {_fmt(self.hi)}"
        return what


@dataclass(frozen=True)
class Each:
    """A list or tuple whose entries all satisfy ``entry``: exactly ``length`` of them, or at least ``min_len``."""

    entry: Range
    length: int | None = None
    min_len: int = 0

    def accepts(self, value: Any) -> bool:
        if not isinstance(value, (list, tuple)):
            return False
        if (self.length is not None and len(value) != self.length) or len(value) < self.min_len:
            return False
        return all(self.entry.accepts(v) for v in value)

    def describe(self) -> str:
        if self.length is not None:
            count = f"{self.length} entries"
        elif self.min_len:
            count = f"at least {self.min_len} entr{'y' if self.min_len == 1 else 'ies'}"
        else:
            count = "entries"
        return f"a list of {count}, each {self.entry.describe()}"


@dataclass(frozen=True)
class OneOf:
    """One of a fixed set of values (``choices`` may be a function, for registries that grow)."""

    choices: tuple | Callable[[], Iterable]
    upper: bool = False  # compare str.upper() of the value

    def values(self) -> tuple:
        return tuple(self.choices()) if callable(self.choices) else tuple(self.choices)

    def accepts(self, value: Any) -> bool:
        if self.upper and isinstance(value, str):
            value = value.upper()
        try:
            return value in self.values()
        except TypeError:  # unhashable
            return False

    def describe(self) -> str:
        return "one of " + ", ".join(repr(v) for v in self.values())


@dataclass(frozen=True)
class Boolean:
    def accepts(self, value: Any) -> bool:
        return isinstance(value, bool)

    def describe(self) -> str:
        return "True or False"


Spec = Range | Each | OneOf | Boolean


_MISSING = object()


def _get(cfg: CfgNode, key: str) -> Any:
    node: Any = cfg
    for part in key.split("."):
        if not isinstance(node, CfgNode) or part not in node:
            return _MISSING
        node = node[part]
    return node


@dataclass(frozen=True)
class Condition:
    """When a rule applies: ``test(cfg)``, and the same in words (``text``) for the documentation."""

    text: str
    test: Callable[[CfgNode], bool]

    def __call__(self, cfg: CfgNode) -> bool:
        return self.test(cfg)


def _is(key: str, *values: Any) -> Condition:
    return Condition(f"{key} is {' or '.join(map(repr, values))}", lambda cfg: _get(cfg, key) in values)


def _on(key: str) -> Condition:
    return Condition(f"{key} is True", lambda cfg: _get(cfg, key) is True)


def _off(key: str) -> Condition:
    return Condition(f"{key} is False", lambda cfg: _get(cfg, key) is not True)


def _all(*conditions: Condition) -> Condition:
    return Condition(" and ".join(c.text for c in conditions), lambda cfg: all(c(cfg) for c in conditions))


@dataclass(frozen=True)
class Rule:
    """One row of :data:`RULES`: ``key`` must satisfy ``spec`` (when ``when(cfg)``; in training
    only if ``training_only``). A ``warning`` rule logs instead of stopping."""

    key: str
    spec: Spec
    why: str
    when: Condition | None = None
    training_only: bool = False
    warning: bool = False


def _int(lo: float | None = None, hi: float | None = None) -> Range:
    return Range(integer=True, lo=lo, hi=hi)


def _num(lo: float | None = None, hi: float | None = None, lo_open: bool = False, hi_open: bool = False) -> Range:
    return Range(lo=lo, hi=hi, lo_open=lo_open, hi_open=hi_open)


_POSITIVE = _num(0, lo_open=True)
_FRACTION = _num(0, 1, hi_open=True)  # [0, 1)
PIX2SEQ = "MODEL.PIX2SEQ."  # the prefix of the Pix2Seq keys


def _layouts() -> list[str]:
    return sorted(name for name, _ in VOCABULARY_LAYOUT_REGISTRY)


# fmt: off
RULES: tuple[Rule, ...] = (
    # ---- MODEL.PIX2SEQ: vocabulary and sequences ----
    Rule(PIX2SEQ + "NUM_CLASSES", _int(0), "dataset classes = len(thing_classes); 0: derived from DATASETS.TRAIN[0]"),
    Rule(PIX2SEQ + "NUM_BINS", _int(2), "coordinate quantisation bins"),
    Rule(PIX2SEQ + "TOKENIZER.LAYOUT", OneOf(_layouts), "vocabulary layout (VOCABULARY_LAYOUT_REGISTRY)"),
    Rule(PIX2SEQ + "TOKENIZER.CATEGORY_IDS", Each(_int(0)), "dataset category id of each contiguous class"),
    Rule(PIX2SEQ + "TOKENIZER.COORD_NORMALIZER", _int(0), "pixels coordinates are fractions of; 0: the image's size"),
    Rule(PIX2SEQ + "MAX_OBJECTS", _int(1), "objects per training sequence; 0 leaves only EOS to learn",
         training_only=True),
    Rule(PIX2SEQ + "MAX_OBJECTS_TEST", _int(1), "objects decoded per image"),
    Rule(PIX2SEQ + "OBJECT_ORDER", OneOf(tuple(OBJECT_ORDERS)), "order of the objects in a sequence"),
    Rule(PIX2SEQ + "MAX_SEQ_LEN", _int(0), "rows of the learned decoder positions; 0: sized from MAX_OBJECTS*"),
    Rule(PIX2SEQ + "EOS_WEIGHT", _num(0), "loss weight of the EOS target", training_only=True),
    # ---- sequence augmentation (training) ----
    Rule(PIX2SEQ + "SEQ_AUG.ENABLED", Boolean(), "sequence augmentation on/off"),
    Rule(PIX2SEQ + "SEQ_AUG.NOISE_CLASS_WEIGHT", _num(0), "loss weight of a noise object's class target",
         when=_on(PIX2SEQ + "SEQ_AUG.ENABLED"), training_only=True),
    Rule(PIX2SEQ + "SEQ_AUG.CLASS_CORRUPTION", OneOf(CLASS_CORRUPTIONS), "input class corruption",
         when=_on(PIX2SEQ + "SEQ_AUG.ENABLED"), training_only=True),
    Rule(PIX2SEQ + "SEQ_AUG.JITTER", _num(0), "noise-box edge shift, in box sizes",
         when=_on(PIX2SEQ + "SEQ_AUG.ENABLED"), training_only=True),
    Rule(PIX2SEQ + "SEQ_AUG.DUPLICATE_JITTER", _num(0), "duplicate-box edge shift, in box sizes",
         when=_on(PIX2SEQ + "SEQ_AUG.ENABLED"), training_only=True),
    # ---- transformer ----
    Rule(PIX2SEQ + "INPUT_PROJ", OneOf(INPUT_PROJECTIONS), "backbone feature -> encoder width"),
    Rule(PIX2SEQ + "POSITION_ENCODING", OneOf(POSITION_ENCODINGS), "image position encoding"),
    Rule(PIX2SEQ + "USE_PADDING_MASK", Boolean(), "mask batch padding"),
    Rule(PIX2SEQ + "PAD_TO_SQUARE", _int(0), "square canvas images are padded to; 0: none"),
    Rule(PIX2SEQ + "PAD_VALUE", _num(), "value of padded pixels"),
    Rule(PIX2SEQ + "HIDDEN_DIM", _int(1), "encoder width"),
    Rule(PIX2SEQ + "NUM_HEADS", _int(1), "attention heads; the width is split among them"),
    Rule(PIX2SEQ + "ENC_LAYERS", _int(0), "encoder layers"),
    Rule(PIX2SEQ + "DEC_LAYERS", _int(1), "decoder layers"),
    Rule(PIX2SEQ + "DIM_FEEDFORWARD", _int(1), "feed-forward width"),
    Rule(PIX2SEQ + "DEC_HIDDEN_DIM", _int(0), "decoder width; 0: HIDDEN_DIM"),
    Rule(PIX2SEQ + "DEC_NUM_HEADS", _int(0), "decoder attention heads; 0: NUM_HEADS"),
    Rule(PIX2SEQ + "DEC_DIM_FEEDFORWARD", _int(0), "decoder feed-forward width; 0: DIM_FEEDFORWARD"),
    Rule(PIX2SEQ + "MEMORY_PROJECTION", Boolean(), "the official encoder -> decoder block"),
    Rule(PIX2SEQ + "ACTIVATION", OneOf(tuple(ACTIVATIONS)), "feed-forward activation"),
    Rule(PIX2SEQ + "LAYER_NORM_EPS", _POSITIVE, "LayerNorm epsilon"),
    Rule(PIX2SEQ + "DECODER_POSITIONS", OneOf(("learned", "none")), "decoder position embedding"),
    Rule(PIX2SEQ + "DROPOUT", _FRACTION, "dropout probability; 1 drops everything"),
    Rule(PIX2SEQ + "DROP_PATH", _FRACTION, "stochastic-depth probability; 1 drops every branch"),
    Rule(PIX2SEQ + "PRE_NORM", Boolean(), "pre-norm layers"),
    Rule(PIX2SEQ + "SHARE_EMBEDDING", Boolean(), "tie output projection and token embedding"),
    # ---- decoding (DecodingOptions checks the ranges of DECODE.*; these are the types) ----
    Rule(PIX2SEQ + "SCORE_THRESH_TEST", _num(0, 1),
         "detections scoring below it are dropped (scores are probabilities)"),
    Rule(PIX2SEQ + "DECODE.TEMPERATURE", _num(), "sampling temperature"),
    Rule(PIX2SEQ + "DECODE.TOP_K", _int(), "sampling: top-k"),
    Rule(PIX2SEQ + "DECODE.TOP_P", _num(), "sampling: nucleus probability"),
    Rule(PIX2SEQ + "DECODE.SEED", _int(), "sampling seed"),
    Rule(PIX2SEQ + "DECODE.BEAM_SIZE", _int(), "beam width"),
    Rule(PIX2SEQ + "DECODE.LENGTH_PENALTY", _num(), "beam length penalty"),
    Rule(PIX2SEQ + "DECODE.STOP_AT_EOS", Boolean(), "stop at EOS"),
    Rule(PIX2SEQ + "DECODE.ALLOW_NOISE_CLASS", Boolean(), "class slots may emit the noise class"),
    Rule(PIX2SEQ + "DECODE.GRAMMAR", Boolean(), "grammar-constrained decoding"),
    Rule(PIX2SEQ + "DECODE.SCORE", OneOf(SCORE_MODES), "detection score"),
    # ---- backbones ----
    Rule("MODEL.PIXEL_MEAN", Each(_num(), length=3), "per-channel mean of the 3-channel (BGR/RGB) input"),
    Rule("MODEL.PIXEL_STD", Each(_num(), length=3), "per-channel std of the 3-channel (BGR/RGB) input"),
    Rule("MODEL.PIXEL_STD", Each(_POSITIVE), "pixels are divided by it: 0 gives infinite inputs and a non-finite loss",
         warning=True),
    Rule("MODEL.SMALL_RESNET.STEM_OUT_CHANNELS", _int(1), "stem channels",
         when=_is("MODEL.BACKBONE.NAME", SMALL_RESNET_BACKBONE)),
    Rule("MODEL.SMALL_RESNET.WIDTHS", Each(_int(1), length=4), "channels of res2..res5",
         when=_is("MODEL.BACKBONE.NAME", SMALL_RESNET_BACKBONE)),
    Rule("MODEL.SMALL_RESNET.DEPTHS", Each(_int(1), length=4), "blocks of res2..res5",
         when=_is("MODEL.BACKBONE.NAME", SMALL_RESNET_BACKBONE)),
    Rule("MODEL.RESNETS.STEM_POOL_PADDING", OneOf(STEM_POOL_PADDINGS), "stem max-pool padding",
         when=_is("MODEL.BACKBONE.NAME", PIX2SEQ_RESNET_BACKBONE)),
    Rule("MODEL.VIT.PATCH_SIZE", _int(1), "ViT patch size", when=_is("MODEL.BACKBONE.NAME", VIT_BACKBONE)),
    Rule("MODEL.VIT.EMBED_DIM", _int(1), "ViT width", when=_is("MODEL.BACKBONE.NAME", VIT_BACKBONE)),
    Rule("MODEL.VIT.DEPTH", _int(0), "ViT layers", when=_is("MODEL.BACKBONE.NAME", VIT_BACKBONE)),
    Rule("MODEL.VIT.NUM_HEADS", _int(1), "ViT attention heads", when=_is("MODEL.BACKBONE.NAME", VIT_BACKBONE)),
    Rule("MODEL.VIT.MLP_DIM", _int(1), "ViT feed-forward width", when=_is("MODEL.BACKBONE.NAME", VIT_BACKBONE)),
    Rule("MODEL.VIT.DROP_PATH", _FRACTION, "ViT stochastic depth", when=_is("MODEL.BACKBONE.NAME", VIT_BACKBONE)),
    Rule("MODEL.VIT.LAYER_NORM_EPS", _POSITIVE, "ViT LayerNorm epsilon", when=_is("MODEL.BACKBONE.NAME", VIT_BACKBONE)),
    Rule("MODEL.EMA.ENABLED", Boolean(), "weight EMA on/off"),
    Rule("MODEL.EMA.DECAY", _FRACTION, "EMA decay per step", when=_on("MODEL.EMA.ENABLED"), training_only=True),
    # ---- solver (training) ----
    Rule("SOLVER.MAX_ITER", _int(1), "training iterations", training_only=True),
    Rule("SOLVER.BASE_LR", _POSITIVE, "learning rate; 0 trains nothing", training_only=True),
    Rule("SOLVER.IMS_PER_BATCH", _int(1), "images per step, all workers together", training_only=True),
    Rule("SOLVER.REFERENCE_WORLD_SIZE", _int(0), "workers the schedule is written for; 0: no auto-scaling",
         training_only=True),
    Rule("SOLVER.CHECKPOINT_PERIOD", _int(1), "iterations between checkpoints; 0 divides by zero", training_only=True),
    Rule("SOLVER.WARMUP_ITERS", _int(0), "warmup iterations", training_only=True),
    Rule("SOLVER.WARMUP_FACTOR", _num(0, 1, lo_open=True), "learning rate at the start of warmup, x BASE_LR",
         training_only=True),
    Rule("SOLVER.WARMUP_METHOD", OneOf(("linear", "constant")), "warmup shape", training_only=True),
    Rule("SOLVER.END_LR_FACTOR", _num(0, 1), "learning rate at the end of the linear decay, x BASE_LR",
         when=_is("SOLVER.LR_SCHEDULER_NAME", "WarmupLinearDecayLR"), training_only=True),
    Rule("SOLVER.GAMMA", _POSITIVE, "learning-rate factor per step",
         when=_is("SOLVER.LR_SCHEDULER_NAME", "WarmupMultiStepLR", "WarmupStepWithFixedGammaLR"), training_only=True),
    Rule("SOLVER.STEPS", Each(_int(1)), "iterations where the learning rate drops",
         when=_is("SOLVER.LR_SCHEDULER_NAME", "WarmupMultiStepLR"), training_only=True),
    Rule("SOLVER.NUM_DECAYS", _int(1), "learning-rate drops",
         when=_is("SOLVER.LR_SCHEDULER_NAME", "WarmupStepWithFixedGammaLR"), training_only=True),
    Rule("SOLVER.OPTIMIZER", OneOf(("ADAMW",), upper=True), "Pix2Seq trains with AdamW", training_only=True),
    Rule("SOLVER.BETAS", Each(_FRACTION, length=2), "AdamW's (beta1, beta2)", training_only=True),
    Rule("SOLVER.WEIGHT_DECAY", _num(0), "AdamW weight decay", training_only=True),
    Rule("SOLVER.CLIP_GRADIENTS.ENABLED", Boolean(), "gradient clipping on/off", training_only=True),
    Rule("SOLVER.CLIP_GRADIENTS.CLIP_TYPE", OneOf(("value", "norm", "full_model")), "gradient clipping kind",
         when=_on("SOLVER.CLIP_GRADIENTS.ENABLED"), training_only=True),
    Rule("SOLVER.CLIP_GRADIENTS.CLIP_VALUE", _POSITIVE, "gradient clipping threshold",
         when=_on("SOLVER.CLIP_GRADIENTS.ENABLED"), training_only=True),
    Rule("SOLVER.CLIP_GRADIENTS.NORM_TYPE", Range(lo=0, lo_open=True, finite=False), "p of the clipped p-norm",
         when=_all(_on("SOLVER.CLIP_GRADIENTS.ENABLED"), _is("SOLVER.CLIP_GRADIENTS.CLIP_TYPE", "norm")),
         training_only=True),
    Rule("SOLVER.AMP.ENABLED", Boolean(), "mixed precision on/off", training_only=True),
    Rule("SOLVER.AMP.PRECISION", OneOf(("auto", *PRECISIONS)), "autocast dtype", when=_on("SOLVER.AMP.ENABLED"),
         training_only=True),
    Rule("SEED", _int(), "random seed; < 0: drawn at start"),
    # ---- test ----
    Rule("TEST.EVAL_PERIOD", _int(0), "iterations between evaluations; 0: only at the end", training_only=True),
    Rule("TEST.DETECTIONS_PER_IMAGE", _int(1), "detections returned per image"),
    Rule("TEST.COCO_EVAL_BACKEND", OneOf(BACKEND_CHOICES), "COCO API of the evaluation"),
    Rule("TEST.SEQ_LIKELIHOOD", Boolean(), "evaluate the sequence likelihood"),
    # ---- data ----
    Rule("DATALOADER.NUM_WORKERS", _int(0), "data-loading processes; 0: the main process"),
    Rule("DATALOADER.ASPECT_RATIO_GROUPING", Boolean(), "batch images of like aspect ratio", training_only=True),
    Rule("DATALOADER.FILTER_EMPTY_ANNOTATIONS", Boolean(), "drop training images without objects",
         training_only=True),
    Rule("DATALOADER.REPEAT_THRESHOLD", _num(0), "repeat-factor sampling threshold",
         when=_is("DATALOADER.SAMPLER_TRAIN", "RepeatFactorTrainingSampler"), training_only=True),
    Rule("INPUT.FORMAT", OneOf(IMAGE_FORMATS), "channel order of the model's images"),
    Rule("INPUT.MIN_SIZE_TRAIN", Each(_int(1), min_len=1), "shortest side of training images",
         when=_off("INPUT.LSJ.ENABLED"), training_only=True),
    Rule("INPUT.MIN_SIZE_TRAIN_SAMPLING", OneOf(("choice", "range")), "how MIN_SIZE_TRAIN is drawn",
         when=_off("INPUT.LSJ.ENABLED"), training_only=True),
    Rule("INPUT.MAX_SIZE_TRAIN", _int(1), "longest side of training images; 0 would resize them to nothing",
         when=_off("INPUT.LSJ.ENABLED"), training_only=True),
    Rule("INPUT.RANDOM_FLIP", OneOf(("none", "horizontal", "vertical")), "training flip", training_only=True),
    Rule("INPUT.RESIZE_TEST", OneOf(TEST_RESIZES), "test-time resize"),
    Rule("INPUT.MIN_SIZE_TEST", _int(0), "shortest side of test images; 0: no resize",
         when=_is("INPUT.RESIZE_TEST", "shortest_edge")),
    Rule("INPUT.MAX_SIZE_TEST", _int(1), "longest side of test images; 0 would resize them to nothing"),
    Rule("INPUT.LSJ.ENABLED", Boolean(), "large-scale jitter on/off", training_only=True),
    Rule("INPUT.LSJ.IMAGE_SIZE", _int(), "LSJ output size", when=_on("INPUT.LSJ.ENABLED"), training_only=True),
    Rule("INPUT.LSJ.MIN_SCALE", _num(), "LSJ smallest scale", when=_on("INPUT.LSJ.ENABLED"), training_only=True),
    Rule("INPUT.LSJ.MAX_SCALE", _num(), "LSJ largest scale", when=_on("INPUT.LSJ.ENABLED"), training_only=True),
    Rule("INPUT.COLOR_JITTER.ENABLED", Boolean(), "colour jitter on/off", training_only=True),
    *(Rule(f"INPUT.COLOR_JITTER.{k}", _num(), "colour jitter strength", when=_on("INPUT.COLOR_JITTER.ENABLED"),
           training_only=True) for k in ("BRIGHTNESS", "CONTRAST", "SATURATION", "HUE")),
    Rule("INPUT.MULTI_CROP.NUM_VIEWS", _int(1), "augmented views per training image", training_only=True),
)
# fmt: on


# ---- checking the table --------------------------------------------------------------------------
def table_problems(cfg: CfgNode, for_training: bool) -> list[Problem]:
    problems = []
    for rule in RULES:
        if rule.training_only and not for_training:
            continue
        value = _get(cfg, rule.key)
        if value is _MISSING:
            continue
        try:
            if rule.when is not None and not rule.when(cfg):
                continue
        except Exception:  # the condition's own key is invalid: that key's rule reports it
            continue
        if rule.spec.accepts(value):
            continue
        text = f"{rule.key} = {value!r}: must be {rule.spec.describe()} ({rule.why})"
        problems.append(Problem(text, warning=rule.warning, key=rule.key))
    return problems


def rule_table() -> list[dict[str, str]]:
    """:data:`RULES` as rows, for documentation: ``key``, ``allowed``, ``why``, ``scope`` ("always" or
    "training", plus ", warning" for a rule that only warns) and ``when`` (the rule's condition in words;
    "" when it always applies)."""
    return [
        {"key": r.key, "allowed": r.spec.describe(), "why": r.why,
         "scope": ("training" if r.training_only else "always") + (", warning" if r.warning else ""),
         "when": r.when.text if r.when is not None else ""}
        for r in RULES
    ]  # fmt: skip
