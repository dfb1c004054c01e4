"""A narrow ResNet of detectron2 BasicBlocks for small images and CPU training.

detectron2's ``build_resnet_backbone`` fixes R18/R34 at 64 stem channels and a stride-4
stem; the quickstart needs a backbone a few times cheaper. Registered as
``build_small_resnet_backbone`` in ``BACKBONE_REGISTRY`` and configured by
``MODEL.SMALL_RESNET``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch.nn.functional as F
from detectron2.config import CfgNode
from detectron2.layers import Conv2d, ShapeSpec, get_norm
from detectron2.modeling import BACKBONE_REGISTRY
from detectron2.modeling.backbone.resnet import BasicBlock, CNNBlockBase, ResNet


class ConvStem(CNNBlockBase):
    """One 3x3 stride-2 convolution + norm + ReLU (stride 2, unlike detectron2's stride-4 stem)."""

    def __init__(self, in_channels: int, out_channels: int, norm: str):
        super().__init__(in_channels, out_channels, stride=2)
        self.conv1 = Conv2d(
            in_channels, out_channels, 3, stride=2, padding=1, bias=False, norm=get_norm(norm, out_channels)
        )

    def forward(self, x):
        return F.relu_(self.conv1(x))


def small_resnet_stages(
    in_channels: int, widths: Sequence[int], depths: Sequence[int], norm: str = "BN"
) -> list[list[CNNBlockBase]]:
    """The four BasicBlock stages res2..res5: stage ``i`` has ``depths[i]`` blocks of ``widths[i]``
    channels, res2 at stride 1 after the stem, the others at stride 2."""
    if len(widths) != 4 or len(depths) != 4:
        raise ValueError(
            f"a small ResNet needs 4 widths and 4 depths (MODEL.SMALL_RESNET), got {list(widths)} / {list(depths)}"
        )
    stages = []
    for i, (width, depth) in enumerate(zip(widths, depths)):
        first_stride = 1 if i == 0 else 2
        stride_per_block = [first_stride] + [1] * (depth - 1)
        stages.append(
            ResNet.make_stage(
                BasicBlock,
                depth,
                in_channels=in_channels,
                out_channels=width,
                stride_per_block=stride_per_block,
                norm=norm,
            )
        )
        in_channels = width
    return stages


@BACKBONE_REGISTRY.register()
def build_small_resnet_backbone(cfg: CfgNode, input_shape: ShapeSpec) -> ResNet:
    """Stem (stride 2) + four BasicBlock stages res2..res5 at strides 2, 4, 8, 16... of the stem."""
    s = cfg.MODEL.SMALL_RESNET
    stem = ConvStem(input_shape.channels, s.STEM_OUT_CHANNELS, s.NORM)
    stages = small_resnet_stages(s.STEM_OUT_CHANNELS, s.WIDTHS, s.DEPTHS, s.NORM)
    return ResNet(stem, stages, out_features=s.OUT_FEATURES, freeze_at=cfg.MODEL.BACKBONE.FREEZE_AT)
