"""COCO evaluation for Pix2Seq: average recall next to average precision, on a choice of COCO API, with the
ground truth read by the checked COCO reader.

``COCOEvaluatorWithRecall`` is a detectron2 ``DatasetEvaluator`` that reports what detectron2's
``COCOEvaluator`` reports for boxes (the same metric names and numbers, per-category AP, the
``instances_predictions.pth`` and ``coco_instances_results.json`` files), with three differences:

* **The ground truth** is read by :func:`~pix2seq_d2.data.datasets.coco_ground_truth`: the dataset's
  json file through the same checks as training (a json with a UTF-8 BOM or in UTF-16, which the
  loader accepts, evaluates instead of crashing pycocotools at the end of training; boxes the
  loader skipped are left out, not counted as misses; ids, ``area`` and ``iscrowd`` as in the
  file). A dataset without a json file is converted from its dataset dicts, as detectron2 does.
* **Average recall.** Detectron2 keeps only the six AP numbers of ``COCOeval.summarize``.
  Pix2Seq's decoding choices (stopping at EOS or decoding a fixed number of objects, sequence
  augmentation) trade precision for recall, so ``COCOEvaluatorWithRecall`` also returns the six
  AR numbers (``AR@1``, ``AR@10``, ``AR@100``, ``ARs@100``, ``ARm@100``, ``ARl@100``; the last
  value of ``maxDets`` stands for 100 when ``max_dets_per_image`` is larger). They land in
  ``metrics.json`` as ``bbox/AR@100`` etc.
* **The COCO API backend** (``cfg.TEST.COCO_EVAL_BACKEND``). ``"pycocotools"`` is the official
  Python implementation. ``"faster_coco_eval"`` (the ``faster-coco-eval`` package) runs the
  per-image matching and the accumulation in C++: the same 12 numbers (equal to within float
  rounding, ~1e-16) several times faster. ``"auto"`` (the default) uses faster-coco-eval when it
  can be imported and otherwise falls back to pycocotools with a logged warning; naming
  ``"faster_coco_eval"`` explicitly without the package installed is an error.

Detectron2's own "fast" path (``use_fast_impl``) needs its compiled ``detectron2._C`` extension,
which the PyPI build lacks; this evaluator never uses it. With ``max_dets_per_image`` other
than 100, detectron2 silently swaps in its pycocotools-based ``COCOevalMaxDets``; here the
chosen backend is kept (faster-coco-eval summarizes AP at the last ``maxDets`` natively).

``evaluate_on_coco`` runs one evaluation outside detectron2 (``tools/benchmark_coco_eval.py``
uses it to time both backends on the same predictions).

The evaluator uses detectron2's public API only (``DatasetEvaluator``, ``instances_to_coco_json``,
``convert_to_coco_dict``, ``COCOevalMaxDets``): it does not subclass ``COCOEvaluator``, whose
``__init__`` reads the json with pycocotools and whose evaluation would have to be copied to change
the backend. ``tests/evaluation/test_coco_evaluation.py`` checks that it gives ``COCOEvaluator``'s
numbers and metric names on the same predictions, so a change in detectron2's evaluator shows there.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import itertools
import json
import logging
import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from detectron2.data import MetadataCatalog
from detectron2.data.datasets.coco import convert_to_coco_dict
from detectron2.evaluation import DatasetEvaluator
from detectron2.evaluation.coco_evaluation import COCOevalMaxDets, instances_to_coco_json
from detectron2.utils import comm
from detectron2.utils.file_io import PathManager
from detectron2.utils.logger import create_small_table

from pix2seq_d2.data.datasets import coco_ground_truth, load_coco_ground_truth, use_checked_coco_loader

logger = logging.getLogger(__name__)

RECALL_METRICS = ("AR@1", "AR@10", "AR@100", "ARs@100", "ARm@100", "ARl@100")

BACKENDS = ("pycocotools", "faster_coco_eval")
BACKEND_CHOICES = ("auto", *BACKENDS)


def faster_coco_eval_available() -> bool:
    """Whether the ``faster_coco_eval`` package (with its compiled extension) can be imported."""
    try:
        importlib.import_module("faster_coco_eval")
    except ImportError:
        return False
    return True


def resolve_coco_eval_backend(name: str) -> str:
    """Turn a ``TEST.COCO_EVAL_BACKEND`` value into the backend to use: one of ``BACKENDS``.

    ``"auto"`` gives ``"faster_coco_eval"`` when it is installed, else ``"pycocotools"`` with a
    warning. Raises ``ValueError`` for an unknown name and ``ImportError`` when
    ``"faster_coco_eval"`` is asked for by name but cannot be imported.
    """
    if name not in BACKEND_CHOICES:
        raise ValueError(
            f"Unknown COCO evaluation backend {name!r} (TEST.COCO_EVAL_BACKEND); "
            f"choose one of {', '.join(repr(b) for b in BACKEND_CHOICES)}."
        )
    if name == "auto":
        if faster_coco_eval_available():
            return "faster_coco_eval"
        logger.warning(
            "faster-coco-eval is not installed: COCO evaluation falls back to pycocotools "
            "(same numbers, several times slower). `pip install faster-coco-eval` to speed it up."
        )
        return "pycocotools"
    if name == "faster_coco_eval" and not faster_coco_eval_available():
        raise ImportError(
            "TEST.COCO_EVAL_BACKEND is 'faster_coco_eval' but the faster_coco_eval package cannot be "
            "imported: `pip install faster-coco-eval`, or set the backend to 'auto' or 'pycocotools'."
        )
    return name


def _check_backend(backend: str) -> None:
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS} (resolve 'auto' first), got {backend!r}")


def load_coco_gt(annotations: str | os.PathLike[str] | dict[str, Any], backend: str) -> Any:
    """Ground truth as the backend's ``COCO`` object, from a COCO json path (read by the checked reader,
    :func:`~pix2seq_d2.data.datasets.load_coco_ground_truth`) or an already loaded dict.

    A dict is used as is (not copied): evaluation adds bookkeeping keys such as ``ignore`` to its
    annotations, as both COCO APIs do.
    """
    _check_backend(backend)
    if not isinstance(annotations, dict):
        annotations = load_coco_ground_truth(PathManager.get_local_path(os.fspath(annotations)))
    if backend == "faster_coco_eval":
        from faster_coco_eval import COCO

        return COCO(annotations)
    from pycocotools.coco import COCO

    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints its indexing progress
        coco = COCO()
        coco.dataset = annotations
        coco.createIndex()
        return coco


def load_coco_results(coco_gt: Any, coco_results: Sequence[dict[str, Any]], iou_type: str) -> Any:
    """Predictions in COCO result format as a ``COCO`` object of ``coco_gt``'s backend (``loadRes``).

    The result dicts are copied first (``loadRes`` adds ``id``, ``area``, ... to them), so the same
    list can be evaluated again. For ``"segm"`` the boxes are left out, so that the object size used
    for small/medium/large is the mask area (as detectron2 does).
    """
    if iou_type == "segm":
        results = [{k: v for k, v in r.items() if k != "bbox"} for r in coco_results]
    else:
        results = [dict(r) for r in coco_results]
    with contextlib.redirect_stdout(io.StringIO()):
        return coco_gt.loadRes(results)


def build_cocoeval(
    coco_gt: Any,
    coco_dt: Any,
    iou_type: str,
    backend: str,
    *,
    max_dets_per_image: Sequence[int] | None = None,
    img_ids: Sequence[int] | None = None,
    kpt_oks_sigmas: Sequence[float] = (),
) -> Any:
    """A configured, not yet run ``COCOeval`` of ``backend`` (``coco_gt``/``coco_dt`` of the same backend).

    ``max_dets_per_image`` is COCO's ``maxDets`` (at least three values, default ``[1, 10, 100]``;
    AP uses the last one); it is not applied to keypoints, whose ``maxDets`` is 20 in both APIs.
    """
    _check_backend(backend)
    max_dets = list(max_dets_per_image) if max_dets_per_image is not None else [1, 10, 100]
    if len(max_dets) < 3:
        raise ValueError(f"max_dets_per_image needs at least 3 values (COCO's maxDets), got {max_dets}")
    if backend == "faster_coco_eval":
        from faster_coco_eval import COCOeval_faster

        # print_function=print: the summary goes to stdout, as pycocotools prints it.
        coco_eval = COCOeval_faster(coco_gt, coco_dt, iou_type, print_function=print)
    elif max_dets[2] == 100:
        from pycocotools.cocoeval import COCOeval

        coco_eval = COCOeval(coco_gt, coco_dt, iou_type)
    else:
        # pycocotools' summarize() reports AP at maxDets=100 only; detectron2's subclass uses maxDets[2].
        coco_eval = COCOevalMaxDets(coco_gt, coco_dt, iou_type)
    if iou_type != "keypoints":
        coco_eval.params.maxDets = max_dets
    if img_ids is not None:
        coco_eval.params.imgIds = list(img_ids)
    if iou_type == "keypoints" and kpt_oks_sigmas:
        coco_eval.params.kpt_oks_sigmas = np.array(kpt_oks_sigmas)
    return coco_eval


def evaluate_on_coco(
    coco_gt: Any,
    coco_results: Sequence[dict[str, Any]],
    iou_type: str,
    backend: str,
    *,
    max_dets_per_image: Sequence[int] | None = None,
    img_ids: Sequence[int] | None = None,
    kpt_oks_sigmas: Sequence[float] = (),
) -> Any:
    """Evaluate, accumulate and summarize ``coco_results`` against ``coco_gt`` (from ``load_coco_gt``
    with the same ``backend``); returns the ``COCOeval`` whose ``stats`` holds the 12 summary numbers.

    ``coco_results`` must not be empty (neither COCO API handles that well) and is not modified.
    """
    if len(coco_results) == 0:
        raise ValueError("evaluate_on_coco needs at least one prediction")
    coco_dt = load_coco_results(coco_gt, coco_results, iou_type)
    coco_eval = build_cocoeval(
        coco_gt, coco_dt, iou_type, backend,
        max_dets_per_image=max_dets_per_image, img_ids=img_ids, kpt_oks_sigmas=kpt_oks_sigmas,
    )  # fmt: skip
    coco_eval.evaluate()
    coco_eval.accumulate()
    coco_eval.summarize()
    return coco_eval


_METRICS = {
    "bbox": ("AP", "AP50", "AP75", "APs", "APm", "APl"),
    "segm": ("AP", "AP50", "AP75", "APs", "APm", "APl"),
    "keypoints": ("AP", "AP50", "AP75", "APm", "APl"),
}


def _percent(names: Sequence[str], stats: Sequence[float]) -> dict[str, float]:
    """COCO summary numbers (fractions; -1: undefined) as percent, NaN where undefined."""
    return {name: float(v * 100) if v >= 0 else float("nan") for name, v in zip(names, stats)}


def per_category_ap(coco_eval: Any, class_names: Sequence[str]) -> dict[str, float]:
    """``AP-<class name>`` of each category (all sizes, the last ``maxDets``), in percent: the mean
    precision over IoU thresholds and recall levels where it is defined (NaN where never)."""
    precision = coco_eval.eval["precision"]  # [IoU threshold, recall, category, area range, max dets]
    if precision.shape[2] != len(class_names):
        raise ValueError(
            f"COCO evaluation has {precision.shape[2]} categories but the dataset's thing_classes has "
            f"{len(class_names)} names: do its json's categories match its metadata?"
        )
    results = {}
    for k, name in enumerate(class_names):
        values = precision[:, :, k, 0, -1]
        values = values[values > -1]
        results[f"AP-{name}"] = float(np.mean(values) * 100) if values.size else float("nan")
    return results


def _category_table(per_category: dict[str, float], columns: int = 3) -> str:
    items = [(name.removeprefix("AP-"), f"{ap:.3f}") for name, ap in per_category.items()]
    width = max(len(name) for name, _ in items)
    cells = [f"{name:<{width}} {ap:>7}" for name, ap in items]
    return "\n".join(" | ".join(cells[i : i + columns]) for i in range(0, len(cells), columns))


class COCOEvaluatorWithRecall(DatasetEvaluator):
    """COCO AP (as detectron2's ``COCOEvaluator`` reports it) plus average recall, evaluated by a chosen COCO
    API, on ground truth read by the checked COCO reader (see the module docstring).

    Takes ``COCOEvaluator``'s arguments (``use_fast_impl`` and ``allow_cached_coco`` are accepted and have
    no effect: the backend replaces the first, and a dataset without a json file is converted in memory)
    plus ``backend``: a ``TEST.COCO_EVAL_BACKEND`` value, ``"auto"`` | ``"pycocotools"`` | ``"faster_coco_eval"``.
    """

    def __init__(
        self,
        dataset_name: str,
        tasks: Sequence[str] | None = None,
        distributed: bool = True,
        output_dir: str | None = None,
        *,
        max_dets_per_image: int | None = None,
        kpt_oks_sigmas: Sequence[float] = (),
        backend: str = "auto",
        use_fast_impl: bool = False,
        allow_cached_coco: bool = True,
    ):
        self.backend = resolve_coco_eval_backend(backend)  # fails before the annotations are read
        self.dataset_name = dataset_name
        self.tasks = tuple(tasks) if tasks else None
        self.distributed = distributed
        self.output_dir = output_dir
        self.max_dets_per_image = [1, 10, 100 if max_dets_per_image is None else int(max_dets_per_image)]
        self.kpt_oks_sigmas = tuple(kpt_oks_sigmas)
        self.metadata = MetadataCatalog.get(dataset_name)
        # A register_coco_instances dataset is read by the checked reader, which sets the class metadata that
        # maps the predictions back to category ids, even if the dataset was not loaded yet.
        use_checked_coco_loader([dataset_name])
        ground_truth = coco_ground_truth(dataset_name)
        if ground_truth is None:
            logger.info(f"Dataset {dataset_name!r} has no COCO json file: its dataset dicts are converted to COCO")
            ground_truth = convert_to_coco_dict(dataset_name)
        # A test set's image-info json has no annotations: the predictions are written, not evaluated.
        self.has_annotations = "annotations" in ground_truth
        self.coco_gt = load_coco_gt(ground_truth, self.backend)
        self.reset()

    def reset(self) -> None:
        self._predictions: list[dict[str, Any]] = []

    def process(self, inputs: list[dict], outputs: list[dict]) -> None:
        """Keep each image's detections (``outputs[i]["instances"]``) in COCO result format."""
        for inp, out in zip(inputs, outputs):
            if "instances" in out:
                instances = out["instances"].to("cpu")
                self._predictions.append(
                    {"image_id": inp["image_id"], "instances": instances_to_coco_json(instances, inp["image_id"])}
                )

    def evaluate(self, img_ids: Sequence[int] | None = None) -> dict[str, dict[str, float]]:
        """``{task: {metric: value}}`` (on the main process; ``{}`` on the others); ``img_ids``: only these
        images (default: all)."""
        predictions = self._predictions
        if self.distributed:
            comm.synchronize()
            predictions = list(itertools.chain.from_iterable(comm.gather(predictions, dst=0)))
            if not comm.is_main_process():
                return {}
        if not predictions:
            logger.warning(f"COCOEvaluatorWithRecall on {self.dataset_name!r} received no predictions")
            return {}
        if self.output_dir:
            PathManager.mkdirs(self.output_dir)
            with PathManager.open(os.path.join(self.output_dir, "instances_predictions.pth"), "wb") as f:
                torch.save(predictions, f)
        coco_results = self._coco_results(predictions)
        if not self.has_annotations:
            logger.info(f"Dataset {self.dataset_name!r} has no annotations: the predictions are not evaluated")
            return {}
        logger.info(f"Evaluating predictions with the {self.backend} COCO API ...")
        results = {}
        for task in sorted(self.tasks or self._tasks_of(coco_results)):
            coco_eval = (
                evaluate_on_coco(
                    self.coco_gt,
                    coco_results,
                    task,
                    self.backend,
                    max_dets_per_image=self.max_dets_per_image,
                    img_ids=img_ids,
                    kpt_oks_sigmas=self.kpt_oks_sigmas,
                )  # fmt: skip
                if coco_results
                else None  # no detection at all: every metric is NaN
            )
            results[task] = self._metrics(coco_eval, task)
        return results

    @staticmethod
    def _tasks_of(coco_results: list[dict]) -> set[str]:
        tasks = {"bbox"}
        for result in coco_results:
            tasks.update(task for task, key in (("segm", "segmentation"), ("keypoints", "keypoints")) if key in result)
        return tasks

    def _coco_results(self, predictions: list[dict]) -> list[dict]:
        """The detections of every image, with the model's classes mapped back to the dataset's category ids;
        written to ``coco_instances_results.json`` in the output folder."""
        coco_results = list(itertools.chain.from_iterable(p["instances"] for p in predictions))
        id_map = self.metadata.get("thing_dataset_id_to_contiguous_id")
        if id_map is not None:
            contiguous_to_dataset = {v: k for k, v in id_map.items()}
            for result in coco_results:
                if result["category_id"] not in contiguous_to_dataset:
                    raise ValueError(
                        f"A prediction has class {result['category_id']}, but the dataset only has "
                        f"{len(contiguous_to_dataset)} classes (0..{len(contiguous_to_dataset) - 1})."
                    )
                result["category_id"] = contiguous_to_dataset[result["category_id"]]
        if self.output_dir:
            file_path = os.path.join(self.output_dir, "coco_instances_results.json")
            logger.info(f"Saving results to {file_path}")
            with PathManager.open(file_path, "w") as f:
                f.write(json.dumps(coco_results))
        return coco_results

    def _metrics(self, coco_eval: Any, task: str) -> dict[str, float]:
        """The summary metrics in percent (NaN where undefined), ``AP-<class>`` and, for boxes, AR."""
        names = _METRICS[task]
        if coco_eval is None:
            logger.warning(f"No predictions from the model on {self.dataset_name!r}: every {task} metric is NaN")
            results = {name: float("nan") for name in names}
        else:
            results = _percent(names, coco_eval.stats)
            logger.info(f"Evaluation results for {task}: \n" + create_small_table(results))
            class_names = self.metadata.get("thing_classes")
            if class_names is not None and len(class_names) > 1:
                per_category = per_category_ap(coco_eval, class_names)
                logger.info(f"Per-category {task} AP:\n" + _category_table(per_category))
                results.update(per_category)
        if task == "bbox":
            stats = coco_eval.stats[6:12] if coco_eval is not None else [-1.0] * len(RECALL_METRICS)
            results.update(_percent(RECALL_METRICS, stats))
        return results
