"""The evaluation half of a Pix2Seq LazyConfig's ``dataloader``: the test loader (the Pix2Seq test
mapper, resizing so that the longest side is ``image_size``, with annotations tokenized for the
likelihood evaluator) and the evaluators (COCO AP/AR, sequence likelihood), as ``Pix2SeqTrainer``
builds them from a yaml config (``build_test_loader``, ``build_evaluator``)."""

import detectron2.data.transforms as T
from detectron2.config import LazyCall as L
from detectron2.data import build_detection_test_loader
from detectron2.evaluation import DatasetEvaluators

from pix2seq_d2.data.dataset_mapper import Pix2SeqDatasetMapper
from pix2seq_d2.data.datasets import checked_dataset_dicts
from pix2seq_d2.evaluation.coco_evaluation import COCOEvaluatorWithRecall
from pix2seq_d2.evaluation.sequence_likelihood import SequenceLikelihoodEvaluator


def test_loader(names: str, image_size: int, num_workers: int):
    """``dataloader.test``: dataset ``names``, images resized like INPUT.MIN/MAX_SIZE_TEST = image_size."""
    return L(build_detection_test_loader)(
        # detectron2's get_detection_dataset_dicts, with register_coco_instances datasets read by the checked reader
        dataset=L(checked_dataset_dicts)(names=names, filter_empty=False),
        mapper=L(Pix2SeqDatasetMapper)(
            is_train=False,
            augmentations=[
                L(T.ResizeShortestEdge)(short_edge_length=image_size, max_size=image_size, sample_style="choice")
            ],
            image_format="${...train.mapper.image_format}",
            task="${model.task}",
            # The annotations are tokenized too, for the likelihood evaluator (TEST.SEQ_LIKELIHOOD); set
            # False and drop SequenceLikelihoodEvaluator from the evaluators to evaluate COCO AP alone.
            use_annotations=True,
        ),
        num_workers=num_workers,
    )


def evaluators():
    """``dataloader.evaluator``: COCO AP and AR (predictions written under OUTPUT_DIR/inference/<dataset>)
    and the NLL / perplexity of the ground-truth sequences by token kind, with class accuracy."""
    return L(DatasetEvaluators)(
        evaluators=[
            L(COCOEvaluatorWithRecall)(
                dataset_name="${dataloader.test.dataset.names}",
                tasks=("bbox",),
                output_dir="${train.output_dir}/inference/${dataloader.test.dataset.names}",
                max_dets_per_image=100,  # at least the objects decoded per image
                backend="auto",  # TEST.COCO_EVAL_BACKEND: faster-coco-eval when installed, else pycocotools
            ),
            L(SequenceLikelihoodEvaluator)(task="${model.task}"),
        ]
    )
