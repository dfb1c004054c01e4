"""Checkpoints: crash-safe saves and checked, weights-only loads (:mod:`.checkpointer`), telling what a file
given as a checkpoint is (:mod:`.file_checks`), the one weights-only loader (:mod:`.weights_only`), and
choosing what ``--resume`` loads from a damaged folder (:mod:`.resume`)."""

from .checkpointer import Pix2SeqCheckpointer, load_inference_weights, to_weights_only
from .file_checks import CHECKPOINT_PROBLEMS, NotACheckpointError, check_checkpoint_file
from .resume import (
    RESUME_NEWEST_INTACT_ENV_VAR,
    ResumeCheckpointError,
    resolve_resume_checkpoint,
    resume_newest_intact_default,
)
from .weights_only import (
    TRUST_ENV_VAR,
    UntrustedCheckpointError,
    checkpoints_trusted,
    load_weights_only,
    read_checkpoint_file,
    safe_pickle_load,
)

__all__ = [
    "CHECKPOINT_PROBLEMS",
    "NotACheckpointError",
    "Pix2SeqCheckpointer",
    "RESUME_NEWEST_INTACT_ENV_VAR",
    "ResumeCheckpointError",
    "TRUST_ENV_VAR",
    "UntrustedCheckpointError",
    "check_checkpoint_file",
    "checkpoints_trusted",
    "load_inference_weights",
    "load_weights_only",
    "read_checkpoint_file",
    "resolve_resume_checkpoint",
    "resume_newest_intact_default",
    "safe_pickle_load",
    "to_weights_only",
]
