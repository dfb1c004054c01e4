"""Pix2Seq (a language modeling framework for object detection) as a Detectron2 extension.

Importing the package registers the ``Pix2Seq`` meta-architecture, the
``build_small_resnet_backbone``, ``build_pix2seq_resnet_backbone`` and
``build_pix2seq_vit_backbone`` backbones and the embedded ``shapes_train``/``shapes_val``
datasets (generated on first use under ``$DETECTRON2_DATASETS/pix2seq_shapes``).
"""

from pix2seq_d2.config.defaults import add_pix2seq_config
from pix2seq_d2.data.dataset_mapper import Pix2SeqDatasetMapper
from pix2seq_d2.data.datasets.coco import (
    ensure_coco_metadata,
    load_coco_json_checked,
    register_coco_datasets,
    register_coco_json,
)
from pix2seq_d2.data.datasets.shapes import register_shapes_datasets
from pix2seq_d2.engine.predictor import Pix2SeqPredictor
from pix2seq_d2.engine.trainer import Pix2SeqTrainer
from pix2seq_d2.modeling.backbone.resnet import build_pix2seq_resnet_backbone, build_pix2seq_vit_backbone
from pix2seq_d2.modeling.backbone.small_resnet import build_small_resnet_backbone
from pix2seq_d2.modeling.meta_arch.pix2seq import Pix2Seq
from pix2seq_d2.tasks.tokenizer import Pix2SeqTokenizer

register_shapes_datasets()

__all__ = [
    "add_pix2seq_config",
    "Pix2Seq",
    "Pix2SeqDatasetMapper",
    "Pix2SeqPredictor",
    "Pix2SeqTokenizer",
    "Pix2SeqTrainer",
    "build_pix2seq_resnet_backbone",
    "build_pix2seq_vit_backbone",
    "build_small_resnet_backbone",
    "ensure_coco_metadata",
    "load_coco_json_checked",
    "register_coco_datasets",
    "register_coco_json",
    "register_shapes_datasets",
]
