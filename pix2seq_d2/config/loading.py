"""Reading a Pix2Seq config: detectron2's defaults + the Pix2Seq keys, then yaml files and command-line
settings, where a key that does not exist is an error naming it, its file and the closest keys."""

from __future__ import annotations

import difflib
import os
from typing import Any

import yaml
from detectron2.config import CfgNode, get_cfg
from detectron2.utils.file_io import PathManager

from pix2seq_d2.config.defaults import add_pix2seq_config
from pix2seq_d2.utils.errors import MissingFileError, UserError

__all__ = ["ConfigKeyError", "config_items", "load_config", "merge_config_checked"]


def config_items(cfg: CfgNode, *, nodes: bool = True, prefix: str = "") -> dict[str, Any]:
    """Every key of ``cfg`` in dotted form (``"MODEL.PIX2SEQ.NUM_BINS"``), in the config's order -> its value;
    ``nodes``: the keys of nodes too (``"MODEL.PIX2SEQ"`` -> its ``CfgNode``), else only the settings."""
    items: dict[str, Any] = {}
    for name, value in cfg.items():
        is_node = isinstance(value, CfgNode)
        if nodes or not is_node:
            items[prefix + name] = value
        if is_node:
            items.update(config_items(value, nodes=nodes, prefix=f"{prefix}{name}."))
    return items


def _config_file_chain(config_file: str) -> list[tuple[str, dict]]:
    """``config_file`` and its ``_BASE_`` files (top first) with their yaml mappings; the chain ends
    at a file that cannot be read (``merge_from_file`` then reports it)."""
    chain: list[tuple[str, dict]] = []
    path: str | None = config_file
    while path and len(chain) <= 20:
        try:
            with PathManager.open(path) as f:
                data = yaml.safe_load(f) or {}
        except (OSError, yaml.YAMLError):
            break
        if not isinstance(data, dict):
            break
        chain.append((path, data))
        base = data.get("_BASE_")
        if not isinstance(base, str) or not base:
            break
        base = os.path.expanduser(base)
        path = base if os.path.isabs(base) or "://" in base else os.path.join(os.path.dirname(path), base)
    return chain


def _unknown_key(root: CfgNode, node: CfgNode, data: dict, prefix: str = "") -> str | None:
    """The first key of the yaml mapping ``data`` (merged into ``node`` of ``root``) that the config
    does not have; deprecated keys and nodes that take new keys are not unknown, and renamed keys are
    left to yacs (whose error names the new key)."""
    for key, value in data.items():
        full = f"{prefix}{key}"
        if (not prefix and key == "_BASE_") or root.key_is_deprecated(full) or root.key_is_renamed(full):
            continue
        if key not in node:
            if node.is_new_allowed():
                continue
            return full
        if isinstance(value, dict) and isinstance(node[key], CfgNode):
            found = _unknown_key(root, node[key], value, full + ".")
            if found:
                return found
    return None


def _unknown_key_message(cfg: CfgNode, key: str, where: str) -> str:
    close = difflib.get_close_matches(key, list(config_items(cfg)), n=3, cutoff=0.6)
    hint = f" Did you mean {' or '.join(close)}?" if close else ""
    return f"Unknown config key {key} {where}.{hint} (Pix2Seq's keys are defined in pix2seq_d2/config/defaults.py.)"


class ConfigKeyError(UserError, ValueError):
    """A config file or command line sets a key that does not exist, or gives it a value of the wrong type."""


def merge_config_checked(cfg: CfgNode, config_file: str | None, opts: list | None = None) -> CfgNode:
    """``cfg.merge_from_file(config_file)`` then ``cfg.merge_from_list(opts)``. A key that does not
    exist is a ``ConfigKeyError`` naming it, its file (or the command line) and the closest keys,
    found by reading the files' keys before merging; whatever else the merge refuses (a value of
    the wrong type, a renamed key) is a ``ConfigKeyError`` with yacs's message and the file."""
    if config_file:
        for path, data in reversed(_config_file_chain(config_file)):  # _BASE_ files merge first
            if data.get("VERSION", cfg.VERSION) != cfg.VERSION:
                break  # an old-format config: detectron2 upgrades its keys while merging
            key = _unknown_key(cfg, cfg, data)
            if key:
                where = f"in {path}" if path == config_file else f"in {path} (a _BASE_ of {config_file})"
                raise ConfigKeyError(_unknown_key_message(cfg, key, where))
        try:
            cfg.merge_from_file(config_file)
        except (KeyError, AssertionError, ValueError) as e:
            raise ConfigKeyError(f"{config_file}: {e}") from e
    if opts:
        opts = list(opts)
        for key in opts[0::2]:
            data: dict = {}
            node = data
            *parents, last = str(key).split(".")
            for part in parents:
                node = node.setdefault(part, {})
            node[last] = None
            unknown = _unknown_key(cfg, cfg, data)
            if unknown:
                raise ConfigKeyError(_unknown_key_message(cfg, unknown, "given on the command line"))
        try:
            cfg.merge_from_list(opts)
        except (KeyError, AssertionError, ValueError) as e:
            raise ConfigKeyError(f"command-line setting: {e}") from e
    return cfg


def load_config(config_file: str | None, opts: list | tuple = ()) -> CfgNode:
    """detectron2's defaults + :func:`~pix2seq_d2.config.defaults.add_pix2seq_config`, then ``config_file``
    and ``opts`` (``KEY VALUE ...``); a missing file is a ``MissingFileError``, an unknown key a
    :class:`ConfigKeyError` naming it and its file. Not frozen."""
    if config_file and "://" not in config_file and not os.path.isfile(config_file):
        raise MissingFileError(f"config file {config_file} does not exist")
    cfg = get_cfg()
    add_pix2seq_config(cfg)
    return merge_config_checked(cfg, config_file, list(opts))
