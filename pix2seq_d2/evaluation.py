"""COCO evaluation that reports average recall next to average precision.

Detectron2's ``COCOEvaluator`` keeps only the six AP numbers of ``COCOeval.summarize``.
Pix2Seq's decoding choices (stopping at EOS or decoding a fixed number of objects, sequence
augmentation) trade precision for recall, so this evaluator also returns the six AR numbers
(``AR@1``, ``AR@10``, ``AR@100``, ``ARs@100``, ``ARm@100``, ``ARl@100``; the last value of
``maxDets`` stands for 100 when ``max_dets_per_image`` is larger). They land in
``metrics.json`` as ``bbox/AR@100`` etc.
"""

from __future__ import annotations

from detectron2.evaluation import COCOEvaluator

RECALL_METRICS = ("AR@1", "AR@10", "AR@100", "ARs@100", "ARm@100", "ARl@100")


class COCOEvaluatorWithRecall(COCOEvaluator):
    """``COCOEvaluator`` whose box results include average recall."""

    def _derive_coco_results(self, coco_eval, iou_type, class_names=None):
        results = super()._derive_coco_results(coco_eval, iou_type, class_names)
        if iou_type == "bbox":
            stats = coco_eval.stats[6:12] if coco_eval is not None else [-1.0] * len(RECALL_METRICS)
            results.update({name: float(v * 100) if v >= 0 else float("nan") for name, v in zip(RECALL_METRICS, stats)})
        return results
