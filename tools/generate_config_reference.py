#!/usr/bin/env python
"""Write docs/configuration.md, the configuration reference, from pix2seq_d2/config/defaults.py (keys, defaults,
comments) and the rule table of pix2seq_d2/config/rules.py (allowed values, when checked).

    python tools/generate_config_reference.py           # rewrite docs/configuration.md
    python tools/generate_config_reference.py --check   # exit 1 if it is out of date
"""

from __future__ import annotations

import pix2seq_d2  # noqa: F401  (first: it keeps detectron2's import-time FutureWarnings off the console)

# isort: split

import argparse
import os
import sys

from pix2seq_d2.config.reference import GENERATOR, REFERENCE_PATH, reference_markdown

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="only compare; exit 1 if the file is out of date")
    parser.add_argument("--output", default=os.path.join(REPO_ROOT, REFERENCE_PATH), help="default: %(default)s")
    args = parser.parse_args(argv)
    text = reference_markdown()
    current = open(args.output, encoding="utf-8").read() if os.path.exists(args.output) else None
    if args.check:
        if current != text:
            print(f"{args.output} is out of date: run {GENERATOR}", file=sys.stderr)
            return 1
        print(f"{args.output} is up to date")
        return 0
    if current != text:
        with open(args.output, "w", encoding="utf-8") as f:
            f.write(text)
    print(f"wrote {args.output}" if current != text else f"{args.output} was already up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main())
