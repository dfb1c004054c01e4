"""``Pix2SeqDatasetMapper``: a detectron2 dataset dict -> image tensor + token sequences.

Reads the image with detectron2's utilities (EXIF orientation, ``INPUT.FORMAT``), applies
the augmentations (``ResizeShortestEdge`` + ``RandomFlip`` from ``INPUT.*`` by default),
transforms the boxes, drops crowd and degenerate boxes (including boxes entirely outside
the image), orders the objects (randomly in training), keeps at most ``MAX_OBJECTS`` and
tokenizes them into ``seq_input`` / ``seq_target`` / ``seq_weight`` (see
:mod:`pix2seq_d2.tokenizer`), in training with sequence augmentation when enabled (see
:mod:`pix2seq_d2.sequence_augmentation`).
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

from .sequence_augmentation import SequenceAugmentation
from .tokenizer import Pix2SeqTokenizer

__all__ = ["Pix2SeqDatasetMapper", "OBJECT_ORDERS"]

logger = logging.getLogger(__name__)


def _top_left_distance(boxes: torch.Tensor) -> torch.Tensor:
    return boxes[:, :2].norm(dim=1)


# Object order -> the permutation of an image's boxes [n, 4] (x0 y0 x1 y1) into sequence order.
OBJECT_ORDERS = {
    "random": lambda boxes: torch.randperm(len(boxes)),
    "area": lambda boxes: torch.argsort((boxes[:, 2:] - boxes[:, :2]).prod(1), descending=True, stable=True),
    "distance": lambda boxes: torch.argsort(_top_left_distance(boxes), stable=True),
    "none": lambda boxes: torch.arange(len(boxes)),
}


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
        tokenizer: Pix2SeqTokenizer,
        max_objects: int,
        object_order: str = "random",
        sequence_augmentation: SequenceAugmentation | None = None,
        use_annotations: bool | None = None,
    ):
        """
        Args:
            is_train: training mode (random object order, annotations used).
            augmentations: detectron2 ``Augmentation``/``Transform`` list applied to image and boxes.
            image_format: an ``INPUT.FORMAT`` such as "BGR" or "RGB".
            tokenizer: turns the objects into tokens.
            max_objects: at most this many objects per sequence.
            object_order: a key of ``OBJECT_ORDERS``. "random" shuffles the objects of every
                training example and keeps the dataset's order at test time.
            sequence_augmentation: fills training sequences with noise objects (None: off).
            use_annotations: tokenize annotations; defaults to ``is_train``.
        """
        if object_order not in OBJECT_ORDERS:
            raise ValueError(f"object order must be one of {sorted(OBJECT_ORDERS)}, got {object_order!r}")
        self.is_train = is_train
        self.augmentations = T.AugmentationList(augmentations)
        self.image_format = image_format
        self.tokenizer = tokenizer
        self.max_objects = max_objects
        self.object_order = "none" if object_order == "random" and not is_train else object_order
        self.sequence_augmentation = sequence_augmentation if is_train else None
        self.use_annotations = is_train if use_annotations is None else use_annotations
        mode = "training" if is_train else "inference"
        logger.info(f"[Pix2SeqDatasetMapper] augmentations used in {mode}: {augmentations}")

    @classmethod
    def from_config(cls, cfg: CfgNode, is_train: bool = True) -> dict:
        p = cfg.MODEL.PIX2SEQ
        seq_aug = None
        if p.SEQ_AUG.ENABLED:
            seq_aug = SequenceAugmentation(
                max_objects=p.MAX_OBJECTS,
                noise_class_weight=p.SEQ_AUG.NOISE_CLASS_WEIGHT,
                class_corruption=p.SEQ_AUG.CLASS_CORRUPTION,
                jitter=p.SEQ_AUG.JITTER,
                duplicate_jitter=p.SEQ_AUG.DUPLICATE_JITTER,
            )
        return {
            "is_train": is_train,
            "augmentations": utils.build_augmentation(cfg, is_train),
            "image_format": cfg.INPUT.FORMAT,
            "tokenizer": Pix2SeqTokenizer.from_config(cfg),
            "max_objects": p.MAX_OBJECTS,
            "object_order": p.OBJECT_ORDER,
            "sequence_augmentation": seq_aug,
        }

    def __call__(self, dataset_dict: dict) -> dict:
        dataset_dict = copy.deepcopy(dataset_dict)  # it is modified below
        image = utils.read_image(dataset_dict["file_name"], format=self.image_format)
        utils.check_image_size(dataset_dict, image)
        aug_input = T.AugInput(image)
        transforms = self.augmentations(aug_input)
        image = aug_input.image
        image_hw = image.shape[:2]
        dataset_dict["image"] = torch.as_tensor(np.ascontiguousarray(image.transpose(2, 0, 1)))

        annotations = dataset_dict.pop("annotations", None)
        if not self.use_annotations or annotations is None:
            return dataset_dict
        instances = self.transform_annotations(annotations, transforms, image_hw)
        instances = self.order_and_truncate(instances)
        if self.sequence_augmentation is not None:
            tokens = self.sequence_augmentation.encode(
                self.tokenizer, instances.gt_boxes.tensor, instances.gt_classes, image_hw
            )
        else:
            tokens = self.tokenizer.encode(instances.gt_boxes.tensor, instances.gt_classes, image_hw)
        dataset_dict["instances"] = instances
        dataset_dict["seq_input"] = tokens.input
        dataset_dict["seq_target"] = tokens.target
        dataset_dict["seq_weight"] = tokens.weight
        return dataset_dict

    def transform_annotations(self, annotations: list[dict], transforms, image_hw: tuple[int, int]) -> Instances:
        """Boxes into the augmented image, clipped; crowd and degenerate (empty after clipping) dropped."""
        kept = []
        for obj in annotations:
            if obj.get("iscrowd", 0) != 0:
                continue
            obj = {k: v for k, v in obj.items() if k not in ("segmentation", "keypoints")}
            kept.append(utils.transform_instance_annotations(obj, transforms, image_hw))
        instances = utils.annotations_to_instances(kept, image_hw)
        instances.gt_boxes.clip(image_hw)
        return instances[instances.gt_boxes.nonempty()]

    def order_and_truncate(self, instances: Instances) -> Instances:
        """Put the objects in sequence order and keep at most ``max_objects`` of them."""
        order = OBJECT_ORDERS[self.object_order](instances.gt_boxes.tensor)
        return instances[order][: self.max_objects]
