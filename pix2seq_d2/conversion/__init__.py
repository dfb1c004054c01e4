"""Readers and converters for checkpoints of other Pix2Seq implementations.

``convert_checkpoint("official", "path/to/resnet_640x640")`` or
``convert_checkpoint("pretrained_pix2seq", "checkpoint.pth")`` returns a
:class:`ConvertedCheckpoint` (weights + the config that builds exactly that model);
:func:`write_converted` saves it as ``OUTPUT.pth`` + ``OUTPUT.yaml``.
``tools/convert_pix2seq_checkpoint.py`` is the command line for both.
"""

from __future__ import annotations

from .converter import ConversionError, ConvertedCheckpoint, config_yaml, write_converted
from .official import convert_official
from .pretrained_pix2seq import convert_pretrained_pix2seq
from .tf_checkpoint import TFCheckpoint, TFCheckpointError

SOURCES = {"official": convert_official, "pretrained_pix2seq": convert_pretrained_pix2seq}


def convert_checkpoint(source: str, path: str, **options) -> ConvertedCheckpoint:
    """Convert ``path`` from ``source`` ("official" or "pretrained_pix2seq"); ``options`` go to its converter
    (official: ``image_size``, ``dataset``; pretrained_pix2seq: ``num_heads``)."""
    if source not in SOURCES:
        raise ValueError(f"unknown checkpoint source {source!r}; known: {sorted(SOURCES)}")
    return SOURCES[source](path, **options)


__all__ = [
    "ConversionError",
    "ConvertedCheckpoint",
    "SOURCES",
    "TFCheckpoint",
    "TFCheckpointError",
    "config_yaml",
    "convert_checkpoint",
    "convert_official",
    "convert_pretrained_pix2seq",
    "write_converted",
]
