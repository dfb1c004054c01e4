"""``build_pix2seq_vit_backbone``: the official Pix2Seq ViT (``MODEL.VIT``), registered in detectron2's
``BACKBONE_REGISTRY``: a patch convolution with bias, LayerNorm on the patch tokens, the fixed 2-D
sin-cos table added once, pre-norm GELU layers and a final LayerNorm. detectron2's own ViT needs
``timm`` and has neither LayerNorm."""

from __future__ import annotations

import torch
from detectron2.config import CfgNode
from detectron2.layers import ShapeSpec
from detectron2.modeling import BACKBONE_REGISTRY, Backbone
from torch import nn

from pix2seq_d2.modeling.transformer import TransformerEncoder, sincos_position_table

__all__ = ["Pix2SeqViT", "build_pix2seq_vit_backbone"]


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
