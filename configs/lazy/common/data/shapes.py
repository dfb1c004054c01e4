"""Data of the quickstart: the embedded synthetic ``shapes_train`` / ``shapes_val`` datasets (96 px images,
3 classes; generated under $DETECTRON2_DATASETS/pix2seq_shapes on first use), evaluated with COCO AP/AR
and the validation sequences' likelihood, as configs/quickstart/pix2seq_shapes.yaml does.

The mappers and the likelihood evaluator take the model's task (``${model.task}``), which makes the
training sequences.
"""

import detectron2.data.transforms as T
from detectron2.config import LazyCall as L
from omegaconf import OmegaConf

from .evaluation import evaluators, test_loader
from .training import train_loader

dataloader = OmegaConf.create()

# ---- training: resumable (exact resume: data order and augmentation continue where a run stopped) ----
# INPUT.MIN/MAX_SIZE_TRAIN 96 and INPUT.RANDOM_FLIP "horizontal"; 32 images per step; two cores:
# mapping in the main process beats inter-process transfer per image
dataloader.train = train_loader(
    names="shapes_train",
    augmentations=[
        L(T.ResizeShortestEdge)(short_edge_length=(96,), max_size=96, sample_style="choice"),
        L(T.RandomFlip)(horizontal=True, vertical=False),
    ],
    total_batch_size=32,
    num_workers=0,
)

# ---- evaluation ----
# INPUT.MIN/MAX_SIZE_TEST = 96; COCO AP/AR and the likelihood evaluator (see evaluation.py)
dataloader.test = test_loader(names="shapes_val", image_size=96, num_workers=0)
dataloader.evaluator = evaluators()
