"""Backbones registered in detectron2's ``BACKBONE_REGISTRY``: a small ResNet for the CPU quickstart, and
the ResNet and ViT of the published Pix2Seq checkpoints."""

from .resnet import build_pix2seq_resnet_backbone
from .small_resnet import build_small_resnet_backbone, small_resnet_stages
from .vit import Pix2SeqViT, build_pix2seq_vit_backbone

__all__ = [
    "Pix2SeqViT",
    "build_pix2seq_resnet_backbone",
    "build_pix2seq_vit_backbone",
    "build_small_resnet_backbone",
    "small_resnet_stages",
]
