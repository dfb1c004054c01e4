"""docs/configuration.md is what the generator makes from the config's defaults and rule table now."""

from __future__ import annotations

import difflib
import os

from pix2seq_d2.config.reference import GENERATOR, REFERENCE_PATH, reference_markdown
from tests.helpers import REPO_ROOT


def test_configuration_reference_is_up_to_date():
    path = os.path.join(REPO_ROOT, REFERENCE_PATH)
    assert os.path.isfile(path), f"{REFERENCE_PATH} is missing: run {GENERATOR}"
    with open(path, encoding="utf-8") as f:
        current = f.read()
    expected = reference_markdown()
    if current != expected:
        diff = "".join(list(difflib.unified_diff(
            current.splitlines(keepends=True), expected.splitlines(keepends=True),
            fromfile=REFERENCE_PATH, tofile="generated now",
        ))[:60])  # fmt: skip
        raise AssertionError(f"{REFERENCE_PATH} is out of date: run {GENERATOR}\n{diff}")
