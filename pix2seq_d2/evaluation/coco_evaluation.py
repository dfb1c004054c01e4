"""COCO evaluation for Pix2Seq: average recall next to average precision, on a choice of COCO API.

Two things differ from detectron2's ``COCOEvaluator``:

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
from detectron2.evaluation import COCOEvaluator
from detectron2.evaluation.coco_evaluation import COCOevalMaxDets
from detectron2.utils.file_io import PathManager

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
    """Ground truth as the backend's ``COCO`` object, from a COCO json path or an already loaded dict.

    A dict is used as is (not copied): evaluation adds bookkeeping keys such as ``ignore`` to its
    annotations, as both COCO APIs do.
    """
    _check_backend(backend)
    if backend == "faster_coco_eval":
        from faster_coco_eval import COCO

        return COCO(os.fspath(annotations) if not isinstance(annotations, dict) else annotations)
    from pycocotools.coco import COCO

    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints its loading progress
        if isinstance(annotations, dict):
            coco = COCO()
            coco.dataset = annotations
            coco.createIndex()
            return coco
        return COCO(os.fspath(annotations))


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


class COCOEvaluatorWithRecall(COCOEvaluator):
    """``COCOEvaluator`` whose box results include average recall, evaluated by a chosen COCO API.

    Takes ``COCOEvaluator``'s arguments (except ``use_fast_impl``) plus ``backend``: a
    ``TEST.COCO_EVAL_BACKEND`` value, ``"auto"`` | ``"pycocotools"`` | ``"faster_coco_eval"``.
    """

    def __init__(
        self,
        dataset_name: str,
        tasks: Sequence[str] | None = None,
        distributed: bool = True,
        output_dir: str | None = None,
        *,
        backend: str = "auto",
        **kwargs: Any,
    ):
        self.backend = resolve_coco_eval_backend(backend)  # fails before the annotations are loaded
        # use_fast_impl=False: detectron2's fast path needs detectron2._C; the backend replaces it.
        super().__init__(dataset_name, tasks, distributed, output_dir, use_fast_impl=False, **kwargs)
        self._backend_coco_gt = None  # ground truth as the backend's COCO object, loaded on first use

    def _coco_gt_for_backend(self) -> Any:
        if self.backend == "pycocotools":
            return self._coco_api  # COCOEvaluator loaded it with pycocotools already
        if self._backend_coco_gt is None:
            # Read the json again rather than share annotation dicts between the two APIs.
            self._backend_coco_gt = load_coco_gt(PathManager.get_local_path(self._metadata.json_file), self.backend)
        return self._backend_coco_gt

    def _eval_predictions(self, predictions: list[dict[str, Any]], img_ids: Sequence[int] | None = None) -> None:
        """Like ``COCOEvaluator._eval_predictions``, with the evaluation run by ``self.backend``."""
        coco_results = list(itertools.chain.from_iterable(p["instances"] for p in predictions))
        tasks = self._tasks or self._tasks_from_predictions(coco_results)

        # The model predicts contiguous class indices; COCO results use the dataset's category ids.
        id_map = getattr(self._metadata, "thing_dataset_id_to_contiguous_id", None)
        if id_map is not None:
            contiguous_to_dataset = {v: k for k, v in id_map.items()}
            for result in coco_results:
                if result["category_id"] not in contiguous_to_dataset:
                    raise ValueError(
                        f"A prediction has class {result['category_id']}, but the dataset only has "
                        f"{len(contiguous_to_dataset)} classes (0..{len(contiguous_to_dataset) - 1})."
                    )
                result["category_id"] = contiguous_to_dataset[result["category_id"]]

        if self._output_dir:
            file_path = os.path.join(self._output_dir, "coco_instances_results.json")
            self._logger.info(f"Saving results to {file_path}")
            with PathManager.open(file_path, "w") as f:
                f.write(json.dumps(coco_results))

        if not self._do_evaluation:
            self._logger.info("Annotations are not available for evaluation.")
            return

        self._logger.info(f"Evaluating predictions with the {self.backend} COCO API ...")
        for task in sorted(tasks):
            coco_eval = (
                evaluate_on_coco(
                    self._coco_gt_for_backend(),
                    coco_results,
                    task,
                    self.backend,
                    max_dets_per_image=self._max_dets_per_image,
                    img_ids=img_ids,
                    kpt_oks_sigmas=self._kpt_oks_sigmas,
                )
                if coco_results
                else None  # no predictions at all: every metric is NaN
            )
            self._results[task] = self._derive_coco_results(
                coco_eval, task, class_names=self._metadata.get("thing_classes")
            )

    def _derive_coco_results(self, coco_eval, iou_type, class_names=None):
        results = super()._derive_coco_results(coco_eval, iou_type, class_names)
        if iou_type == "bbox":
            stats = coco_eval.stats[6:12] if coco_eval is not None else [-1.0] * len(RECALL_METRICS)
            results.update({name: float(v * 100) if v >= 0 else float("nan") for name, v in zip(RECALL_METRICS, stats)})
        return results
