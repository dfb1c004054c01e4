"""COCO-format datasets registered by name, from the config or from code, loaded by the checked reader.

Register your own COCO-format (instances json) datasets without writing Python::

    DATASETS:
      COCO:   # [name, json_file, image_root] per dataset
        - [mydata_train, /data/mydata/train.json, /data/mydata/images]
        - [mydata_val, /data/mydata/val.json, /data/mydata/images]
      TRAIN: ("mydata_train",)
      TEST: ("mydata_val",)

:func:`register_coco_datasets` registers every entry of ``DATASETS.COCO`` (relative paths are
resolved against the working directory, as detectron2's own paths are, and stored absolute). At
registration only the json file's existence (and the image folder's) is checked; the json is
parsed by :func:`load_coco_json_checked` on the first ``DatasetCatalog.get(name)``, i.e. when a
training or test loader is built (parsing a COCO-size json takes 10-20 s, as detectron2's does).

Registration: a name registered twice with the same json file and image root is a no-op; with
other paths, or a name registered some other way (a detectron2 builtin such as ``coco_2017_val``,
the ``shapes_*`` datasets, ``register_coco_instances``) is a ``ValueError`` naming it; a missing
json file or image folder is a :class:`CocoJsonError` naming ``DATASETS.COCO`` and the path.

Datasets registered by detectron2's ``register_coco_instances`` (by your code, or detectron2's
builtin COCO datasets) are read by the same checked reader once :func:`use_checked_coco_loader`
has seen their names: it registers them again, with :func:`load_coco_json_checked` on the json
file and image root of their metadata, and keeps their metadata. Every entry point calls it for
the datasets it uses: ``prepare_config`` (train nets, trainer, predictor, tools) for
``DATASETS.TRAIN`` and ``DATASETS.TEST``, the training loaders for theirs,
:func:`checked_dataset_dicts` (the LazyConfigs' test loader) for its own. Code that builds
detectron2's loaders itself, without these, gets detectron2's reader: call
:func:`use_checked_coco_loader` (or ``prepare_config``) first. Such datasets keep two leniencies
of detectron2's reader: a json without an ``annotations`` list loads as a test set (images
without objects: COCO's image-info files, e.g. ``coco_2017_test-dev``), and one without images
as an empty dataset (the loaders then name it). Only boxes are loaded, as for ``DATASETS.COCO``.

:func:`coco_ground_truth` is the ground truth of COCO evaluation for a registered dataset, read by
the same reader from the dataset's json file.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Sequence
from typing import Any

from detectron2.config import CfgNode
from detectron2.data import DatasetCatalog, Metadata, MetadataCatalog, get_detection_dataset_dicts
from detectron2.data.datasets import register_coco_instances
from detectron2.utils.file_io import PathManager

from pix2seq_d2.utils.errors import UserError

from .coco import load_coco_ground_truth, load_coco_json_checked
from .coco_reports import CocoJsonError, describe_value

__all__ = [
    "EmptyDatasetError",
    "checked_dataset_dicts",
    "coco_ground_truth",
    "ensure_coco_metadata",
    "is_registered_by_register_coco_instances",
    "register_coco_datasets",
    "register_coco_json",
    "use_checked_coco_loader",
]

logger = logging.getLogger(__name__)


class _CocoJsonLoader:
    """The function registered in ``DatasetCatalog`` by :func:`register_coco_json` and
    :func:`use_checked_coco_loader` (``allow_empty``: detectron2's leniencies, see the module docstring)."""

    def __init__(self, name: str, json_file: str, image_root: str, *, allow_empty: bool = False) -> None:
        self.name, self.json_file, self.image_root, self.allow_empty = name, json_file, image_root, allow_empty

    def __call__(self) -> list[dict]:
        return load_coco_json_checked(self.json_file, self.image_root, self.name, allow_empty=self.allow_empty)

    def __repr__(self) -> str:
        lenient = ", allow_empty=True" if self.allow_empty else ""
        return f"load_coco_json_checked({self.json_file!r}, {self.image_root!r}, {self.name!r}{lenient})"


def _resolve(path: str) -> str:
    path = os.path.expanduser(path)
    return path if "://" in path else os.path.abspath(path)


def _cwd_note(given: str | os.PathLike[str]) -> str:
    """For an error about a path as the user gave it: where a relative one was looked for."""
    return "" if os.path.isabs(os.fspath(given)) else f" (relative to the working directory {os.getcwd()})"


def register_coco_json(
    name: str, json_file: str | os.PathLike[str], image_root: str | os.PathLike[str], *, source: str = ""
) -> None:
    """Register a COCO instances json as dataset ``name``, loaded by :func:`load_coco_json_checked`.

    Relative paths are resolved against the working directory. The json file and the image folder
    must exist (a :class:`CocoJsonError` otherwise); the json is parsed on first use. Registering
    the same name with the same files again is a no-op; a name registered otherwise (other files,
    a detectron2 builtin, ``register_coco_instances``) is a ``ValueError``. ``source`` (e.g. the
    config key) is named in the errors.
    """
    where = f" ({source})" if source else ""
    if not isinstance(name, str) or not name:
        raise ValueError(f"dataset name{where} must be a non-empty string, got {describe_value(name)}")
    json_path, root_path = _resolve(os.fspath(json_file)), _resolve(os.fspath(image_root))
    if name in DatasetCatalog:
        registered = DatasetCatalog[name]  # the registered function, not called
        if isinstance(registered, _CocoJsonLoader):
            if (registered.json_file, registered.image_root) == (json_path, root_path):
                return
            raise ValueError(
                f"dataset {name!r}{where} is already registered with json {registered.json_file} and image root "
                f"{registered.image_root}, not {json_path} and {root_path}: give each dataset its own name"
            )
        raise ValueError(
            f"dataset name {name!r}{where} is already registered ({registered!r}: a detectron2 builtin dataset or "
            "one registered by code): pick another name for your dataset"
        )
    if not PathManager.isfile(json_path):
        state = "is a folder, not a file" if PathManager.isdir(json_path) else "does not exist"
        raise CocoJsonError(f"COCO json file {json_path} of dataset {name!r}{where} {state}{_cwd_note(json_file)}")
    if not PathManager.isdir(root_path):
        raise CocoJsonError(f"image root {root_path} of dataset {name!r}{where} is not a folder{_cwd_note(image_root)}")
    meta = MetadataCatalog.get(name)
    for key, value in (("json_file", json_path), ("image_root", root_path), ("evaluator_type", "coco")):
        old = getattr(meta, key, None)
        if old is not None and old != value:
            raise ValueError(
                f"dataset {name!r}{where}: MetadataCatalog already holds {key}={old!r} for this name (not {value!r}): "
                "pick another name"
            )
    DatasetCatalog.register(name, _CocoJsonLoader(name, json_path, root_path))
    meta.set(json_file=json_path, image_root=root_path, evaluator_type="coco")


def _entries(value: Any) -> list[Sequence[str]]:
    if not isinstance(value, (list, tuple)):
        raise ValueError(f"DATASETS.COCO must be a list of [name, json_file, image_root] entries, got {value!r}")
    if len(value) == 3 and all(isinstance(v, str) for v in value):
        raise ValueError(
            f"DATASETS.COCO is {list(value)!r}: it is a list of [name, json_file, image_root] entries; for one "
            f"dataset write [{list(value)!r}]"
        )
    for position, entry in enumerate(value):
        if not (isinstance(entry, (list, tuple)) and len(entry) == 3 and all(isinstance(v, str) for v in entry)):
            raise ValueError(
                f"DATASETS.COCO entry #{position} is {entry!r}, expected [name, json_file, image_root] (3 strings)"
            )
    return list(value)


def register_coco_datasets(cfg: CfgNode) -> list[str]:
    """Register every ``[name, json_file, image_root]`` of ``cfg.DATASETS.COCO`` with
    :func:`register_coco_json`; returns the names (none if the config has no such key)."""
    names = []
    for position, (name, json_file, image_root) in enumerate(_entries(cfg.DATASETS.get("COCO", []))):
        register_coco_json(name, json_file, image_root, source=f"DATASETS.COCO entry #{position}")
        names.append(name)
    return names


def ensure_coco_metadata(name: str) -> Metadata:
    """``MetadataCatalog.get(name)``, with ``thing_classes`` and the category id mapping set: a dataset
    loaded by :func:`load_coco_json_checked` (:func:`register_coco_json`, :func:`use_checked_coco_loader`)
    gets them when its json is loaded, so it is loaded here if it has not been yet (for the class names
    of a predictor or the demo). Other datasets: as is."""
    meta = MetadataCatalog.get(name)
    if name in DatasetCatalog and isinstance(DatasetCatalog[name], _CocoJsonLoader):
        if getattr(meta, "thing_classes", None) is None:
            DatasetCatalog.get(name)
    return meta


def is_registered_by_register_coco_instances(name: str) -> bool:
    """Whether dataset ``name`` is registered by detectron2's ``register_coco_instances`` (and not
    registered again since): its ``DatasetCatalog`` entry is the function that one defines."""
    if name not in DatasetCatalog:
        return False
    function = DatasetCatalog[name]  # the registered function, not called
    # DatasetCatalog does not say how a name was registered. register_coco_instances registers
    # `lambda: load_coco_json(json_file, image_root, name)`, recognised here by where it is defined;
    # tests/data/datasets/test_register_coco_instances.py fails if detectron2 registers something else.
    defined_in = f"{register_coco_instances.__qualname__}.<locals>."
    return getattr(function, "__module__", None) == register_coco_instances.__module__ and getattr(
        function, "__qualname__", ""
    ).startswith(defined_in)


def use_checked_coco_loader(names: Iterable[str]) -> list[str]:
    """Register again, loaded by :func:`load_coco_json_checked`, each of the datasets ``names`` that is
    registered by detectron2's ``register_coco_instances``: the json file and image root of its
    metadata, its metadata kept. Other names (unregistered ones too) are left as they are. Returns
    the names registered again."""
    changed = []
    for name in dict.fromkeys(names):
        if not is_registered_by_register_coco_instances(name):
            continue
        meta = MetadataCatalog.get(name)
        json_file, image_root = meta.get("json_file"), meta.get("image_root")
        if json_file is None or image_root is None:  # set by register_coco_instances; removed by someone since
            logger.warning(f"dataset {name!r}: its metadata has no json_file or image_root: detectron2 loads it")
            continue
        DatasetCatalog.remove(name)
        DatasetCatalog.register(
            name, _CocoJsonLoader(name, os.fspath(json_file), os.fspath(image_root), allow_empty=True)
        )
        changed.append(name)
    if changed:
        logger.info(f"COCO json datasets registered by register_coco_instances, read by the checked reader: {changed}")
    return changed


class EmptyDatasetError(UserError, ValueError):
    """A dataset (or what filtering left of it) has no images; the message names it."""


def checked_dataset_dicts(names: str | Sequence[str], filter_empty: bool = True) -> list[dict]:
    """Detectron2's ``get_detection_dataset_dicts(names, filter_empty)``, after :func:`use_checked_coco_loader`
    on ``names``; a dataset without images is an :class:`EmptyDatasetError` naming it."""
    names = [names] if isinstance(names, str) else list(names)
    use_checked_coco_loader(names)
    try:
        return get_detection_dataset_dicts(names, filter_empty=filter_empty)
    except AssertionError:  # detectron2 asserts that each dataset, and what filtering leaves, is not empty
        empty = [name for name in names if name in DatasetCatalog and not len(DatasetCatalog.get(name))]
        if not empty:
            raise
        raise EmptyDatasetError(
            f"dataset {', '.join(map(repr, empty))} has no images: check its registration and files"
        ) from None


def coco_ground_truth(name: str) -> dict | None:
    """The ground truth of COCO evaluation on registered dataset ``name``, read by
    :func:`~.coco.load_coco_ground_truth` from its json file: the one it is loaded from when it is
    loaded by :func:`load_coco_json_checked` (:func:`register_coco_json`, :func:`use_checked_coco_loader`),
    else its metadata's ``json_file``. None: neither (a dataset that only exists as dataset dicts)."""
    registered = DatasetCatalog[name] if name in DatasetCatalog else None
    if isinstance(registered, _CocoJsonLoader):
        return load_coco_ground_truth(registered.json_file, name)
    json_file = MetadataCatalog.get(name).get("json_file")
    if json_file is None:
        return None
    return load_coco_ground_truth(PathManager.get_local_path(os.fspath(json_file)))
