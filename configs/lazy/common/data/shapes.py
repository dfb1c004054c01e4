"""Data of the quickstart: the embedded synthetic ``shapes_train`` / ``shapes_val`` datasets (96 px images,
3 classes; generated under $DETECTRON2_DATASETS/pix2seq_shapes on first use), evaluated with COCO AP/AR
and the validation sequences' likelihood, as configs/quickstart/pix2seq_shapes.yaml does.

The mappers and the likelihood evaluator take the model's tokenizer (``${model.tokenizer}``), and the
training sequences keep at most ``model.decoder.max_objects`` objects.
"""

import detectron2.data.transforms as T
from detectron2.config import LazyCall as L
from omegaconf import OmegaConf

from pix2seq_d2.dataset_mapper import Pix2SeqDatasetMapper
from pix2seq_d2.lazy import resumable_train_loader

from .evaluation import evaluators, test_loader

dataloader = OmegaConf.create()

# ---- training: resumable (exact resume: data order and augmentation continue where a run stopped) ----
dataloader.train = L(resumable_train_loader)(
    names="shapes_train",
    mapper=L(Pix2SeqDatasetMapper)(
        is_train=True,
        # INPUT.MIN/MAX_SIZE_TRAIN 96 and INPUT.RANDOM_FLIP "horizontal"
        augmentations=[
            L(T.ResizeShortestEdge)(short_edge_length=(96,), max_size=96, sample_style="choice"),
            L(T.RandomFlip)(horizontal=True, vertical=False),
        ],
        image_format="BGR",
        tokenizer="${model.tokenizer}",
        max_objects="${model.decoder.max_objects}",
        object_order="random",  # a new random object order every time an image is loaded
        sequence_augmentation=None,
        num_views=1,
    ),
    total_batch_size=32,  # over all workers (SOLVER.IMS_PER_BATCH)
    seed="${train.seed}",
    num_workers=0,  # two cores: mapping in the main process beats inter-process transfer per image
    aspect_ratio_grouping=True,
    filter_empty=True,
    sampler="TrainingSampler",
    num_classes="${model.tokenizer.num_classes}",  # annotations are checked against it first
)

# ---- evaluation ----
# INPUT.MIN/MAX_SIZE_TEST = 96; COCO AP/AR and the likelihood evaluator (see evaluation.py)
dataloader.test = test_loader(names="shapes_val", image_size=96, num_workers=0)
dataloader.evaluator = evaluators()
