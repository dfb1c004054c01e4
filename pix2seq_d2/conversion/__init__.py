"""Readers and converters for checkpoints of other Pix2Seq implementations.

``convert_checkpoint("official", "path/to/resnet_640x640")`` or
``convert_checkpoint("pretrained_pix2seq", "checkpoint.pth")`` returns a
:class:`ConvertedCheckpoint` (weights + the config that builds exactly that model);
:func:`write_converted` saves it as ``OUTPUT.pth`` + ``OUTPUT.yaml``.
:func:`convert_published` fetches a published checkpoint by name (``"official/R50_640"``, see
:data:`pix2seq_d2.model_zoo.PUBLISHED_CHECKPOINTS`) into the cache folder and converts it (:mod:`.fetch`).
``tools/convert_pix2seq_checkpoint.py`` is the command line for all three.
"""

from __future__ import annotations

from .converter import ConversionError, ConvertedCheckpoint, config_yaml, write_converted
from .fetch import checkpoint_folder, convert_published, fetch_checkpoint
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
    "checkpoint_folder",
    "config_yaml",
    "convert_checkpoint",
    "convert_official",
    "convert_pretrained_pix2seq",
    "convert_published",
    "fetch_checkpoint",
    "write_converted",
]
