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

import logging
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from detectron2.config import CfgNode
from detectron2.utils import comm

from pix2seq_d2.data.image_io import IMAGE_FORMATS
from pix2seq_d2.data.transforms import ColorJitter, build_pix2seq_augmentation, build_test_resize
from pix2seq_d2.tasks import TASK_REGISTRY, Pix2SeqTokenizer, build_task
from pix2seq_d2.tasks.decoding_options import BOX_SOURCES, TOP_P_RULES, DecodingOptions
from pix2seq_d2.tasks.sequence_augmentation import SequenceAugmentation

from .dataset_checks import dataset_problems
from .problems import ConfigError, Problem, error, preview, report, warning
from .rules import PIX2SEQ, VIT_BACKBONE, table_problems
from .schedule_checks import schedule_problems

__all__ = ["ConfigError", "check_config"]

logger = logging.getLogger(__name__)


# ---- cross-key checks ----------------------------------------------------------------------------
def _auto_problems(cfg: CfgNode, for_training: bool) -> Iterator[Problem]:
    if cfg.MODEL.PIX2SEQ.NUM_CLASSES == 0:
        yield error(
            "MODEL.PIX2SEQ.NUM_CLASSES = 0 (auto: the number of classes of DATASETS.TRAIN[0]) was not resolved: "
            "call pix2seq_d2.config.prepare_config(cfg, ...) or resolve_auto_settings(cfg) before cfg.freeze(), "
            "or set NUM_CLASSES"
        )


def _width_problems(cfg: CfgNode, for_training: bool) -> Iterator[Problem]:
    p = cfg.MODEL.PIX2SEQ
    if p.HIDDEN_DIM % p.NUM_HEADS:
        yield error(
            f"MODEL.PIX2SEQ.HIDDEN_DIM = {p.HIDDEN_DIM} is not divisible by MODEL.PIX2SEQ.NUM_HEADS = {p.NUM_HEADS}: "
            "every attention head gets HIDDEN_DIM / NUM_HEADS channels"
        )
    dec_dim, dec_heads = p.DEC_HIDDEN_DIM or p.HIDDEN_DIM, p.DEC_NUM_HEADS or p.NUM_HEADS
    if (p.DEC_HIDDEN_DIM or p.DEC_NUM_HEADS) and dec_dim % dec_heads:
        yield error(
            f"the decoder width {dec_dim} (MODEL.PIX2SEQ.DEC_HIDDEN_DIM = {p.DEC_HIDDEN_DIM}, 0: HIDDEN_DIM) is not "
            f"divisible by its {dec_heads} heads (MODEL.PIX2SEQ.DEC_NUM_HEADS = {p.DEC_NUM_HEADS}, 0: NUM_HEADS)"
        )
    if p.POSITION_ENCODING != "none" and p.HIDDEN_DIM % 4:
        yield error(
            f"MODEL.PIX2SEQ.HIDDEN_DIM = {p.HIDDEN_DIM} must be a multiple of 4 with POSITION_ENCODING "
            f"{p.POSITION_ENCODING!r} (2-D sin/cos positions: a quarter of the channels per axis and function)"
        )
    if p.INPUT_PROJ == "conv_gn" and p.HIDDEN_DIM % 32:
        yield error(
            f"MODEL.PIX2SEQ.HIDDEN_DIM = {p.HIDDEN_DIM} must be a multiple of 32 with INPUT_PROJ 'conv_gn' "
            "(GroupNorm with 32 groups)"
        )
    if p.MEMORY_PROJECTION:
        if p.DIM_FEEDFORWARD < p.HIDDEN_DIM:
            yield error(
                f"MODEL.PIX2SEQ.DIM_FEEDFORWARD = {p.DIM_FEEDFORWARD} must be >= HIDDEN_DIM = {p.HIDDEN_DIM} with "
                "MEMORY_PROJECTION (its MLP is the decoder width x DIM_FEEDFORWARD // HIDDEN_DIM wide)"
            )
        if dec_dim % 4:
            yield error(
                f"the decoder width {dec_dim} (MODEL.PIX2SEQ.DEC_HIDDEN_DIM, 0: HIDDEN_DIM) must be a multiple of 4 "
                "with MEMORY_PROJECTION (it adds 2-D sin/cos positions)"
            )
    if cfg.MODEL.BACKBONE.NAME == VIT_BACKBONE:
        v = cfg.MODEL.VIT
        if v.EMBED_DIM % v.NUM_HEADS or v.EMBED_DIM % 4:
            yield error(
                f"MODEL.VIT.EMBED_DIM = {v.EMBED_DIM} must be a multiple of MODEL.VIT.NUM_HEADS = {v.NUM_HEADS} "
                "(channels per head) and of 4 (2-D sin/cos positions)"
            )


def _task_problems(cfg: CfgNode, for_training: bool) -> Iterator[Problem]:
    names = cfg.MODEL.PIX2SEQ.TASKS
    if not isinstance(names, (list, tuple)) or not all(isinstance(name, str) for name in names):
        yield error(f"MODEL.PIX2SEQ.TASKS = {names!r}: must be a list of task names, e.g. ['DetectionTask']")
        return
    names = list(names)
    unknown = [name for name in names if name not in TASK_REGISTRY]
    if unknown:
        known = ", ".join(repr(name) for name, _ in sorted(TASK_REGISTRY))
        yield error(f"MODEL.PIX2SEQ.TASKS = {names}: {unknown} are not registered tasks (TASK_REGISTRY: {known})")
    elif len(names) != 1:
        yield error(
            f"MODEL.PIX2SEQ.TASKS = {names}: name exactly one task; joint training of several tasks is not built yet"
        )


def _tokenizer_problems(cfg: CfgNode, for_training: bool) -> Iterator[Problem]:
    p = cfg.MODEL.PIX2SEQ
    if p.NUM_CLASSES == 0:  # "auto", unresolved: _auto_problems says so
        return
    try:
        tokenizer = Pix2SeqTokenizer.from_config(cfg)  # the layout's own validation
    except (ValueError, KeyError, IndexError) as e:
        yield error(
            f"MODEL.PIX2SEQ.TOKENIZER.LAYOUT = {p.TOKENIZER.LAYOUT!r} with NUM_CLASSES = {p.NUM_CLASSES}, "
            f"NUM_BINS = {p.NUM_BINS}, TOKENIZER.CATEGORY_IDS = {preview(p.TOKENIZER.CATEGORY_IDS)}: {e}"
        )
        return
    if p.MAX_SEQ_LEN and p.DECODER_POSITIONS == "learned":
        try:
            task = build_task(cfg, tokenizer)  # the task says how long its sequences get
        except (ValueError, KeyError):
            return  # an unknown task or bad decoding options: _task_problems and _decoding_problems say which
        objects = max(p.MAX_OBJECTS, p.MAX_OBJECTS_TEST) if for_training else p.MAX_OBJECTS_TEST
        need = task.max_sequence_length(objects)
        if p.MAX_SEQ_LEN < need:
            which = "max(MAX_OBJECTS, MAX_OBJECTS_TEST)" if for_training else "MAX_OBJECTS_TEST"
            yield error(
                f"MODEL.PIX2SEQ.MAX_SEQ_LEN = {p.MAX_SEQ_LEN}: must be 0 (sized automatically) or >= {need}, the "
                f"decoder positions of {objects} objects ({which}) plus START"
            )


def _probe(build: Callable[..., Any], fields: dict[str, tuple[str, Any]], allowed: dict[str, str],
           fixed: dict[str, Any] | None = None) -> list[Problem]:  # fmt: skip
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
            problems.append(error(f"{key} = {value!r}: {allowed.get(field) or e}"))
    if problems:
        return problems
    together = ", ".join(f"{key} = {value!r}" for key, value in fields.values())
    return [error(f"{together}: {failure}")]


def _decoding_problems(cfg: CfgNode, for_training: bool) -> list[Problem]:
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


def _sequence_augmentation_problems(cfg: CfgNode, for_training: bool) -> list[Problem]:
    p = cfg.MODEL.PIX2SEQ
    if not (for_training and p.SEQ_AUG.ENABLED):
        return []
    s = p.SEQ_AUG
    fields = {
        "max_objects": (PIX2SEQ + "MAX_OBJECTS", p.MAX_OBJECTS),
        "noise_class_weight": (PIX2SEQ + "SEQ_AUG.NOISE_CLASS_WEIGHT", s.NOISE_CLASS_WEIGHT),
        "class_corruption": (PIX2SEQ + "SEQ_AUG.CLASS_CORRUPTION", s.CLASS_CORRUPTION),
        "jitter": (PIX2SEQ + "SEQ_AUG.JITTER", s.JITTER),
        "duplicate_jitter": (PIX2SEQ + "SEQ_AUG.DUPLICATE_JITTER", s.DUPLICATE_JITTER),
    }

    def build(max_objects: int = 1, **kwargs: Any) -> SequenceAugmentation:
        return SequenceAugmentation(max_objects, **kwargs)

    return _probe(build, fields, {})


def _augmentation_problems(cfg: CfgNode, for_training: bool) -> list[Problem]:
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
                problems.append(error(f"INPUT (training augmentation):{keys} {e}"))
    try:
        build_test_resize(cfg)
    except (ValueError, AssertionError, TypeError) as e:
        problems.append(error(f"INPUT.RESIZE_TEST = {cfg.INPUT.RESIZE_TEST!r}: {e}"))
    return problems


def _canvas_problems(cfg: CfgNode, for_training: bool) -> Iterator[Problem]:
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
            yield error(
                f"{key} = {size} exceeds MODEL.PIX2SEQ.PAD_TO_SQUARE = {square}: images are resized to a longest "
                f"side of up to {size} px and would not fit the square canvas; make {key} at most {square}"
            )
    if i.RESIZE_TEST == "shortest_edge" and i.MIN_SIZE_TEST == 0:
        yield warning(
            f"INPUT.MIN_SIZE_TEST = 0 leaves test images unresized, but MODEL.PIX2SEQ.PAD_TO_SQUARE = {square} "
            "refuses images larger than the square"
        )


# ---- entry points --------------------------------------------------------------------------------
# Each cross-key check, with the key prefixes it reads: it is skipped while one of those keys has a table error.
_CROSS_CHECKS: tuple[tuple[Callable[[CfgNode, bool], Iterable[Problem]], tuple[str, ...]], ...] = (
    (_auto_problems, ()),
    (_width_problems, (PIX2SEQ, "MODEL.VIT.")),
    (_task_problems, (PIX2SEQ + "TASKS",)),
    (_tokenizer_problems, (PIX2SEQ,)),
    (_decoding_problems, (PIX2SEQ + "DECODE.", PIX2SEQ + "MAX_OBJECTS")),
    (_sequence_augmentation_problems, (PIX2SEQ + "SEQ_AUG.", PIX2SEQ + "MAX_OBJECTS")),
    (_augmentation_problems, ("INPUT.",)),
    (_canvas_problems, ("INPUT.", PIX2SEQ + "PAD_TO_SQUARE")),
    (dataset_problems, (PIX2SEQ + "NUM_CLASSES", PIX2SEQ + "NUM_BINS", PIX2SEQ + "TOKENIZER.")),
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
    problems = table_problems(cfg, for_training)
    bad_keys = [p.key for p in problems if not p.warning]
    checks = list(_CROSS_CHECKS)
    if for_training:
        workers = comm.get_world_size() if num_workers is None else num_workers
        checks.append((lambda c, _: schedule_problems(c, workers), ("SOLVER.", "TEST.")))
    for check, reads in checks:
        if any(key.startswith(reads) for key in bad_keys if reads):
            continue  # its inputs are already reported
        try:
            problems.extend(check(cfg, for_training))
        except Exception as e:  # a check that could not run (a value of an unexpected type): say so, go on
            logger.warning(f"config check {getattr(check, '__name__', 'schedule')} could not run: {e!r}")
    return report(problems)
