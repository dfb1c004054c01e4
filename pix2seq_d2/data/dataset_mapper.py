"""``Pix2SeqDatasetMapper``: a detectron2 dataset dict -> image tensor + token sequences.

Reads the image with :func:`~pix2seq_d2.data.image_io.read_image_checked` (EXIF orientation,
``INPUT.FORMAT``, 16-bit and RGBA converted, unusable files named), applies
the augmentations of :func:`~pix2seq_d2.data.transforms.build_pix2seq_augmentation`
(``ResizeShortestEdge`` + ``RandomFlip`` by default; large-scale jitter and colour jitter
from ``INPUT.LSJ`` / ``INPUT.COLOR_JITTER``), transforms the boxes, drops crowd and
degenerate boxes (including boxes entirely outside the image or cropped away), and has the model's
task make the training sequence ``seq_input`` / ``seq_target`` / ``seq_weight``
(:meth:`~pix2seq_d2.tasks.Task.example`; for detection the objects ordered, randomly in training, at
most ``MAX_OBJECTS`` of them, noise objects when sequence augmentation is on) — the same code the model
runs on batches from other mappers.

Multi-crop (``INPUT.MULTI_CROP.NUM_VIEWS`` > 1, training only): the image is read once and
augmented into that many independent views, each with its own boxes and sequence. The
mapper returns the first view's dict with ``"views"``, the list of every view's dict (the
outer dict keeps ``height``/``width``/``file_name`` for aspect-ratio grouping), and
:func:`expand_views` turns a batch of those into one entry per view.
"""

from __future__ import annotations

import copy
import logging

import numpy as np
import torch
from detectron2.config import CfgNode, configurable
from detectron2.data import detection_utils as utils
from detectron2.data import transforms as T
from detectron2.structures import Instances

from pix2seq_d2.data.annotation_checks import drop_invalid_annotations
from pix2seq_d2.data.image_io import read_image_checked
from pix2seq_d2.tasks import Task, build_task

from .transforms import build_pix2seq_augmentation

__all__ = ["Pix2SeqDatasetMapper", "expand_views"]

logger = logging.getLogger(__name__)


def expand_views(batched_inputs: list[dict]) -> list[dict]:
    """One entry per augmented view: a multi-crop input (with ``"views"``) becomes its views,
    any other input stays as it is. ``B`` inputs of ``V`` views each -> ``B * V`` entries."""
    return [view for x in batched_inputs for view in x.get("views", [x])]


class Pix2SeqDatasetMapper:
    """Callable that maps one detectron2 dataset dict to the format ``Pix2Seq`` consumes.

    Output keys: ``image`` (uint8 CHW tensor in ``image_format``), ``height``/``width`` (the
    original size), ``instances`` (``gt_boxes``/``gt_classes`` after augmentation, in sequence
    order) and ``seq_input``/``seq_target``/``seq_weight`` when annotations are used.
    """

    @configurable
    def __init__(
        self,
        is_train: bool,
        *,
        augmentations: list,
        image_format: str,
        task: Task,
        use_annotations: bool | None = None,
        num_views: int = 1,
    ):
        """
        Args:
            is_train: training mode (the task's random choices, e.g. a random object order; annotations used).
            augmentations: detectron2 ``Augmentation``/``Transform`` list applied to image and boxes.
            image_format: an ``INPUT.FORMAT`` such as "BGR" or "RGB".
            task: the model's task: it says which annotation fields it reads and turns the augmented
                ground truth into the sequence (:meth:`~pix2seq_d2.tasks.Task.example`).
            use_annotations: tokenize annotations; defaults to ``is_train``.
            num_views: training only: independently augmented views per image (multi-crop);
                more than 1 adds ``"views"`` to the output (see :func:`expand_views`).
        """
        if num_views < 1:
            raise ValueError(f"num_views must be >= 1, got {num_views}")
        self.is_train = is_train
        self.augmentations = T.AugmentationList(augmentations)
        self.image_format = image_format
        self.task = task
        self.use_annotations = is_train if use_annotations is None else use_annotations
        self.num_views = num_views if is_train else 1
        mode = "training" if is_train else "inference"
        logger.info(f"[Pix2SeqDatasetMapper] augmentations used in {mode}: {augmentations}")

    @classmethod
    def from_config(cls, cfg: CfgNode, is_train: bool = True) -> dict:
        return {
            "is_train": is_train,
            "augmentations": build_pix2seq_augmentation(cfg, is_train),
            "image_format": cfg.INPUT.FORMAT,
            "task": build_task(cfg),
            "num_views": cfg.INPUT.MULTI_CROP.NUM_VIEWS,
        }

    def __call__(self, dataset_dict: dict) -> dict:
        dataset_dict = copy.deepcopy(dataset_dict)  # it is modified below
        # Clear errors naming the file (BadInputError: the training loader skips the image).
        image = read_image_checked(dataset_dict, self.image_format, self.augmentations)
        if self.use_annotations:  # drop NaN / negative-size boxes (warning); unknown classes: error
            drop_invalid_annotations(dataset_dict, self.task.tokenizer.num_classes)
        annotations = dataset_dict.pop("annotations", None)
        if self.num_views == 1:
            return self.map_view(dataset_dict, image, annotations)
        views = [self.map_view(dict(dataset_dict), image.copy(), annotations) for _ in range(self.num_views)]
        return {**views[0], "views": views}

    def map_view(self, dataset_dict: dict, image: np.ndarray, annotations: list[dict] | None) -> dict:
        """One augmented view: ``dataset_dict`` (without "annotations", modified and returned)
        gets the augmented ``image`` (HWC uint8, consumed) and the tokens of ``annotations``
        (read, not modified)."""
        aug_input = T.AugInput(image)
        transforms = self.augmentations(aug_input)
        image = aug_input.image
        image_hw = image.shape[:2]
        dataset_dict["image"] = torch.as_tensor(np.ascontiguousarray(image.transpose(2, 0, 1)))

        if not self.use_annotations or annotations is None:
            return dataset_dict
        instances = self.transform_annotations(annotations, transforms, image_hw)
        # The task's own code for the model's batches without token tensors, here for one image.
        dataset_dict["instances"], tokens = self.task.example(instances, self.is_train)
        dataset_dict["seq_input"] = tokens.input
        dataset_dict["seq_target"] = tokens.target
        dataset_dict["seq_weight"] = tokens.weight
        return dataset_dict

    def transform_annotations(self, annotations: list[dict], transforms, image_hw: tuple[int, int]) -> Instances:
        """Boxes (and the other annotation fields the task reads) into the augmented image, boxes clipped;
        crowd and degenerate (empty after clipping) dropped."""
        unread = {"segmentation", "keypoints"} - set(self.task.annotation_keys)
        kept = []
        for obj in annotations:
            if obj.get("iscrowd", 0) != 0:
                continue
            obj = {k: v for k, v in obj.items() if k not in unread}
            kept.append(utils.transform_instance_annotations(obj, transforms, image_hw))
        instances = utils.annotations_to_instances(kept, image_hw)
        instances.gt_boxes.clip(image_hw)
        return instances[instances.gt_boxes.nonempty()]
