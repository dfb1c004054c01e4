"""Pix2Seq's config: the keys and their defaults (:mod:`.defaults`), reading files with checked keys
(:mod:`.loading`), the start-up checks (:mod:`.rules`, :mod:`.checks`, :mod:`.dataset_checks`,
:mod:`.schedule_checks`) and :func:`prepare_config`, which every entry point calls before building anything."""

from .checks import check_config
from .dataset_checks import check_datasets, dataset_classes, resolve_auto_settings, with_auto_settings
from .defaults import add_pix2seq_config
from .loading import ConfigKeyError, config_items, load_config, merge_config_checked
from .prepare import prepare_config
from .problems import ConfigError
from .rules import RULES, rule_table
from .schedule_checks import check_schedule

__all__ = [
    "ConfigError",
    "ConfigKeyError",
    "RULES",
    "add_pix2seq_config",
    "check_config",
    "check_datasets",
    "check_schedule",
    "config_items",
    "dataset_classes",
    "load_config",
    "merge_config_checked",
    "prepare_config",
    "resolve_auto_settings",
    "rule_table",
    "with_auto_settings",
]
