"""The errors that mean a user's file or setting is wrong, and the command-line wrapper that prints
them as one ``error: ...`` line (exit status 1) instead of a traceback (``tools/*.py`` use it)."""

from __future__ import annotations

import pickle
import sys
from collections.abc import Callable

from .checkpoint_files import NotACheckpointError
from .checkpoint_resume import ResumeCheckpointError
from .coco_datasets import CocoJsonError
from .config_checks import ConfigError
from .conversion import ConversionError, TFCheckpointError
from .input_checks import BadInputError

# pickle.UnpicklingError covers a checkpoint refused by the weights-only loader (UntrustedCheckpointError).
USER_ERRORS = (
    BadInputError,
    CocoJsonError,
    ConfigError,
    ConversionError,
    FileNotFoundError,
    NotACheckpointError,
    ResumeCheckpointError,
    TFCheckpointError,
    pickle.UnpicklingError,
)


def run_command(main: Callable[[], object]) -> int:
    """Run ``main()``; a user error is printed as ``error: ...`` on stderr -> exit status 1, else 0."""
    try:
        main()
    except USER_ERRORS as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0
