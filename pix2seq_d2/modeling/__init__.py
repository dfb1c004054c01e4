"""The model: the ``Pix2Seq`` meta-architecture (:mod:`.meta_arch`), its backbones (:mod:`.backbone`), the
transformer encoder and token decoder (:mod:`.transformer`), autoregressive decoding (:mod:`.decoding`),
the loss (:mod:`.losses`) and the weight EMA (:mod:`.ema`)."""

from pix2seq_d2.modeling.decoding import DecodedSequences, decode
from pix2seq_d2.tasks import DecodingOptions

from .backbone import build_pix2seq_resnet_backbone, build_pix2seq_vit_backbone, build_small_resnet_backbone
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
