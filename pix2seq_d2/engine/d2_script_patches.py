"""What ``tools/d2_tool.py`` installs so that detectron2's own tool scripts run unchanged on Pix2Seq.

detectron2's ``tools/`` scripts (``analyze_model.py``, ``benchmark.py``, ``visualize_data.py``,
``visualize_json_results.py``, ``deploy/export_model.py``) build everything through a handful of
module-level names that they import when they start (``from detectron2.config import get_cfg``,
``from detectron2.data import build_detection_train_loader``, ...). They have no plugin hook: no
config key or argument selects another config schema, mapper, optimizer or FLOP counter. The only
way in is to replace those names on detectron2's modules *before* the script is run, so that its
``from ... import`` picks up ours. :data:`PATCHES` lists every replaced name, each with one small
function below that says what it adds; :func:`installed` installs them and restores detectron2's
on exit. ``tests/test_d2_tool.py`` checks that each name still exists in detectron2 and that the
scripts still import the names patched here, so a detectron2 change fails loudly there.

Every replacement hands anything that is not a Pix2Seq config (``MODEL.META_ARCHITECTURE`` other
than ``"Pix2Seq"``) to detectron2's original, unchanged.

The originals are called through the modules that define them (``detectron2.data.build``,
``detectron2.solver.build``, ...), which are never patched; this package's own modules bind
detectron2's names when they are imported, before anything is patched.
"""

from __future__ import annotations

import contextlib
import importlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import detectron2.config.config as d2_config
import detectron2.data.build as d2_data_build
import detectron2.modeling.meta_arch.build as d2_model_build
import detectron2.solver.build as d2_solver_build
import torch
from detectron2.config import CfgNode
from torch import nn

from pix2seq_d2.analysis.flops import FlopCountAnalysis
from pix2seq_d2.config import add_pix2seq_config, prepare_config
from pix2seq_d2.data.dataset_mapper import Pix2SeqDatasetMapper
from pix2seq_d2.solver.build import build_optimizer as pix2seq_build_optimizer

from .trainer import Pix2SeqTrainer

__all__ = [
    "PATCHES",
    "SHIMS",
    "Caffe2TracerUnavailable",
    "Patch",
    "installed",
    "is_pix2seq",
]


def is_pix2seq(cfg: Any) -> bool:
    """Whether ``cfg`` is a yacs config of a Pix2Seq model (LazyConfigs and other models: False)."""
    return isinstance(cfg, CfgNode) and cfg.get("MODEL", {}).get("META_ARCHITECTURE") == "Pix2Seq"


# ---- one replacement per patched name ---------------------------------------------------------
def get_cfg() -> CfgNode:
    """detectron2's defaults plus the Pix2Seq keys (``add_pix2seq_config``).

    Replaces ``detectron2.config.get_cfg``: the scripts build their config with ``get_cfg()`` then
    ``merge_from_file``, which refuses keys the defaults lack (``MODEL.PIX2SEQ``, ``DATASETS.COCO``, ...).
    """
    cfg = d2_config.get_cfg()
    add_pix2seq_config(cfg)
    return cfg


def build_detection_train_loader(cfg: Any, *args: Any, **kwargs: Any):
    """Pix2Seq configs: ``Pix2SeqTrainer.build_train_loader`` (``Pix2SeqDatasetMapper``: our
    augmentation, boxes and token sequences; the resumable, seeded sampler). A call that passes its
    own mapper or dataset, and any other config, goes to detectron2's loader unchanged.

    Replaces ``detectron2.data.build_detection_train_loader``: detectron2's default mapper knows
    nothing of Pix2Seq (no token sequences: the model cannot train on its output).
    """
    if not is_pix2seq(cfg) or args or kwargs:
        return d2_data_build.build_detection_train_loader(cfg, *args, **kwargs)
    return Pix2SeqTrainer.build_train_loader(prepare_config(cfg, for_training=False))


def _train_loader_from_config(cfg: Any, mapper: Callable | None = None, **kwargs: Any) -> dict:
    """``build_detection_train_loader.from_config`` (benchmark.py's data benchmark reads the loader's
    arguments through it) with the Pix2Seq training mapper for Pix2Seq configs."""
    original = d2_data_build.build_detection_train_loader.from_config
    if not is_pix2seq(cfg):
        return original(cfg, mapper, **kwargs)
    cfg = prepare_config(cfg, for_training=False)
    return original(cfg, mapper or Pix2SeqDatasetMapper(cfg, is_train=True), **kwargs)


build_detection_train_loader.from_config = _train_loader_from_config


def build_detection_test_loader(cfg: Any, dataset_name: Any = None, *args: Any, mapper: Callable | None = None, **kw):
    """Pix2Seq configs without a mapper of the caller's: detectron2's test loader with the Pix2Seq test
    mapper (test resize, ``INPUT.FORMAT``). It reads no annotations: the scripts measure, export or
    evaluate detection, and ground-truth sequences would make ``model.inference`` add a
    teacher-forced likelihood pass to the counted FLOPs and timings.

    Replaces ``detectron2.data.build_detection_test_loader``: detectron2's default mapper resizes
    with ``ResizeShortestEdge`` only (not ``INPUT.RESIZE_TEST "longest_side"``) and reads images
    without this package's checks.
    """
    if not is_pix2seq(cfg) or mapper is not None or args or dataset_name is None:
        return d2_data_build.build_detection_test_loader(cfg, dataset_name, *args, mapper=mapper, **kw)
    cfg = prepare_config(cfg, for_training=False)
    test_mapper = Pix2SeqDatasetMapper(cfg, is_train=False, use_annotations=False)
    return d2_data_build.build_detection_test_loader(cfg, dataset_name, mapper=test_mapper, **kw)


def build_optimizer(cfg: Any, model: nn.Module) -> torch.optim.Optimizer:
    """Pix2Seq configs: the Pix2Seq optimizer (``SOLVER.OPTIMIZER``: AdamW, weight-decay groups,
    gradient clipping), as ``Pix2SeqTrainer`` trains.

    Replaces ``detectron2.solver.build_optimizer``: detectron2's builds SGD only.
    """
    if not is_pix2seq(cfg):
        return d2_solver_build.build_optimizer(cfg, model)
    return pix2seq_build_optimizer(cfg, model)


def build_model(cfg: Any) -> nn.Module:
    """Pix2Seq configs: detectron2's ``build_model`` after :func:`prepare_config` (datasets registered,
    ``NUM_CLASSES 0`` taken from the training set), as ``Pix2SeqTrainer.build_model`` builds it.

    Replaces ``detectron2.modeling.build_model``: with ``NUM_CLASSES 0`` ("auto") detectron2's
    fails building a tokenizer of zero classes.
    """
    if not is_pix2seq(cfg):
        return d2_model_build.build_model(cfg)
    return d2_model_build.build_model(prepare_config(cfg, for_training=False))


# ``FlopCountAnalysis`` is replaced by pix2seq_d2.analysis.flops.FlopCountAnalysis: detectron2's class plus a
# handle for aten::scaled_dot_product_attention, which fvcore does not count (every attention layer
# of Pix2Seq calls it: its FLOPs would silently be missing). Correct for any model, so not limited to
# Pix2Seq configs.


class Caffe2TracerUnavailable:
    """Stands in for ``detectron2.export.Caffe2Tracer`` where caffe2 is not installed (PyTorch 2 has none).

    detectron2 defines ``Caffe2Tracer`` only when caffe2 imports, but ``deploy/export_model.py`` imports
    it unconditionally, so without caffe2 the script cannot even start its ``--export-method tracing``
    or ``scripting`` exports. Using it (``--export-method caffe2_tracing``, the script's default) is an
    error that names the way out.
    """

    def __init__(self, *args: Any, **kwargs: Any):
        raise RuntimeError(
            "Caffe2Tracer needs caffe2, which is not installed (PyTorch 2 ships none): export Pix2Seq with "
            "--export-method tracing --format torchscript (or onnx)"
        )


# ---- installing them ----------------------------------------------------------------------------
@dataclass(frozen=True)
class Patch:
    """One name on a detectron2 module, replaced while :func:`installed` is active."""

    module: str  # e.g. "detectron2.data"
    name: str  # e.g. "build_detection_train_loader"
    replacement: Any
    scripts: tuple[str, ...]  # detectron2 tool scripts that import it (checked by the tests)


_ALL = ("analyze_model.py", "benchmark.py", "visualize_data.py", "deploy/export_model.py")

PATCHES: tuple[Patch, ...] = (
    Patch("detectron2.config", "get_cfg", get_cfg, _ALL),
    Patch("detectron2.data", "build_detection_train_loader", build_detection_train_loader,
          ("benchmark.py", "visualize_data.py")),
    Patch("detectron2.data", "build_detection_test_loader", build_detection_test_loader,
          ("analyze_model.py", "benchmark.py", "deploy/export_model.py")),
    Patch("detectron2.solver", "build_optimizer", build_optimizer, ("benchmark.py",)),
    Patch("detectron2.modeling", "build_model", build_model,
          ("analyze_model.py", "benchmark.py", "deploy/export_model.py")),
    Patch("detectron2.utils.analysis", "FlopCountAnalysis", FlopCountAnalysis, ("analyze_model.py",)),
)  # fmt: skip
"""Every name replaced, with the scripts that import it. ``visualize_json_results.py`` imports none of
them: it needs only the datasets registered (see ``tools/d2_tool.py``)."""

SHIMS: tuple[Patch, ...] = (
    Patch("detectron2.export", "Caffe2Tracer", Caffe2TracerUnavailable, ("deploy/export_model.py",)),
)
"""Names a script imports that this detectron2 may lack (optional dependencies): set only when missing."""


@contextlib.contextmanager
def installed(patches: tuple[Patch, ...] = PATCHES, shims: tuple[Patch, ...] = SHIMS) -> Iterator[None]:
    """Replace every name of ``patches`` on its detectron2 module and add the ``shims`` its module lacks;
    on exit detectron2's names are restored and the shims removed (also when the script raises or
    exits). A patched name missing from its module is an ``AttributeError``: detectron2 changed, and
    the script would silently bypass the replacement."""
    restore: list[tuple[Any, str, Any]] = []  # (module, name, original or _MISSING)
    try:
        for patch in patches:
            module = importlib.import_module(patch.module)
            if not hasattr(module, patch.name):
                raise AttributeError(
                    f"{patch.module}.{patch.name} no longer exists in detectron2: "
                    "pix2seq_d2.engine.d2_script_patches cannot replace it (update PATCHES)"
                )
            restore.append((module, patch.name, getattr(module, patch.name)))
            setattr(module, patch.name, patch.replacement)
        for shim in shims:
            module = importlib.import_module(shim.module)
            if not hasattr(module, shim.name):
                restore.append((module, shim.name, _MISSING))
                setattr(module, shim.name, shim.replacement)
        yield
    finally:
        for module, name, original in reversed(restore):
            if original is _MISSING:
                delattr(module, name)
            else:
                setattr(module, name, original)


_MISSING = object()
