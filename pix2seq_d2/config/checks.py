"""Start-up checks on a Pix2Seq config: out-of-range settings stop with one clear error, before anything is built.

Without these checks a bad value fails late and far from its cause. ``SOLVER.CHECKPOINT_PERIOD 0``
or ``MODEL.PIX2SEQ.NUM_HEADS 0`` end in a bare ``ZeroDivisionError``. ``MAX_OBJECTS 0`` trains on
EOS-only sequences without a word. A ``NUM_CLASSES`` set to the largest category id trains to the
end and only crashes in the final evaluation. And detectron2's worker auto-scaling can turn a
3-iteration run into 24 iterations spent entirely in warmup. :func:`check_config` runs:

* the rule table :data:`~pix2seq_d2.config.rules.RULES` (:mod:`pix2seq_d2.config.rules`): each
  numeric or enumerated key, its allowed range, and what it is for. Each error names the key, its
  value and the allowed range;
* cross-key checks. Most call the validations the package already has (vocabulary layouts,
  ``DecodingOptions``, ``SequenceAugmentation``, ``ColorJitter``, the augmentation and LR-schedule
  builders) and pin their failures on config keys;
* the datasets (:func:`check_datasets`): ``NUM_CLASSES`` and ``TOKENIZER.CATEGORY_IDS`` are checked
  against the classes of ``DATASETS.TRAIN`` and ``DATASETS.TEST``. The classes come from the
  metadata, or failing that from the ``categories`` of the dataset's COCO json: no dataset is
  loaded;
* in training, the schedule after detectron2's auto-scaling (:func:`check_schedule`).

All errors are raised together as one :class:`ConfigError` (a ``ValueError``). Each warning is
logged once and returned. ``for_training=False`` (evaluation, demo, predictor) skips the
training-only checks.

:func:`resolve_auto_settings` fills in the "auto" value ``MODEL.PIX2SEQ.NUM_CLASSES: 0`` from
``DATASETS.TRAIN[0]``. For a vocabulary layout keyed by category ids, it also fills in an empty
``TOKENIZER.CATEGORY_IDS`` from the same dataset.
"""

from __future__ import annotations

import contextlib
import difflib
import functools
import json
import logging
import mmap
import numbers
import os
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from detectron2.config import CfgNode
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.engine import DefaultTrainer
from detectron2.utils import comm

from pix2seq_d2.data.transforms import ColorJitter, build_pix2seq_augmentation, build_test_resize
from pix2seq_d2.modeling.decoding import BOX_SOURCES, TOP_P_RULES, DecodingOptions
from pix2seq_d2.solver.build import build_lr_scheduler
from pix2seq_d2.tasks.sequence_augmentation import SequenceAugmentation
from pix2seq_d2.tasks.tokenizer import VOCABULARY_LAYOUT_REGISTRY, Pix2SeqTokenizer

from .defaults import IMAGE_FORMATS
from .rules import _P, _VIT, RULES, _Problem, _table_problems, rule_table
from .rules import Boolean as Boolean  # the rule table's names stay importable from here
from .rules import Each as Each
from .rules import OneOf as OneOf
from .rules import Range as Range
from .rules import Rule as Rule
from .rules import Spec as Spec

__all__ = [
    "ConfigError",
    "RULES",
    "check_config",
    "check_datasets",
    "check_schedule",
    "dataset_classes",
    "resolve_auto_settings",
    "rule_table",
    "with_auto_settings",
]

logger = logging.getLogger(__name__)

# The schedule warns when the learning rate stays below this fraction of SOLVER.BASE_LR for most of the run.
LOW_LR_FRACTION = 0.1
_LOGGED: set[str] = set()  # warnings already logged by this process


class ConfigError(ValueError):
    """One or more config settings that cannot work; ``problems`` holds one message per setting."""

    def __init__(self, problems: Sequence[str]):
        self.problems = list(problems)
        if len(self.problems) == 1:
            message = f"Invalid config: {self.problems[0]}"
        else:
            listed = "\n".join(f"  - {p}" for p in self.problems)
            message = f"Invalid config ({len(self.problems)} problems):\n{listed}"
        super().__init__(message)


# ---- problems ------------------------------------------------------------------------------------
def _n(x: float) -> str:
    """A setting's number for a message: integers in full, floats short."""
    return str(x) if isinstance(x, numbers.Integral) else f"{x:g}"


def _error(message: str) -> _Problem:
    return _Problem(message)


def _warning(message: str) -> _Problem:
    return _Problem(message, warning=True)


def _report(problems: Iterable[_Problem]) -> list[str]:
    """Raise a :class:`ConfigError` listing the errors; otherwise log each warning once; return the warnings."""
    problems = list(dict.fromkeys(problems))  # one message once
    errors = [p.message for p in problems if not p.warning]
    if errors:
        raise ConfigError(errors)
    warnings = [p.message for p in problems if p.warning]
    for message in warnings:
        if message not in _LOGGED:
            _LOGGED.add(message)
            logger.warning(message)
    return warnings


def _preview(values: Sequence[Any], limit: int = 10) -> str:
    shown = ", ".join(str(v) for v in list(values)[:limit])
    return f"[{shown}{', ...' if len(values) > limit else ''}]"


# ---- cross-key checks ----------------------------------------------------------------------------
def _auto_problems(cfg: CfgNode, for_training: bool) -> Iterator[_Problem]:
    if cfg.MODEL.PIX2SEQ.NUM_CLASSES == 0:
        yield _error(
            "MODEL.PIX2SEQ.NUM_CLASSES = 0 (auto: the number of classes of DATASETS.TRAIN[0]) was not resolved: "
            "call pix2seq_d2.config.checks.resolve_auto_settings(cfg) before cfg.freeze(), or set NUM_CLASSES"
        )


def _width_problems(cfg: CfgNode, for_training: bool) -> Iterator[_Problem]:
    p = cfg.MODEL.PIX2SEQ
    if p.HIDDEN_DIM % p.NUM_HEADS:
        yield _error(
            f"MODEL.PIX2SEQ.HIDDEN_DIM = {p.HIDDEN_DIM} is not divisible by MODEL.PIX2SEQ.NUM_HEADS = {p.NUM_HEADS}: "
            "every attention head gets HIDDEN_DIM / NUM_HEADS channels"
        )
    dec_dim, dec_heads = p.DEC_HIDDEN_DIM or p.HIDDEN_DIM, p.DEC_NUM_HEADS or p.NUM_HEADS
    if (p.DEC_HIDDEN_DIM or p.DEC_NUM_HEADS) and dec_dim % dec_heads:
        yield _error(
            f"the decoder width {dec_dim} (MODEL.PIX2SEQ.DEC_HIDDEN_DIM = {p.DEC_HIDDEN_DIM}, 0: HIDDEN_DIM) is not "
            f"divisible by its {dec_heads} heads (MODEL.PIX2SEQ.DEC_NUM_HEADS = {p.DEC_NUM_HEADS}, 0: NUM_HEADS)"
        )
    if p.POSITION_ENCODING != "none" and p.HIDDEN_DIM % 4:
        yield _error(
            f"MODEL.PIX2SEQ.HIDDEN_DIM = {p.HIDDEN_DIM} must be a multiple of 4 with POSITION_ENCODING "
            f"{p.POSITION_ENCODING!r} (2-D sin/cos positions: a quarter of the channels per axis and function)"
        )
    if p.INPUT_PROJ == "conv_gn" and p.HIDDEN_DIM % 32:
        yield _error(
            f"MODEL.PIX2SEQ.HIDDEN_DIM = {p.HIDDEN_DIM} must be a multiple of 32 with INPUT_PROJ 'conv_gn' "
            "(GroupNorm with 32 groups)"
        )
    if p.MEMORY_PROJECTION:
        if p.DIM_FEEDFORWARD < p.HIDDEN_DIM:
            yield _error(
                f"MODEL.PIX2SEQ.DIM_FEEDFORWARD = {p.DIM_FEEDFORWARD} must be >= HIDDEN_DIM = {p.HIDDEN_DIM} with "
                "MEMORY_PROJECTION (its MLP is the decoder width x DIM_FEEDFORWARD // HIDDEN_DIM wide)"
            )
        if dec_dim % 4:
            yield _error(
                f"the decoder width {dec_dim} (MODEL.PIX2SEQ.DEC_HIDDEN_DIM, 0: HIDDEN_DIM) must be a multiple of 4 "
                "with MEMORY_PROJECTION (it adds 2-D sin/cos positions)"
            )
    if cfg.MODEL.BACKBONE.NAME == _VIT:
        v = cfg.MODEL.VIT
        if v.EMBED_DIM % v.NUM_HEADS or v.EMBED_DIM % 4:
            yield _error(
                f"MODEL.VIT.EMBED_DIM = {v.EMBED_DIM} must be a multiple of MODEL.VIT.NUM_HEADS = {v.NUM_HEADS} "
                "(channels per head) and of 4 (2-D sin/cos positions)"
            )


def _tokenizer_problems(cfg: CfgNode, for_training: bool) -> Iterator[_Problem]:
    p = cfg.MODEL.PIX2SEQ
    if p.NUM_CLASSES == 0:  # "auto", unresolved: _auto_problems says so
        return
    try:
        tokenizer = Pix2SeqTokenizer.from_config(cfg)  # the layout's own validation
    except (ValueError, KeyError, IndexError) as e:
        yield _error(
            f"MODEL.PIX2SEQ.TOKENIZER.LAYOUT = {p.TOKENIZER.LAYOUT!r} with NUM_CLASSES = {p.NUM_CLASSES}, "
            f"NUM_BINS = {p.NUM_BINS}, TOKENIZER.CATEGORY_IDS = {_preview(p.TOKENIZER.CATEGORY_IDS)}: {e}"
        )
        return
    if p.MAX_SEQ_LEN and p.DECODER_POSITIONS == "learned":
        objects = max(p.MAX_OBJECTS, p.MAX_OBJECTS_TEST) if for_training else p.MAX_OBJECTS_TEST
        need = tokenizer.sequence_length(objects)
        if p.MAX_SEQ_LEN < need:
            which = "max(MAX_OBJECTS, MAX_OBJECTS_TEST)" if for_training else "MAX_OBJECTS_TEST"
            yield _error(
                f"MODEL.PIX2SEQ.MAX_SEQ_LEN = {p.MAX_SEQ_LEN}: must be 0 (sized automatically) or >= {need}, the "
                f"decoder positions of {objects} objects ({which}) plus START"
            )


def _probe(build: Callable[..., Any], fields: dict[str, tuple[str, Any]], allowed: dict[str, str],
           fixed: dict[str, Any] | None = None) -> list[_Problem]:  # fmt: skip
    """Run an existing validation (``build(**fixed, **values)``); if it fails, try each field alone
    (the others at their defaults) to name the key(s) at fault, with ``allowed[field]`` or the
    validation's own message as the allowed range."""
    fixed = fixed or {}
    errors = (ValueError, TypeError, AssertionError, KeyError)
    try:
        build(**fixed, **{field: value for field, (_, value) in fields.items()})
        return []
    except errors as e:
        failure = e
    problems = []
    for field, (key, value) in fields.items():
        try:
            build(**fixed, **{field: value})
        except errors as e:
            problems.append(_error(f"{key} = {value!r}: {allowed.get(field) or e}"))
    if problems:
        return problems
    together = ", ".join(f"{key} = {value!r}" for key, value in fields.values())
    return [_error(f"{together}: {failure}")]


def _decoding_problems(cfg: CfgNode, for_training: bool) -> list[_Problem]:
    d = cfg.MODEL.PIX2SEQ.DECODE
    keys = {
        "strategy": "STRATEGY", "temperature": "TEMPERATURE", "top_k": "TOP_K", "top_p": "TOP_P",
        "beam_size": "BEAM_SIZE", "length_penalty": "LENGTH_PENALTY", "top_p_rule": "TOP_P_RULE",
        "box_from": "BOX_FROM",
    }  # fmt: skip
    fields = {field: (f"MODEL.PIX2SEQ.DECODE.{key}", d[key]) for field, key in keys.items()}
    rule = d.TOP_P_RULE if d.TOP_P_RULE in TOP_P_RULES else "at_least"
    allowed = {
        "temperature": "must be a number >= 0 (0: greedy)",
        "top_k": "must be an integer >= 0 (0: no limit)",
        "top_p": f"must be a number in {'[0, 1]' if rule == 'at_most' else '(0, 1]'} with TOP_P_RULE {rule!r}",
        "beam_size": "must be an integer >= 1",
        "top_p_rule": f"must be one of {', '.join(map(repr, TOP_P_RULES))}",
        "box_from": f"must be one of {', '.join(map(repr, BOX_SOURCES))}",
    }

    def build(**kwargs: Any) -> DecodingOptions:
        if "top_p" in kwargs:  # the nucleus range depends on the rule
            kwargs.setdefault("top_p_rule", rule)
        return DecodingOptions(**kwargs)

    return _probe(build, fields, allowed)


def _sequence_augmentation_problems(cfg: CfgNode, for_training: bool) -> list[_Problem]:
    p = cfg.MODEL.PIX2SEQ
    if not (for_training and p.SEQ_AUG.ENABLED):
        return []
    s = p.SEQ_AUG
    fields = {
        "max_objects": (_P + "MAX_OBJECTS", p.MAX_OBJECTS),
        "noise_class_weight": (_P + "SEQ_AUG.NOISE_CLASS_WEIGHT", s.NOISE_CLASS_WEIGHT),
        "class_corruption": (_P + "SEQ_AUG.CLASS_CORRUPTION", s.CLASS_CORRUPTION),
        "jitter": (_P + "SEQ_AUG.JITTER", s.JITTER),
        "duplicate_jitter": (_P + "SEQ_AUG.DUPLICATE_JITTER", s.DUPLICATE_JITTER),
    }

    def build(max_objects: int = 1, **kwargs: Any) -> SequenceAugmentation:
        return SequenceAugmentation(max_objects, **kwargs)

    return _probe(build, fields, {})


def _augmentation_problems(cfg: CfgNode, for_training: bool) -> list[_Problem]:
    problems = []
    if for_training:
        c = cfg.INPUT.COLOR_JITTER
        if c.ENABLED:
            fields = {name.lower(): (f"INPUT.COLOR_JITTER.{name}", c[name]) for name in
                      ("BRIGHTNESS", "CONTRAST", "SATURATION", "HUE")}  # fmt: skip
            problems += _probe(ColorJitter, fields, {}, fixed={"image_format": IMAGE_FORMATS[0]})
        if not problems:
            try:
                build_pix2seq_augmentation(cfg, is_train=True)
            except (ValueError, AssertionError, TypeError) as e:
                i = cfg.INPUT
                keys = "" if i.LSJ.ENABLED else (
                    f" INPUT.MIN_SIZE_TRAIN = {i.MIN_SIZE_TRAIN!r} with MIN_SIZE_TRAIN_SAMPLING = "
                    f"{i.MIN_SIZE_TRAIN_SAMPLING!r} and MAX_SIZE_TRAIN = {i.MAX_SIZE_TRAIN!r}:"
                )  # fmt: skip
                problems.append(_error(f"INPUT (training augmentation):{keys} {e}"))
    try:
        build_test_resize(cfg)
    except (ValueError, AssertionError, TypeError) as e:
        problems.append(_error(f"INPUT.RESIZE_TEST = {cfg.INPUT.RESIZE_TEST!r}: {e}"))
    return problems


def _canvas_problems(cfg: CfgNode, for_training: bool) -> Iterator[_Problem]:
    """Images must fit ``PAD_TO_SQUARE`` (the model refuses bigger ones at the first batch)."""
    square = cfg.MODEL.PIX2SEQ.PAD_TO_SQUARE
    if not square:
        return
    i = cfg.INPUT
    sizes = [("INPUT.MAX_SIZE_TEST", i.MAX_SIZE_TEST)]
    if for_training:
        sizes.append(
            ("INPUT.LSJ.IMAGE_SIZE", i.LSJ.IMAGE_SIZE) if i.LSJ.ENABLED else ("INPUT.MAX_SIZE_TRAIN", i.MAX_SIZE_TRAIN)
        )
    for key, size in sizes:
        if size > square:
            yield _error(
                f"{key} = {size} exceeds MODEL.PIX2SEQ.PAD_TO_SQUARE = {square}: images are resized to a longest "
                f"side of up to {size} px and would not fit the square canvas; make {key} at most {square}"
            )
    if i.RESIZE_TEST == "shortest_edge" and i.MIN_SIZE_TEST == 0:
        yield _warning(
            f"INPUT.MIN_SIZE_TEST = 0 leaves test images unresized, but MODEL.PIX2SEQ.PAD_TO_SQUARE = {square} "
            "refuses images larger than the square"
        )


# ---- datasets ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class DatasetClasses:
    """The classes of a registered dataset, as detectron2 will number them."""

    name: str
    classes: tuple[str, ...]  # thing_classes: the name of each contiguous class 0..C-1
    category_ids: tuple[int, ...] | None  # the dataset category id of each contiguous class (None: unknown)
    source: str  # "metadata" or the COCO json file the categories were read from


_CATEGORIES = re.compile(rb'"categories"\s*:\s*\[')


def _decode_array(buffer: mmap.mmap, start: int) -> Any:
    window = 1 << 16
    decoder = json.JSONDecoder()
    while True:
        chunk = buffer[start : start + window].decode("utf-8", errors="replace")
        try:
            return decoder.raw_decode(chunk)[0]
        except json.JSONDecodeError:
            if start + window >= len(buffer):
                return None
            window *= 8


@functools.lru_cache(maxsize=64)
def _json_categories_cached(path: str, mtime: float, size: int) -> tuple[tuple[int, str], ...] | None:
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as buffer:
        for match in _CATEGORIES.finditer(buffer):
            value = _decode_array(buffer, match.end() - 1)
            if isinstance(value, list) and all(
                isinstance(c, dict) and isinstance(c.get("id"), int) and not isinstance(c.get("id"), bool)
                for c in value
            ):
                return tuple(sorted((c["id"], str(c.get("name", c["id"]))) for c in value))
    return None


def _json_categories(path: Any) -> tuple[tuple[int, str], ...] | None:
    """``(id, name)`` of the ``categories`` of a local COCO json, sorted by id, without parsing the
    rest of the file (a memory map is searched for the key); None when they cannot be read."""
    try:
        path = os.fspath(path)
        stat = os.stat(path)
        if not os.path.isfile(path) or stat.st_size == 0:
            return None
        return _json_categories_cached(path, stat.st_mtime, stat.st_size)
    except (OSError, TypeError, ValueError):
        return None


def dataset_classes(name: str) -> DatasetClasses | None:
    """The classes of registered dataset ``name`` without loading it: its metadata's ``thing_classes``
    (and ``thing_dataset_id_to_contiguous_id``), else the ``categories`` of its metadata's
    ``json_file`` numbered as detectron2's COCO loaders do (sorted ids). None: not registered, or unknown."""
    if name not in DatasetCatalog.list():
        return None
    meta = MetadataCatalog.get(name)
    classes = meta.get("thing_classes")
    if classes is not None:
        id_map = meta.get("thing_dataset_id_to_contiguous_id")
        ids = tuple(k for k, _ in sorted(id_map.items(), key=lambda kv: kv[1])) if id_map else None
        return DatasetClasses(name, tuple(classes), ids, "metadata")
    json_file = meta.get("json_file")
    categories = _json_categories(json_file) if json_file else None
    if categories is None:
        return None
    return DatasetClasses(name, tuple(n for _, n in categories), tuple(i for i, _ in categories), json_file)


def _layout_uses_category_ids(cfg: CfgNode, num_classes: int) -> bool:
    """Whether the vocabulary layout's class tokens depend on the category ids (e.g. "official")."""
    p = cfg.MODEL.PIX2SEQ
    try:
        layout = VOCABULARY_LAYOUT_REGISTRY.get(p.TOKENIZER.LAYOUT)
        contiguous = layout(num_classes, p.NUM_BINS, ()).class_tokens
        return contiguous != layout(num_classes, p.NUM_BINS, list(range(1, num_classes + 1))).class_tokens
    except Exception:
        return False


def _register_hint(cfg: CfgNode) -> str:
    where = "list it in DATASETS.COCO, or register it in code" if "COCO" in cfg.DATASETS else "register it in code"
    return f' ({where}: README "Your own COCO-format dataset")'


def _dataset_problems(cfg: CfgNode, for_training: bool, names: dict[str, str] | None = None) -> list[_Problem]:
    """``names``: dataset -> the key naming it; default: DATASETS.TRAIN and .TEST in training, .TEST otherwise."""
    if names is None:
        names = {}
        if for_training:
            names.update({n: "DATASETS.TRAIN" for n in cfg.DATASETS.TRAIN})
        names.update({n: "DATASETS.TEST" for n in cfg.DATASETS.TEST if n not in names})
    problems = []
    if for_training and not len(cfg.DATASETS.TRAIN):
        problems.append(_error("DATASETS.TRAIN = (): name at least one registered dataset to train on"))
    p = cfg.MODEL.PIX2SEQ
    n = p.NUM_CLASSES
    reference: DatasetClasses | None = None
    seen: set[tuple] = set()  # (classes, ids) already checked: a test split like its training split says nothing new
    for name, key in names.items():
        if name not in DatasetCatalog.list():
            if for_training:
                close = difflib.get_close_matches(name, DatasetCatalog.list(), n=3)
                hint = f" (did you mean {' or '.join(map(repr, close))}?)" if close else ""
                when = "training" if key == "DATASETS.TRAIN" else "the evaluation at the end of training"
                problems.append(_error(
                    f"{key} names {name!r}, which is not a registered dataset{hint}; it is needed for {when}: "
                    f"register it before building the trainer{_register_hint(cfg)}"
                ))  # fmt: skip
            continue
        info = dataset_classes(name)
        if info is None or n == 0 or (info.classes, info.category_ids) in seen:
            continue
        seen.add((info.classes, info.category_ids))
        c = len(info.classes)
        where = f"{key} dataset {name!r}" + ("" if info.source == "metadata" else f" (categories of {info.source})")
        if n != c:
            message = f"MODEL.PIX2SEQ.NUM_CLASSES = {n} but {where} has {c} classes {_preview(info.classes)}"
            if info.category_ids and n == max(info.category_ids):
                message += (
                    f". NUM_CLASSES is the number of classes, not the largest category id ({n}): detectron2 maps "
                    f"the category ids {_preview(info.category_ids)} to the contiguous classes 0..{c - 1}"
                )
            problems.append(
                _error(f"{message}. Set MODEL.PIX2SEQ.NUM_CLASSES {c} (or 0: taken from DATASETS.TRAIN[0])")
            )
            continue
        if info.category_ids is not None and _layout_uses_category_ids(cfg, n):
            configured = [int(i) for i in p.TOKENIZER.CATEGORY_IDS]
            dataset_ids = list(info.category_ids)
            if configured and configured != dataset_ids:
                problems.append(_error(
                    f"MODEL.PIX2SEQ.TOKENIZER.CATEGORY_IDS = {_preview(configured, 20)} differs from the category ids "
                    f"of {where}, {_preview(dataset_ids, 20)} (in the order of its contiguous classes): with LAYOUT "
                    f"{p.TOKENIZER.LAYOUT!r} the class tokens are keyed by these ids; set CATEGORY_IDS to the "
                    "dataset's ids"
                ))  # fmt: skip
            elif not configured and dataset_ids != list(range(c)) and for_training:
                problems.append(_warning(
                    f"MODEL.PIX2SEQ.TOKENIZER.CATEGORY_IDS is empty, so with LAYOUT {p.TOKENIZER.LAYOUT!r} the class "
                    f"tokens are keyed by 0..{c - 1}, not by the category ids of {where}, "
                    f"{_preview(dataset_ids)}; a checkpoint keyed by category ids needs CATEGORY_IDS set to them"
                ))  # fmt: skip
        if reference is None:
            reference = info
        elif info.classes != reference.classes:
            problems.append(_warning(
                f"{where} has other class names than {reference.name!r} ({_preview(info.classes)} vs "
                f"{_preview(reference.classes)}): class k of one is evaluated as class k of the other"
            ))  # fmt: skip
    return problems


def check_datasets(cfg: CfgNode, for_training: bool) -> list[str]:
    """``NUM_CLASSES`` and ``TOKENIZER.CATEGORY_IDS`` against the classes of the datasets (training:
    ``DATASETS.TRAIN`` and ``.TEST``, which must be registered; otherwise ``.TEST``, where registered).
    Datasets whose classes are unknown until loaded are skipped: call it again once they are loaded.
    Raises :class:`ConfigError`; returns the warnings (logged once)."""
    return _report(_dataset_problems(cfg, for_training))


# ---- schedule ------------------------------------------------------------------------------------
@contextlib.contextmanager
def _quiet(name: str) -> Iterator[None]:
    """Silence ``name``'s info messages (detectron2 logs each auto-scaling; the trainer scales again)."""
    log = logging.getLogger(name)
    level = log.level
    log.setLevel(logging.WARNING)
    try:
        yield
    finally:
        log.setLevel(level)


def _auto_scaled(cfg: CfgNode, num_workers: int) -> CfgNode:
    with _quiet("detectron2.engine.defaults"):
        return DefaultTrainer.auto_scale_workers(cfg.clone(), num_workers)


def _lr_multipliers(cfg: CfgNode, samples: int = 2000) -> list[float] | None:
    """The learning rate / BASE_LR at (up to ``samples`` evenly spaced) iterations of the run, from
    the scheduler the trainer builds; None for a scheduler that does not expose its multiplier."""
    param = torch.nn.Parameter(torch.zeros(1))
    scheduler = build_lr_scheduler(cfg, torch.optim.SGD([param], lr=1.0))
    multiplier = getattr(scheduler, "_multiplier", None)  # detectron2's LRMultiplier
    max_iter = cfg.SOLVER.MAX_ITER
    if multiplier is None:
        return None
    iterations = (
        range(max_iter) if max_iter <= samples else [i * (max_iter - 1) // (samples - 1) for i in range(samples)]
    )
    return [float(multiplier(i / max_iter)) for i in iterations]


def _schedule_problems(cfg: CfgNode, num_workers: int) -> list[_Problem]:
    s = cfg.SOLVER
    reference = s.REFERENCE_WORLD_SIZE
    scaling = reference > 0 and reference != num_workers
    if scaling and s.IMS_PER_BATCH % reference:
        return [_error(
            f"SOLVER.IMS_PER_BATCH = {s.IMS_PER_BATCH} is not a multiple of SOLVER.REFERENCE_WORLD_SIZE = {reference}: "
            f"detectron2 keeps IMS_PER_BATCH / REFERENCE_WORLD_SIZE images per worker when it scales the schedule to "
            f"{num_workers} worker(s). Make IMS_PER_BATCH a multiple of {reference}, or set REFERENCE_WORLD_SIZE 0 to "
            "disable the scaling"
        )]  # fmt: skip
    scaled = _auto_scaled(cfg, num_workers)
    t = scaled.SOLVER
    where = unscale = ""
    if scaling:
        changes = [
            (k, before, after)
            for k, before, after in (
                ("IMS_PER_BATCH", s.IMS_PER_BATCH, t.IMS_PER_BATCH), ("BASE_LR", s.BASE_LR, t.BASE_LR),
                ("MAX_ITER", s.MAX_ITER, t.MAX_ITER), ("WARMUP_ITERS", s.WARMUP_ITERS, t.WARMUP_ITERS),
                ("CHECKPOINT_PERIOD", s.CHECKPOINT_PERIOD, t.CHECKPOINT_PERIOD),
                ("TEST.EVAL_PERIOD", cfg.TEST.EVAL_PERIOD, scaled.TEST.EVAL_PERIOD),
            )
            if before != after
        ]  # fmt: skip
        where = (
            f" after detectron2's auto-scaling from SOLVER.REFERENCE_WORLD_SIZE = {reference} to {num_workers} "
            f"worker(s) (x{num_workers / reference:g}: "
            + ", ".join(f"{k} {_n(b)} -> {_n(a)}" for k, b, a in changes)
            + ")"
        )
        unscale = (
            "; or set SOLVER.REFERENCE_WORLD_SIZE 0 to train with the config's numbers as written "
            f"(or run on {reference} workers)"
        )
    problems = []
    if t.MAX_ITER < 1:
        problems.append(_error(
            f"SOLVER.MAX_ITER = {s.MAX_ITER} becomes {t.MAX_ITER}{where}: raise SOLVER.MAX_ITER{unscale}"
        ))  # fmt: skip
    if t.IMS_PER_BATCH < num_workers or t.IMS_PER_BATCH % num_workers:
        problems.append(_error(
            f"SOLVER.IMS_PER_BATCH = {t.IMS_PER_BATCH}{where} must be a positive multiple of the {num_workers} "
            "worker(s) (each takes IMS_PER_BATCH / workers images)"
        ))  # fmt: skip
    if t.CHECKPOINT_PERIOD < 1:
        problems.append(_error(
            f"SOLVER.CHECKPOINT_PERIOD = {s.CHECKPOINT_PERIOD} becomes {t.CHECKPOINT_PERIOD}{where}: it must stay "
            f">= 1 (0 divides by zero); raise SOLVER.CHECKPOINT_PERIOD{unscale}"
        ))  # fmt: skip
    if cfg.TEST.EVAL_PERIOD > 0 and scaled.TEST.EVAL_PERIOD < 1:
        problems.append(_warning(
            f"TEST.EVAL_PERIOD = {cfg.TEST.EVAL_PERIOD} becomes 0{where}: no evaluation before the end of training"
        ))  # fmt: skip
    if problems:
        return problems
    try:
        curve = _lr_multipliers(scaled)
    except (ValueError, AssertionError, KeyError, TypeError, ZeroDivisionError) as e:
        return [_error(f"SOLVER.LR_SCHEDULER_NAME = {s.LR_SCHEDULER_NAME!r}: the schedule cannot be built from "
                       f"SOLVER.*: {e!r}")]  # fmt: skip
    if not curve:
        return []
    peak = max(curve)
    low = sum(m < LOW_LR_FRACTION for m in curve) / len(curve)
    lr = f"the learning rate peaks at {peak:.1%} of SOLVER.BASE_LR ({peak * t.BASE_LR:.3g})"
    if t.WARMUP_ITERS >= t.MAX_ITER and t.WARMUP_FACTOR < 1:
        message = (
            f"SOLVER.WARMUP_ITERS = {t.WARMUP_ITERS} >= SOLVER.MAX_ITER = {t.MAX_ITER}{where}: the whole run is "
            f"warmup and {lr}. Set SOLVER.WARMUP_ITERS below SOLVER.MAX_ITER{unscale}"
        )
        # Auto-scaling changed the numbers the user wrote into ones nobody wants: stop. A short run as
        # written (a smoke test of a few iterations) is only warned about.
        return [_error(message) if scaling else _warning(message)]
    if peak < LOW_LR_FRACTION:
        return [_warning(f"{lr}{where}: it never exceeds {LOW_LR_FRACTION:.0%} of it (SOLVER.WARMUP_*, GAMMA, "
                         "STEPS, END_LR_FACTOR)")]  # fmt: skip
    if low > 0.5:
        return [_warning(
            f"the learning rate stays below {LOW_LR_FRACTION:.0%} of SOLVER.BASE_LR for {low:.0%} of the "
            f"{t.MAX_ITER} iterations{where} (SOLVER.WARMUP_ITERS = {t.WARMUP_ITERS}, LR_SCHEDULER_NAME = "
            f"{s.LR_SCHEDULER_NAME!r}){unscale}"
        )]  # fmt: skip
    if t.WARMUP_ITERS > t.MAX_ITER / 2 and t.WARMUP_FACTOR < 1:
        return [_warning(
            f"the warmup (SOLVER.WARMUP_ITERS = {t.WARMUP_ITERS}) takes {t.WARMUP_ITERS / t.MAX_ITER:.0%} of the "
            f"{t.MAX_ITER} iterations{where}"
        )]  # fmt: skip
    return []


def check_schedule(cfg: CfgNode, num_workers: int) -> list[str]:
    """The training schedule as it will run on ``num_workers`` workers, i.e. after detectron2's
    ``DefaultTrainer.auto_scale_workers`` (called on a clone): an error when the scaled
    ``MAX_ITER``/``CHECKPOINT_PERIOD`` fall below 1, the batch does not split over the workers, or
    auto-scaling makes the whole run warmup; a warning when the learning rate never leaves warmup
    as written, or stays below 10% of ``BASE_LR`` for most of the run. Messages show the scaled
    numbers and which keys to set. Raises :class:`ConfigError`; returns the warnings (logged once)."""
    table = [p for p in _table_problems(cfg, for_training=True) if p.key.startswith(("SOLVER.", "TEST."))]
    if any(not p.warning for p in table):
        return _report(table)  # the values the schedule is computed from are invalid
    return _report(table + _schedule_problems(cfg, num_workers))


# ---- entry points --------------------------------------------------------------------------------
# Each cross-key check, with the key prefixes it reads: it is skipped while one of those keys has a table error.
_CROSS_CHECKS: tuple[tuple[Callable[[CfgNode, bool], Iterable[_Problem]], tuple[str, ...]], ...] = (
    (_auto_problems, ()),
    (_width_problems, (_P, "MODEL.VIT.")),
    (_tokenizer_problems, (_P,)),
    (_decoding_problems, (_P + "DECODE.", _P + "MAX_OBJECTS")),
    (_sequence_augmentation_problems, (_P + "SEQ_AUG.", _P + "MAX_OBJECTS")),
    (_augmentation_problems, ("INPUT.",)),
    (_canvas_problems, ("INPUT.", _P + "PAD_TO_SQUARE")),
    (_dataset_problems, (_P + "NUM_CLASSES", _P + "NUM_BINS", _P + "TOKENIZER.")),
)


def check_config(cfg: CfgNode, for_training: bool, num_workers: int | None = None) -> list[str]:
    """Check every setting of a Pix2Seq ``cfg`` before anything is built.

    Args:
        for_training: also the training-only settings, the training datasets (which must be
            registered, like the test datasets) and the schedule. False: evaluation, demo, predictor.
        num_workers: the workers the schedule is scaled to (default: ``comm.get_world_size()``).

    Raises :class:`ConfigError` naming every invalid setting (key, value, allowed range). Returns
    the warnings, each logged once per process.
    """
    problems = _table_problems(cfg, for_training)
    bad_keys = [p.key for p in problems if not p.warning]
    checks = list(_CROSS_CHECKS)
    if for_training:
        workers = comm.get_world_size() if num_workers is None else num_workers
        checks.append((lambda c, _: _schedule_problems(c, workers), ("SOLVER.", "TEST.")))
    for check, reads in checks:
        if any(key.startswith(reads) for key in bad_keys if reads):
            continue  # its inputs are already reported
        try:
            problems.extend(check(cfg, for_training))
        except Exception as e:  # a check that could not run (a value of an unexpected type): say so, go on
            logger.warning(f"config check {getattr(check, '__name__', 'schedule')} could not run: {e!r}")
    return _report(problems)


def resolve_auto_settings(cfg: CfgNode) -> CfgNode:
    """Fill in the "auto" values of an unfrozen ``cfg`` in place (and return it); call it before
    ``cfg.freeze()`` and before building anything.

    ``MODEL.PIX2SEQ.NUM_CLASSES: 0`` becomes the number of classes of ``DATASETS.TRAIN[0]``
    (``DATASETS.TEST[0]`` when no training set is named), read from its metadata or its COCO json's
    ``categories`` (the dataset is not loaded). With it, a layout keyed by category ids ("official",
    "pretrained_pix2seq") and an empty ``TOKENIZER.CATEGORY_IDS`` take that dataset's category ids.
    An explicit ``NUM_CLASSES`` leaves both as they are. Raises :class:`ConfigError` when the
    classes cannot be known.
    """
    p = cfg.MODEL.PIX2SEQ
    if p.NUM_CLASSES != 0:
        return cfg
    if cfg.is_frozen():
        raise ConfigError(["MODEL.PIX2SEQ.NUM_CLASSES = 0 (auto): resolve_auto_settings needs the config before "
                           "cfg.freeze() (or use with_auto_settings, which returns a resolved copy)"])  # fmt: skip
    key, names = (
        ("DATASETS.TRAIN", cfg.DATASETS.TRAIN) if len(cfg.DATASETS.TRAIN) else ("DATASETS.TEST", cfg.DATASETS.TEST)
    )
    if not len(names):
        raise ConfigError(
            [
                "MODEL.PIX2SEQ.NUM_CLASSES = 0 (auto) takes the classes of DATASETS.TRAIN[0], but "
                "DATASETS.TRAIN and DATASETS.TEST are empty: set NUM_CLASSES to the number of classes"
            ]
        )
    info = dataset_classes(names[0])
    if info is None:
        state = "is not registered"
        if names[0] in DatasetCatalog.list():
            state = "has no thing_classes in its metadata and no readable COCO json_file"
        raise ConfigError([
            f"MODEL.PIX2SEQ.NUM_CLASSES = 0 (auto) takes the classes of {key}[0] = {names[0]!r}, which {state}: "
            f"register it first{_register_hint(cfg)}, or set NUM_CLASSES to the number of classes"
        ])  # fmt: skip
    p.NUM_CLASSES = len(info.classes)
    logger.info(f"MODEL.PIX2SEQ.NUM_CLASSES = 0 (auto): {p.NUM_CLASSES}, the classes of {key}[0] = {names[0]!r}")
    if not len(p.TOKENIZER.CATEGORY_IDS) and info.category_ids and _layout_uses_category_ids(cfg, p.NUM_CLASSES):
        p.TOKENIZER.CATEGORY_IDS = list(info.category_ids)
        logger.info(f"MODEL.PIX2SEQ.TOKENIZER.CATEGORY_IDS (empty: auto): {_preview(info.category_ids)}")
    return cfg


def with_auto_settings(cfg: CfgNode) -> CfgNode:
    """``cfg`` itself when it has no "auto" value, else a resolved copy (frozen if ``cfg`` is):
    :func:`resolve_auto_settings` for configs that may already be frozen."""
    if cfg.MODEL.PIX2SEQ.NUM_CLASSES != 0:
        return cfg
    resolved = cfg.clone()
    resolved.defrost()
    resolve_auto_settings(resolved)
    if cfg.is_frozen():
        resolved.freeze()
    return resolved
