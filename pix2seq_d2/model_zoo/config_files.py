"""The configs shipped inside the package, by name: ``get_config_file("quickstart/pix2seq_shapes.yaml")``.

The repository's top-level ``configs/`` folder is the one copy of every config. The package reaches it as
``pix2seq_d2/model_zoo/configs``: in a source checkout (and an editable install) that is a committed
symlink to ``../../configs``; a wheel or a non-editable ``pip install .`` copies the files there
(``package_data`` in ``setup.py``), the way detectron2 ships its configs in ``detectron2.model_zoo``.
Paths are returned with symlinks resolved, so that in a checkout they are the repository's
``configs/...`` files, as before.

A name is the config's path under ``configs/`` (``"pix2seq_R50.yaml"``, ``"official/pix2seq_R50_640.yaml"``,
``"lazy/pix2seq_shapes.py"``); a leading ``configs/`` is accepted too, so that the commands of the README
(``--config-file configs/quickstart/pix2seq_shapes.yaml``) work from any working directory.
"""

from __future__ import annotations

import difflib
import os

from detectron2.config import CfgNode

from pix2seq_d2.config import ConfigError, load_config
from pix2seq_d2.utils.errors import MissingFileError

__all__ = [
    "ConfigNotFoundError",
    "config_names",
    "configs_dir",
    "get_config",
    "get_config_file",
    "resolve_config_path",
    "shipped_config_file",
]

CONFIG_SUFFIXES = (".yaml", ".py")


class ConfigNotFoundError(MissingFileError):
    """A config name that is neither an existing file nor a config shipped with the package."""


def configs_dir() -> str:
    """The folder of the configs shipped with the package (symlinks resolved: ``configs/`` in a checkout)."""
    folder = os.path.realpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "configs"))
    if not os.path.isdir(folder):
        raise MissingFileError(
            f"the configs shipped with pix2seq_d2 are missing: {folder} is not a folder (a checkout without "
            "symlink support, or an install without its package data?); reinstall the package"
        )
    return folder


def config_names() -> list[str]:
    """Every shipped config's name (``"quickstart/pix2seq_shapes.yaml"``, ...), sorted."""
    root = configs_dir()
    names = []
    for folder, _, files in os.walk(root):
        for file in files:
            if file.endswith(CONFIG_SUFFIXES) and file != "__init__.py":
                names.append(os.path.relpath(os.path.join(folder, file), root).replace(os.sep, "/"))
    return sorted(names)


def _packaged(name: str) -> str | None:
    """The shipped config called ``name`` (with or without a leading ``configs/``), or None."""
    relative = name.replace("\\", "/").removeprefix("./").removeprefix("configs/")
    if not relative or os.path.isabs(relative):
        return None
    root = configs_dir()
    path = os.path.normpath(os.path.join(root, relative))
    if os.path.commonpath([root, path]) != root:  # "../x" does not leave the configs folder
        return None
    return path if os.path.isfile(path) else None


def shipped_config_file(name: str) -> str:
    """The absolute path of the config shipped as ``name`` (``"official/pix2seq_R50_640.yaml"``, a leading
    ``configs/`` allowed), whatever the working directory holds. Raises :class:`ConfigNotFoundError`
    naming the closest shipped configs when there is none."""
    path = _packaged(name)
    if path is None:
        names = config_names()
        wanted = name.replace("\\", "/").removeprefix("configs/")
        close = difflib.get_close_matches(wanted, names, n=3, cutoff=0.5)
        hint = f"; did you mean {' or '.join(close)}?" if close else f"; shipped configs: {', '.join(names)}"
        raise ConfigNotFoundError(
            f"config {name} is neither a file nor a config shipped with pix2seq_d2 (under {configs_dir()}){hint}"
        )
    return path


def get_config_file(name: str | os.PathLike) -> str:
    """The file of config ``name``: an existing path as is, else the shipped config of that name
    (``"quickstart/pix2seq_shapes.yaml"`` or ``"configs/quickstart/pix2seq_shapes.yaml"``, see
    :func:`shipped_config_file`). Raises :class:`ConfigNotFoundError` (a
    :class:`~pix2seq_d2.utils.errors.UserError`) naming the closest shipped configs when it is neither."""
    name = os.fspath(name)
    return name if os.path.isfile(name) else shipped_config_file(name)


def resolve_config_path(name: str) -> str:
    """:func:`get_config_file` for a command line's ``--config-file``: the existing file or the shipped
    config of that name; anything else is returned unchanged, so that reading it reports the missing file
    as before (``error: config file X does not exist``)."""
    try:
        return get_config_file(name)
    except ConfigNotFoundError:
        return name


def get_config(name: str | os.PathLike, opts: list | tuple = ()) -> CfgNode:
    """The yaml config ``name`` (see :func:`get_config_file`) read by :func:`pix2seq_d2.config.load_config`:
    detectron2's defaults + the Pix2Seq keys + the file + ``opts`` (``KEY VALUE ...``); not frozen."""
    path = get_config_file(name)
    if not path.endswith(".yaml"):
        raise ConfigError([f"{path} is not a yaml config; read LazyConfigs (.py) with detectron2's LazyConfig.load"])
    return load_config(path, opts)
