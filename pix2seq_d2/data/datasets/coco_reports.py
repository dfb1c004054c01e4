"""How the checks of a COCO json report what they find: an error (:class:`CocoJsonError`) lists up to
:data:`MAX_LISTED` problems of one part of the file with their count (:class:`Problems`); annotations that are
skipped or only warned about are named one by one up to :data:`MAX_LISTED` and counted by kind and image
(:class:`Findings`); every warning is logged once per process (:func:`warn_once`), under the reader's logger."""

from __future__ import annotations

import json
import logging
import math
from collections import Counter
from typing import Any

from detectron2.utils.logger import log_first_n

from pix2seq_d2.utils.errors import UserError

__all__ = ["MAX_LISTED", "CocoJsonError", "Findings", "Problems", "describe_value", "warn_once"]

MAX_LISTED = 10  # problems listed one by one in an error, annotations warned about one by one
_LOGGER = "pix2seq_d2.data.datasets.coco"  # the reader's: every warning about a COCO json comes from one logger


class CocoJsonError(UserError, ValueError):
    """A COCO json file that cannot be used as a dataset; the message names the file and the item."""


def warn_once(message: str) -> None:
    """Log a warning once per process: a dataset loaded again (every evaluation builds its test loader,
    the evaluator reads the ground truth) does not repeat its warnings."""
    log_first_n(logging.WARNING, message, n=1, key="message", name=_LOGGER)


def describe_value(value: Any) -> str:
    """``value`` as json shows it, with its type where the text alone would mislead (``"0"``)."""
    if isinstance(value, str):
        return f"{json.dumps(value)} (a string)"
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    text = json.dumps(value) if isinstance(value, (int, float, list, dict)) else repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


class Problems:
    """Problems found in one part of a json: the first few in full, all counted."""

    def __init__(self) -> None:
        self.listed: list[str] = []
        self.count = 0

    def append(self, message: str) -> None:
        self.count += 1
        if len(self.listed) < MAX_LISTED:
            self.listed.append(message)

    def raise_if_any(self, json_file: str, where: str, expected: str = "") -> None:
        """A :class:`CocoJsonError` listing the problems of ``where`` (e.g. its "annotations"), if any."""
        if not self.count:
            return
        listed = "\n".join(f"  - {p}" for p in self.listed)
        more = f"\n  ... and {self.count - len(self.listed)} more" if self.count > len(self.listed) else ""
        count = "1 problem" if self.count == 1 else f"{self.count} problems"
        hint = f"\n{expected}" if expected else ""
        raise CocoJsonError(f"COCO json {json_file}: {count} in its {where}:\n{listed}{more}{hint}")


class Findings:
    """Annotations found to be skipped, or to be warned about: the first few named, all counted by kind and image."""

    def __init__(self) -> None:
        self.listed: list[tuple[str, str]] = []  # (annotation name, reason)
        self.kinds: Counter[str] = Counter()
        self.image_ids: set = set()

    def append(self, name: str, kind: str, reason: str, image_id: Any) -> None:
        self.kinds[kind] += 1
        self.image_ids.add(image_id)
        if len(self.listed) < MAX_LISTED:
            self.listed.append((name, reason))

    @property
    def count(self) -> int:
        return sum(self.kinds.values())

    def kinds_text(self) -> str:
        """'2 with a zero width or height, 1 without 'bbox''."""
        return ", ".join(f"{n} {kind}" for kind, n in self.kinds.most_common())

    def images_text(self) -> str:
        """'1 image', '3 images'."""
        return f"{len(self.image_ids)} image{'s' if len(self.image_ids) != 1 else ''}"

    def more_text(self) -> str:
        """'; 5 not listed above' when more were found than named."""
        return f"; {self.count - len(self.listed)} not listed above" if self.count > len(self.listed) else ""

    def warn_each(self, json_file: str, verb: str = "") -> None:
        """One warning per named annotation: 'COCO json <file>: <verb><name>: <reason>'."""
        for name, reason in self.listed:
            warn_once(f"COCO json {json_file}: {verb}{name}: {reason}")
