"""The published Pix2Seq checkpoints that ``tools/convert_pix2seq_checkpoint.py --model NAME`` fetches and
converts: name -> which implementation wrote it, where its files are, the converter's settings and the
config (under ``configs/``) the conversion is based on.

* ``official/...``: google-research/pix2seq's TensorFlow checkpoints in the public Google Cloud Storage
  bucket ``pix2seq`` (``gs://pix2seq/<path>``, read over HTTPS as
  ``https://storage.googleapis.com/pix2seq/<path>/<file>``; the paths are the ones google-research/pix2seq's
  README and inference colab list). A folder holds ``checkpoint`` (a text file whose
  ``model_checkpoint_path`` names the newest ``ckpt-N``), ``ckpt-N.index``, the data shards the index names
  (``ckpt-N.data-00000-of-00001``) and ``config.json`` (which the official colab reads from the
  COCO-fine-tuned folders). The step number N is not listed anywhere we could check, so it is never
  written here: the fetcher reads it from the folder's ``checkpoint`` file, and the shard names from the
  index, as ``tf.train.latest_checkpoint`` does. ``config.json`` is optional (the image size and class list
  come from this table).
* ``pretrained_pix2seq/R50_1333``: Pretrained-Pix2Seq's ``checkpoint.pth`` (gaopengcuhk/Pretrained-Pix2Seq's
  README links it as Google Drive file ``1b7KzqnEBIQCTKmk9SqsXNqX2nlTZSFV_``). The URL below is Google
  Drive's direct-download form for a public file; it could not be checked from here (no network but
  PyPI). If Drive answers with a page instead of the file, the fetch stops with an error saying so:
  download it in a browser and convert it with ``--source pretrained_pix2seq PATH``.

``PIX2SEQ_ZOO_MIRROR=URL`` fetches every file from ``URL/<name>/<file>`` instead (e.g. a local copy:
``URL/official/R50_640/checkpoint``, ``URL/pretrained_pix2seq/R50_1333/checkpoint.pth``).
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Mapping
from dataclasses import dataclass, field

from pix2seq_d2.utils.errors import UserError

__all__ = [
    "MIRROR_ENV_VAR",
    "OFFICIAL_BUCKET_URL",
    "PUBLISHED_CHECKPOINTS",
    "PublishedCheckpoint",
    "UnknownCheckpointError",
    "published_checkpoint",
]

OFFICIAL_BUCKET_URL = "https://storage.googleapis.com/pix2seq"
MIRROR_ENV_VAR = "PIX2SEQ_ZOO_MIRROR"


class UnknownCheckpointError(UserError, KeyError):
    """A ``--model`` name that is not in the table."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


@dataclass(frozen=True)
class PublishedCheckpoint:
    """One published checkpoint.

    ``url``: official: the checkpoint folder (its files are found as described in the module docstring);
    pretrained_pix2seq: the file itself, saved as ``file_name``. ``config``: the config under ``configs/``
    that the converted ``OUTPUT.yaml`` takes as ``_BASE_``. ``options``: the converter's keyword arguments
    (official: ``image_size``, ``dataset``)."""

    name: str
    source: str  # "official" or "pretrained_pix2seq"
    url: str
    config: str
    options: Mapping[str, object] = field(default_factory=dict)
    file_name: str = ""  # pretrained_pix2seq: the local name of the single file

    def file_url(self, file: str) -> str:
        """Where ``file`` of this checkpoint is downloaded from (``$PIX2SEQ_ZOO_MIRROR`` if set)."""
        mirror = os.environ.get(MIRROR_ENV_VAR, "").rstrip("/")
        if mirror:
            return f"{mirror}/{self.name}/{file}"
        return f"{self.url}/{file}" if self.source == "official" else self.url


# name prefix -> (folder name in the bucket, config family)
_OFFICIAL_FAMILIES = {"R50": "resnet", "R50_C4": "resnetc", "ViT_B": "vit_b", "ViT_L": "vit_l"}


def _official() -> list[PublishedCheckpoint]:
    entries = []
    for family, folder in _OFFICIAL_FAMILIES.items():
        for size in (640, 1024, 1333):
            entries.append(
                PublishedCheckpoint(
                    name=f"official/{family}_{size}",
                    source="official",
                    url=f"{OFFICIAL_BUCKET_URL}/coco_det_finetune/{folder}_{size}x{size}",
                    config=f"official/pix2seq_{family}_{size}.yaml",
                    options={"image_size": size, "dataset": "coco"},
                )
            )
        entries.append(
            PublishedCheckpoint(
                name=f"official/{family}_obj365_640",
                source="official",
                url=f"{OFFICIAL_BUCKET_URL}/obj365_pretrain/{folder}_640x640_b256_s400k",
                config=f"official/pix2seq_{family}_obj365_640.yaml",
                options={"image_size": 640, "dataset": "objects365"},
            )
        )
    return entries


PUBLISHED_CHECKPOINTS: dict[str, PublishedCheckpoint] = {
    entry.name: entry
    for entry in [
        *_official(),
        PublishedCheckpoint(
            name="pretrained_pix2seq/R50_1333",
            source="pretrained_pix2seq",
            # Google Drive's direct download of a public file (not checked from here: see the module docstring)
            url="https://drive.usercontent.google.com/download?id=1b7KzqnEBIQCTKmk9SqsXNqX2nlTZSFV_&export=download&confirm=t",
            config="official/pix2seq_pretrained_R50_1333.yaml",
            file_name="checkpoint.pth",
        ),
    ]
}


def published_checkpoint(name: str) -> PublishedCheckpoint:
    """The table entry ``name``; an unknown name is an :class:`UnknownCheckpointError` listing the closest."""
    if name in PUBLISHED_CHECKPOINTS:
        return PUBLISHED_CHECKPOINTS[name]
    close = difflib.get_close_matches(name, list(PUBLISHED_CHECKPOINTS), n=3, cutoff=0.5)
    hint = f"did you mean {' or '.join(close)}?" if close else f"known: {', '.join(sorted(PUBLISHED_CHECKPOINTS))}"
    raise UnknownCheckpointError(f"no published checkpoint called {name!r}; {hint}")
