"""Running Pix2Seq: the trainer (:mod:`.trainer`) with mixed precision (:mod:`.amp`), hooks
(:mod:`.hooks`), exact resume (:mod:`.exact_resume`) and data-parallel checks (:mod:`.distributed`); the
predictor (:mod:`.predictor`); the command-line launcher (:mod:`.launch`); and what lets detectron2's own
tool scripts run on Pix2Seq (:mod:`.d2_script_patches`)."""

from .predictor import Pix2SeqPredictor
from .trainer import Pix2SeqTrainer

__all__ = ["Pix2SeqPredictor", "Pix2SeqTrainer"]
