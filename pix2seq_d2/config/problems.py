"""Config problems and how they are reported: every problem found by the start-up checks is collected, the
errors raised together as one :class:`ConfigError` naming each key, and each warning logged once."""

from __future__ import annotations

import logging
import numbers
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from detectron2.utils.logger import log_first_n

from pix2seq_d2.utils.errors import UserError

__all__ = ["ConfigError", "Problem", "error", "number_text", "preview", "report", "warning"]


@dataclass(frozen=True)
class Problem:
    """One problem of a config: its message, whether it is only a warning, and (rule-table problems) its key."""

    message: str
    warning: bool = False
    key: str = ""


class ConfigError(UserError, ValueError):
    """One or more config settings that cannot work; ``problems`` holds one message per setting."""

    def __init__(self, problems: Sequence[str]):
        self.problems = list(problems)
        if len(self.problems) == 1:
            message = f"Invalid config: {self.problems[0]}"
        else:
            listed = "\n".join(f"  - {p}" for p in self.problems)
            message = f"Invalid config ({len(self.problems)} problems):\n{listed}"
        super().__init__(message)


def number_text(x: float) -> str:
    """A setting's number for a message: integers in full, floats short."""
    return str(x) if isinstance(x, numbers.Integral) else f"{x:g}"


def error(message: str) -> Problem:
    return Problem(message)


def warning(message: str) -> Problem:
    return Problem(message, warning=True)


def report(problems: Iterable[Problem]) -> list[str]:
    """Raise a :class:`ConfigError` listing the errors; otherwise log each warning once; return the warnings."""
    problems = list(dict.fromkeys(problems))  # one message once
    errors = [p.message for p in problems if not p.warning]
    if errors:
        raise ConfigError(errors)
    warnings = [p.message for p in problems if p.warning]
    for message in warnings:
        log_first_n(logging.WARNING, message, n=1, name=__name__, key="message")  # once per process
    return warnings


def preview(values: Sequence[Any], limit: int = 10) -> str:
    shown = ", ".join(str(v) for v in list(values)[:limit])
    return f"[{shown}{', ...' if len(values) > limit else ''}]"
