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
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from detectron2.config import CfgNode
from detectron2.data import DatasetCatalog, Metadata, MetadataCatalog
from detectron2.utils.file_io import PathManager

from .coco import load_coco_json_checked
from .coco_validation import CocoJsonError, describe_value

__all__ = ["ensure_coco_metadata", "register_coco_datasets", "register_coco_json"]


class _CocoJsonLoader:
    """The function registered in ``DatasetCatalog`` by :func:`register_coco_json`."""

    def __init__(self, name: str, json_file: str, image_root: str) -> None:
        self.name, self.json_file, self.image_root = name, json_file, image_root

    def __call__(self) -> list[dict]:
        return load_coco_json_checked(self.json_file, self.image_root, self.name)

    def __repr__(self) -> str:
        return f"load_coco_json_checked({self.json_file!r}, {self.image_root!r}, {self.name!r})"


def _resolve(path: str) -> str:
    path = os.path.expanduser(path)
    return path if "://" in path else os.path.abspath(path)


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
    relative = "" if os.path.isabs(os.fspath(json_file)) else f" (relative to the working directory {os.getcwd()})"
    if not PathManager.isfile(json_path):
        state = "is a folder, not a file" if PathManager.isdir(json_path) else "does not exist"
        raise CocoJsonError(f"COCO json file {json_path} of dataset {name!r}{where} {state}{relative}")
    if not PathManager.isdir(root_path):
        relative = "" if os.path.isabs(os.fspath(image_root)) else f" (relative to the working directory {os.getcwd()})"
        raise CocoJsonError(f"image root {root_path} of dataset {name!r}{where} is not a folder{relative}")
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
    registered by :func:`register_coco_json` gets them when its json is loaded, so it is loaded here
    if it has not been yet (for the class names of a predictor or the demo). Other datasets: as is."""
    meta = MetadataCatalog.get(name)
    if name in DatasetCatalog and isinstance(DatasetCatalog[name], _CocoJsonLoader):
        if getattr(meta, "thing_classes", None) is None:
            DatasetCatalog.get(name)
    return meta
