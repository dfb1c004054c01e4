"""The datasets of a config: ``NUM_CLASSES`` and ``TOKENIZER.CATEGORY_IDS`` checked against the classes of
``DATASETS.TRAIN`` and ``DATASETS.TEST``, and the "auto" value ``NUM_CLASSES: 0`` filled in from them.

The classes come from the dataset's metadata, or failing that from the ``categories`` of its COCO json
(read without loading the dataset: :func:`~pix2seq_d2.data.datasets.coco.read_coco_categories`).
"""

from __future__ import annotations

import difflib
import logging
from dataclasses import dataclass

from detectron2.config import CfgNode
from detectron2.data import DatasetCatalog, MetadataCatalog

from pix2seq_d2.data.datasets.coco import read_coco_categories
from pix2seq_d2.tasks.vocabulary import VOCABULARY_LAYOUT_REGISTRY

from .problems import ConfigError, Problem, error, preview, report, warning

__all__ = [
    "DatasetClasses",
    "check_datasets",
    "dataset_classes",
    "dataset_problems",
    "resolve_auto_settings",
    "with_auto_settings",
]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DatasetClasses:
    """The classes of a registered dataset, as detectron2 will number them."""

    name: str
    classes: tuple[str, ...]  # thing_classes: the name of each contiguous class 0..C-1
    category_ids: tuple[int, ...] | None  # the dataset category id of each contiguous class (None: unknown)
    source: str  # "metadata" or the COCO json file the categories were read from


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
    categories = read_coco_categories(json_file) if json_file else None
    if categories is None:
        return None
    return DatasetClasses(name, tuple(n for _, n in categories), tuple(i for i, _ in categories), json_file)


def layout_uses_category_ids(cfg: CfgNode, num_classes: int) -> bool:
    """Whether the vocabulary layout's class tokens depend on the category ids (e.g. "official")."""
    p = cfg.MODEL.PIX2SEQ
    try:
        layout = VOCABULARY_LAYOUT_REGISTRY.get(p.TOKENIZER.LAYOUT)
        contiguous = layout(num_classes, p.NUM_BINS, ()).class_tokens
        return contiguous != layout(num_classes, p.NUM_BINS, list(range(1, num_classes + 1))).class_tokens
    except Exception:
        return False


def register_hint(cfg: CfgNode) -> str:
    where = "list it in DATASETS.COCO, or register it in code" if "COCO" in cfg.DATASETS else "register it in code"
    return f" ({where}: docs/your_own_data.md)"


def dataset_problems(cfg: CfgNode, for_training: bool, names: dict[str, str] | None = None) -> list[Problem]:
    """``names``: dataset -> the key naming it; default: DATASETS.TRAIN and .TEST in training, .TEST otherwise."""
    if names is None:
        names = {}
        if for_training:
            names.update({n: "DATASETS.TRAIN" for n in cfg.DATASETS.TRAIN})
        names.update({n: "DATASETS.TEST" for n in cfg.DATASETS.TEST if n not in names})
    problems = []
    if for_training and not len(cfg.DATASETS.TRAIN):
        problems.append(error("DATASETS.TRAIN = (): name at least one registered dataset to train on"))
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
                problems.append(error(
                    f"{key} names {name!r}, which is not a registered dataset{hint}; it is needed for {when}: "
                    f"register it before building the trainer{register_hint(cfg)}"
                ))  # fmt: skip
            continue
        info = dataset_classes(name)
        if info is None or n == 0 or (info.classes, info.category_ids) in seen:
            continue
        seen.add((info.classes, info.category_ids))
        c = len(info.classes)
        where = f"{key} dataset {name!r}" + ("" if info.source == "metadata" else f" (categories of {info.source})")
        if n != c:
            message = f"MODEL.PIX2SEQ.NUM_CLASSES = {n} but {where} has {c} classes {preview(info.classes)}"
            if info.category_ids and n == max(info.category_ids):
                message += (
                    f". NUM_CLASSES is the number of classes, not the largest category id ({n}): detectron2 maps "
                    f"the category ids {preview(info.category_ids)} to the contiguous classes 0..{c - 1}"
                )
            problems.append(error(f"{message}. Set MODEL.PIX2SEQ.NUM_CLASSES {c} (or 0: taken from DATASETS.TRAIN[0])"))
            continue
        if info.category_ids is not None and layout_uses_category_ids(cfg, n):
            configured = [int(i) for i in p.TOKENIZER.CATEGORY_IDS]
            dataset_ids = list(info.category_ids)
            if configured and configured != dataset_ids:
                problems.append(error(
                    f"MODEL.PIX2SEQ.TOKENIZER.CATEGORY_IDS = {preview(configured, 20)} differs from the category ids "
                    f"of {where}, {preview(dataset_ids, 20)} (in the order of its contiguous classes): with LAYOUT "
                    f"{p.TOKENIZER.LAYOUT!r} the class tokens are keyed by these ids; set CATEGORY_IDS to the "
                    "dataset's ids"
                ))  # fmt: skip
            elif not configured and dataset_ids != list(range(c)) and for_training:
                problems.append(warning(
                    f"MODEL.PIX2SEQ.TOKENIZER.CATEGORY_IDS is empty, so with LAYOUT {p.TOKENIZER.LAYOUT!r} the class "
                    f"tokens are keyed by 0..{c - 1}, not by the category ids of {where}, "
                    f"{preview(dataset_ids)}; a checkpoint keyed by category ids needs CATEGORY_IDS set to them"
                ))  # fmt: skip
        if reference is None:
            reference = info
        elif info.classes != reference.classes:
            problems.append(warning(
                f"{where} has other class names than {reference.name!r} ({preview(info.classes)} vs "
                f"{preview(reference.classes)}): class k of one is evaluated as class k of the other"
            ))  # fmt: skip
    return problems


def check_datasets(cfg: CfgNode, for_training: bool) -> list[str]:
    """``NUM_CLASSES`` and ``TOKENIZER.CATEGORY_IDS`` against the classes of the datasets (training:
    ``DATASETS.TRAIN`` and ``.TEST``, which must be registered; otherwise ``.TEST``, where registered).
    Datasets whose classes are unknown until loaded are skipped: call it again once they are loaded.
    Raises :class:`ConfigError`; returns the warnings (logged once)."""
    return report(dataset_problems(cfg, for_training))


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
            f"register it first{register_hint(cfg)}, or set NUM_CLASSES to the number of classes"
        ])  # fmt: skip
    p.NUM_CLASSES = len(info.classes)
    logger.info(f"MODEL.PIX2SEQ.NUM_CLASSES = 0 (auto): {p.NUM_CLASSES}, the classes of {key}[0] = {names[0]!r}")
    if not len(p.TOKENIZER.CATEGORY_IDS) and info.category_ids and layout_uses_category_ids(cfg, p.NUM_CLASSES):
        p.TOKENIZER.CATEGORY_IDS = list(info.category_ids)
        logger.info(f"MODEL.PIX2SEQ.TOKENIZER.CATEGORY_IDS (empty: auto): {preview(info.category_ids)}")
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
