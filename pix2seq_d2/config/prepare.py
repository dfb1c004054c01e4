"""``prepare_config``: what every entry point does to a config before building anything from it.

The train nets, the trainer, the predictor (and so the demo), the export and every tool call it, so that
a config means the same thing everywhere: the ``DATASETS.COCO`` entries are registered (a no-op when they
already are), the datasets of ``DATASETS.TRAIN`` and ``DATASETS.TEST`` that detectron2's
``register_coco_instances`` registered are read by the checked COCO reader from then on
(:func:`~pix2seq_d2.data.datasets.use_checked_coco_loader`), the "auto" settings filled in
(``MODEL.PIX2SEQ.NUM_CLASSES: 0`` from ``DATASETS.TRAIN[0]``), and every setting checked, each error naming
its key (:func:`~.checks.check_config`).
"""

from __future__ import annotations

from detectron2.config import CfgNode

from pix2seq_d2.data.datasets import register_coco_datasets, use_checked_coco_loader

from .checks import check_config
from .dataset_checks import resolve_auto_settings, with_auto_settings

__all__ = ["prepare_config"]


def prepare_config(cfg: CfgNode, *, for_training: bool, num_workers: int | None = None) -> CfgNode:
    """Register ``cfg``'s ``DATASETS.COCO`` entries, have its ``register_coco_instances`` datasets read by the
    checked COCO reader, fill in its auto settings and check every setting.

    Args:
        for_training: also check the training-only settings, the training datasets and the schedule
            (see :func:`~.checks.check_config`); False for evaluation, inference and the tools.
        num_workers: the workers the training schedule is scaled to (default: detectron2's world size).

    Returns the config to use: ``cfg`` itself, resolved in place, unless it is frozen and has auto
    settings (then a resolved, frozen copy). Raises :class:`~.problems.ConfigError` naming every
    invalid setting; warnings are logged once.
    """
    register_coco_datasets(cfg)
    use_checked_coco_loader([*cfg.DATASETS.TRAIN, *cfg.DATASETS.TEST])
    cfg = with_auto_settings(cfg) if cfg.is_frozen() else resolve_auto_settings(cfg)
    check_config(cfg, for_training=for_training, num_workers=num_workers)
    return cfg
