"""Meta-architectures registered in detectron2's ``META_ARCH_REGISTRY``: ``Pix2Seq``."""

from pix2seq_d2.modeling.meta_arch.pix2seq import Pix2Seq

__all__ = ["Pix2Seq"]
