"""COCO 2017 as configs/pix2seq_R50.yaml reads it: large-scale jitter at 640 px (scale 0.3-2.0) + flip +
colour distortion for training, the longest side resized to 640 px at test, evaluated with COCO AP/AR
and the validation sequences' likelihood. Datasets come from $DETECTRON2_DATASETS/coco.

The mappers and the likelihood evaluator take the model's task (``${model.task}``), which makes the
training sequences.
"""

import detectron2.data.transforms as T
from detectron2.config import LazyCall as L
from omegaconf import OmegaConf

from pix2seq_d2.data.transforms import ColorJitter, RandomFixedSizeCrop

from .evaluation import evaluators, test_loader
from .training import train_loader

image_size = 640  # INPUT.LSJ.IMAGE_SIZE

dataloader = OmegaConf.create()

# ---- training: resumable (exact resume: data order and augmentation continue where a run stopped) ----
# INPUT.LSJ: flip, fit into a square of image_size * U(0.3, 2.0), crop a window of at most
# image_size x image_size (no pixel padding: the model pads and masks); then INPUT.COLOR_JITTER.
dataloader.train = train_loader(
    names="coco_2017_train",
    augmentations=[
        L(T.RandomFlip)(horizontal=True, vertical=False),
        L(T.ResizeScale)(min_scale=0.3, max_scale=2.0, target_height=image_size, target_width=image_size),
        L(RandomFixedSizeCrop)(crop_size=(image_size, image_size)),
        L(ColorJitter)(brightness=0.4, contrast=0.4, saturation=0.4, hue=0.1, image_format="${...image_format}"),
    ],
    total_batch_size=16,
    num_workers=4,
)

# ---- evaluation ----
# INPUT.MIN/MAX_SIZE_TEST = image_size; COCO AP/AR and the likelihood evaluator (see evaluation.py)
dataloader.test = test_loader(names="coco_2017_val", image_size=image_size, num_workers=4)
dataloader.evaluator = evaluators()
