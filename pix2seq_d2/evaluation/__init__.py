"""Evaluation: COCO AP and AR on a choice of COCO API (:mod:`.coco_evaluation`), and the validation
sequences' likelihood (:mod:`.sequence_likelihood`)."""

from .coco_evaluation import COCOEvaluatorWithRecall, evaluate_on_coco
from .sequence_likelihood import SequenceLikelihoodEvaluator

__all__ = ["COCOEvaluatorWithRecall", "SequenceLikelihoodEvaluator", "evaluate_on_coco"]
