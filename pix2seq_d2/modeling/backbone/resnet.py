"""``build_pix2seq_resnet_backbone``: the ResNets of the published Pix2Seq checkpoints, registered in
detectron2's ``BACKBONE_REGISTRY``.

It is detectron2's ResNet (``MODEL.RESNETS``) whose stem max-pool can pad like TensorFlow's ``SAME``
(``MODEL.RESNETS.STEM_POOL_PADDING "tf_same"``): on an even input TF pads 0 rows/columns before and 1
after, PyTorch's ``max_pool2d(3, 2, padding=1)`` 1 and 1, which shifts every feature of the official
ResNets by one stem pixel.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from detectron2.config import CfgNode
from detectron2.layers import ShapeSpec
from detectron2.modeling import BACKBONE_REGISTRY
from detectron2.modeling.backbone.resnet import ResNet, build_resnet_backbone
from torch import nn

STEM_POOL_PADDINGS = ("symmetric", "tf_same")


def max_pool_tf_same(x: torch.Tensor, kernel: int = 3, stride: int = 2) -> torch.Tensor:
    """``MaxPooling2D(kernel, stride, padding="SAME")`` of TensorFlow on NCHW ``x``."""
    pads = []
    for size in (x.shape[-1], x.shape[-2]):  # F.pad takes the last dimension first
        total = max((math.ceil(size / stride) - 1) * stride + kernel - size, 0)
        pads += [total // 2, total - total // 2]
    return F.max_pool2d(F.pad(x, pads, value=float("-inf")), kernel, stride)


class TFSamePoolStem(nn.Module):
    """detectron2's ``BasicStem`` (conv 7x7/2 + norm + ReLU, its ``conv1`` kept) with a TF-SAME max-pool."""

    def __init__(self, stem: nn.Module):
        super().__init__()
        self.conv1 = stem.conv1
        self.in_channels, self.out_channels, self.stride = stem.in_channels, stem.out_channels, stem.stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return max_pool_tf_same(F.relu_(self.conv1(x)))


@BACKBONE_REGISTRY.register()
def build_pix2seq_resnet_backbone(cfg: CfgNode, input_shape: ShapeSpec) -> ResNet:
    """detectron2's ``build_resnet_backbone`` + ``MODEL.RESNETS.STEM_POOL_PADDING`` (parameter names unchanged)."""
    padding = cfg.MODEL.RESNETS.STEM_POOL_PADDING
    if padding not in STEM_POOL_PADDINGS:
        raise ValueError(f"unknown MODEL.RESNETS.STEM_POOL_PADDING {padding!r}; known: {STEM_POOL_PADDINGS}")
    resnet = build_resnet_backbone(cfg, input_shape)
    if padding == "tf_same":
        if cfg.MODEL.RESNETS.DEFORM_ON_PER_STAGE != [False] * 4 or not hasattr(resnet.stem, "conv1"):
            raise ValueError("STEM_POOL_PADDING 'tf_same' needs detectron2's BasicStem")
        resnet.stem = TFSamePoolStem(resnet.stem)
    return resnet
