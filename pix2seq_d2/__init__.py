"""Pix2Seq (a language modeling framework for object detection) as a Detectron2 extension.

Importing the package registers the ``Pix2Seq`` meta-architecture, the
``build_small_resnet_backbone``, ``build_pix2seq_resnet_backbone`` and
``build_pix2seq_vit_backbone`` backbones and the embedded ``shapes_train``/``shapes_val``
datasets (generated on first use under ``$DETECTRON2_DATASETS/pix2seq_shapes``).
"""

from .backbones import build_pix2seq_resnet_backbone, build_pix2seq_vit_backbone
from .coco_datasets import ensure_coco_metadata, load_coco_json_checked, register_coco_datasets, register_coco_json
from .config import add_pix2seq_config
from .dataset_mapper import Pix2SeqDatasetMapper
from .model import Pix2Seq
from .predictor import Pix2SeqPredictor
from .small_resnet import build_small_resnet_backbone
from .synthetic_shapes import register_shapes_datasets
from .tokenizer import Pix2SeqTokenizer
from .trainer import Pix2SeqTrainer

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
