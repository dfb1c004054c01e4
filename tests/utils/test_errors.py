"""UserError: what the command-line wrapper prints as one line; every user error of the package is one."""

from __future__ import annotations

import pickle

import pytest

from pix2seq_d2.checkpoint import NotACheckpointError, ResumeCheckpointError, UntrustedCheckpointError
from pix2seq_d2.config import ConfigError, ConfigKeyError
from pix2seq_d2.conversion import ConversionError, TFCheckpointError
from pix2seq_d2.data import BadInputError
from pix2seq_d2.data.datasets import CocoJsonError
from pix2seq_d2.engine.launch import run_command
from pix2seq_d2.utils.errors import MissingFileError, UserError


@pytest.mark.parametrize(
    "error, builtin",
    [(BadInputError, ValueError), (CocoJsonError, ValueError), (ConfigError, ValueError),
     (ConfigKeyError, ValueError), (ConversionError, ValueError), (TFCheckpointError, ValueError),
     (ResumeCheckpointError, ValueError), (UntrustedCheckpointError, pickle.UnpicklingError),
     (MissingFileError, FileNotFoundError), (NotACheckpointError, ValueError)],
)  # fmt: skip
def test_user_errors_are_user_errors_and_keep_their_builtin_base(error, builtin):
    assert issubclass(error, UserError) and issubclass(error, builtin)


def test_run_command_prints_a_user_error_as_one_line_and_lets_bugs_through(capsys):
    def wrong_file():
        raise MissingFileError("config file nowhere.yaml does not exist")

    assert run_command(wrong_file) == 1
    assert capsys.readouterr().err == "error: config file nowhere.yaml does not exist\n"
    assert run_command(lambda: None) == 0

    def bug():
        raise KeyError("a bug, not the user's fault")

    with pytest.raises(KeyError):
        run_command(bug)
    with pytest.raises(FileNotFoundError):  # a missing file that is not the user's named input is a bug too
        run_command(lambda: open("/nonexistent/pix2seq_d2/file"))
