"""Backbones of the published Pix2Seq checkpoints, registered in detectron2's ``BACKBONE_REGISTRY``.

* ``build_pix2seq_resnet_backbone``: detectron2's ResNet (``MODEL.RESNETS``) whose stem max-pool
  can pad like TensorFlow's ``SAME`` (``MODEL.RESNETS.STEM_POOL_PADDING "tf_same"``): on an even
  input TF pads 0 rows/columns before and 1 after, PyTorch's ``max_pool2d(3, 2, padding=1)`` 1 and
  1, which shifts every feature of the official ResNets by one stem pixel.
* ``build_pix2seq_vit_backbone``: the official Pix2Seq ViT (``MODEL.VIT``): a patch convolution
  with bias, LayerNorm on the patch tokens, the fixed 2-D sin-cos table added once, pre-norm GELU
  layers and a final LayerNorm. detectron2's own ViT needs ``timm`` and has neither LayerNorm.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from detectron2.config import CfgNode
from detectron2.layers import ShapeSpec
from detectron2.modeling import BACKBONE_REGISTRY, Backbone
from detectron2.modeling.backbone.resnet import ResNet, build_resnet_backbone
from torch import nn

from pix2seq_d2.modeling.transformer import TransformerEncoder, sincos_position_table

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


class Pix2SeqViT(Backbone):
    """The official Pix2Seq ViT encoder: ``[B, 3, H, W]`` -> ``{"vit": [B, D, H/P, W/P]}``."""

    def __init__(
        self,
        in_channels: int,
        patch_size: int,
        dim: int,
        depth: int,
        num_heads: int,
        mlp_dim: int,
        drop_path: float = 0.0,
        norm_eps: float = 1e-6,
    ):
        super().__init__()
        self.patch_size = patch_size
        self.patch_embed = nn.Conv2d(in_channels, dim, kernel_size=patch_size, stride=patch_size)
        self.patch_norm = nn.LayerNorm(dim, eps=norm_eps)
        # pre-norm layers end with a LayerNorm (the official output_ln)
        self.encoder = TransformerEncoder(depth, dim, num_heads, mlp_dim, 0.0, True, drop_path, "gelu", norm_eps)
        self._out_features = ["vit"]
        self._out_feature_channels = {"vit": dim}
        self._out_feature_strides = {"vit": patch_size}

    @property
    def size_divisibility(self) -> int:
        return self.patch_size

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        x = self.patch_embed(images)  # [B, D, h, w]
        b, d, h, w = x.shape
        x = self.patch_norm(x.flatten(2).transpose(1, 2))  # [B, h*w, D]
        x = x + sincos_position_table(h, w, d, device=x.device).to(x.dtype)
        x = self.encoder(x, None, None)
        return {"vit": x.transpose(1, 2).reshape(b, d, h, w)}


@BACKBONE_REGISTRY.register()
def build_pix2seq_vit_backbone(cfg: CfgNode, input_shape: ShapeSpec) -> Pix2SeqViT:
    """The official Pix2Seq ViT from ``MODEL.VIT``."""
    v = cfg.MODEL.VIT
    return Pix2SeqViT(
        input_shape.channels, v.PATCH_SIZE, v.EMBED_DIM, v.DEPTH, v.NUM_HEADS, v.MLP_DIM, v.DROP_PATH, v.LAYER_NORM_EPS
    )
