"""``UserError``: the base class of every error that means a user's file, dataset or setting is wrong.

Each subpackage raises its own subclass (``ConfigError``, ``CocoJsonError``, ``NotACheckpointError``,
...), which also derives from the built-in exception callers expect (``ValueError``,
``FileNotFoundError``, ``pickle.UnpicklingError``). The command-line wrapper
(:func:`pix2seq_d2.engine.launch.run_command`) prints any ``UserError`` as one ``error: ...`` line
instead of a traceback; every other exception is a bug and keeps its traceback.
"""

from __future__ import annotations

__all__ = ["MissingFileError", "UserError"]


class UserError(Exception):
    """An error the user can fix (a file, a dataset, a setting); its message says what and where."""


class MissingFileError(UserError, FileNotFoundError):
    """A file the user named does not exist (e.g. ``--config-file``)."""
