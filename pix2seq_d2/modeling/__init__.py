"""The model: the ``Pix2Seq`` meta-architecture (:mod:`.meta_arch`), its backbones (:mod:`.backbone`), the
transformer encoder and token decoder (:mod:`.transformer`), autoregressive decoding (:mod:`.decoding`),
the loss (:mod:`.losses`) and the weight EMA (:mod:`.ema`)."""

from .backbone import build_pix2seq_resnet_backbone, build_pix2seq_vit_backbone, build_small_resnet_backbone
from .decoding import DecodedSequences, DecodingOptions, decode
from .ema import ModelEMA
from .meta_arch import Pix2Seq

__all__ = [
    "DecodedSequences",
    "DecodingOptions",
    "ModelEMA",
    "Pix2Seq",
    "build_pix2seq_resnet_backbone",
    "build_pix2seq_vit_backbone",
    "build_small_resnet_backbone",
    "decode",
]
