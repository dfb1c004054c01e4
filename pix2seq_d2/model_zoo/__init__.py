"""The model zoo: the configs shipped with the package, by name, and the published checkpoints.

* :func:`get_config_file` / :func:`get_config`: ``get_config("quickstart/pix2seq_shapes.yaml")`` reads a
  config of the repository's ``configs/`` folder, which also ships inside the installed package
  (:mod:`.config_files`); an existing path is taken as is. The tools' ``--config-file`` goes through
  :func:`resolve_config_path`, so ``--config-file quickstart/pix2seq_shapes.yaml`` works from any folder.
* :data:`PUBLISHED_CHECKPOINTS`: ``"official/R50_640"`` and the other published Pix2Seq checkpoints,
  where their files are and the config they convert to (:mod:`.checkpoints`);
  ``tools/convert_pix2seq_checkpoint.py --model NAME`` fetches and converts one
  (:mod:`pix2seq_d2.conversion.fetch`).
* :func:`download`: HTTP(S) into the cache folder (``$PIX2SEQ_CACHE``, else ``~/.cache/pix2seq_d2``) with a
  progress bar, resuming an interrupted download and checking its size (:mod:`.download`).
"""

from .checkpoints import (
    MIRROR_ENV_VAR,
    PUBLISHED_CHECKPOINTS,
    PublishedCheckpoint,
    UnknownCheckpointError,
    published_checkpoint,
)
from .config_files import (
    ConfigNotFoundError,
    config_names,
    configs_dir,
    get_config,
    get_config_file,
    resolve_config_path,
    shipped_config_file,
)
from .download import CACHE_ENV_VAR, DownloadError, cache_dir, download

__all__ = [
    "CACHE_ENV_VAR",
    "ConfigNotFoundError",
    "DownloadError",
    "MIRROR_ENV_VAR",
    "PUBLISHED_CHECKPOINTS",
    "PublishedCheckpoint",
    "UnknownCheckpointError",
    "cache_dir",
    "config_names",
    "configs_dir",
    "download",
    "get_config",
    "get_config_file",
    "published_checkpoint",
    "resolve_config_path",
    "shipped_config_file",
]
