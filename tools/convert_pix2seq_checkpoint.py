#!/usr/bin/env python
"""Convert a checkpoint of another Pix2Seq implementation to pix2seq_d2: OUTPUT.pth + OUTPUT.yaml.

    python tools/convert_pix2seq_checkpoint.py --source official PATH --output OUT.pth \\
        [--image-size N] [--dataset coco|objects365]
    python tools/convert_pix2seq_checkpoint.py --source pretrained_pix2seq PATH/checkpoint.pth --output OUT.pth \\
        [--num-heads N]

``--source official``: a TensorFlow 2 checkpoint of google-research/pix2seq (its folder, the
``ckpt-N`` prefix or the ``.index`` file); the image size and the class list come from the folder's
``config.json`` unless given. ``--source pretrained_pix2seq``: the ``checkpoint.pth`` of
Pretrained-Pix2Seq's ``main.py`` (loaded weights-only: no code in it runs); the number of attention
heads comes from its pickled ``args`` unless given.

The architecture is read from the tensors; every tensor is mapped onto a model parameter or is on
the source's ignore list (optimizer slots, step counters), and every parameter of the model that
OUTPUT.yaml builds is filled with the right shape, otherwise nothing is written and the tool prints
``error: ...`` naming the file and the tensors, with exit status 2. Then evaluate with

    python tools/train_net.py --config-file OUT.yaml --eval-only
"""

from __future__ import annotations

import pix2seq_d2  # noqa: F401  (first: it keeps detectron2's import-time FutureWarnings off the console)

# isort: split

import argparse
import os
import time
from collections import Counter

from pix2seq_d2.conversion import (
    SOURCES,
    ConversionError,
    ConvertedCheckpoint,
    TFCheckpointError,
    convert_checkpoint,
    write_converted,
)

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OPTIONS = {"official": ("image_size", "dataset"), "pretrained_pix2seq": ("num_heads",)}


def positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", required=True, choices=sorted(SOURCES), help="which implementation wrote PATH")
    parser.add_argument("path", metavar="PATH", help="official: checkpoint folder, prefix or .index; else the .pth")
    parser.add_argument("--output", required=True, metavar="OUT.pth", help="writes OUT.pth and OUT.yaml")
    parser.add_argument(
        "--image-size", type=positive_int, help="official: the square image size (default: config.json)"
    )
    parser.add_argument(
        "--dataset", choices=("coco", "objects365"), help="official: what the class tokens mean (default: config.json)"
    )
    parser.add_argument(
        "--num-heads", type=positive_int, help="pretrained_pix2seq: attention heads (default: args.nheads)"
    )
    return parser


def ignored_categories(names: list[str]) -> Counter:
    """Ignored tensor names -> counts per kind: optimizer slots, else the first path component."""
    return Counter(".OPTIMIZER_SLOT" if "/.OPTIMIZER_SLOT/" in name else name.split("/")[0] for name in names)


def _shown(path: str) -> str:
    """``path`` relative to the repository when it is inside it (config files), else as is."""
    relative = os.path.relpath(path, REPO_ROOT)
    return path if relative.startswith("..") else relative


def summary(converted: ConvertedCheckpoint, pth: str, yaml: str, seconds: float) -> str:
    values = sum(t.numel() for t in converted.state_dict.values())
    categories = ignored_categories(converted.ignored)
    ignored = f"{len(converted.ignored)}"
    if categories:
        ignored += " (" + ", ".join(f"{name}: {n}" for name, n in sorted(categories.items())) + ")"
    lines = [
        f"source:           {converted.source_kind} {converted.source}",
        f"converted:        {len(converted.state_dict)} tensors ({values:,} values)",
        f"ignored:          {ignored}",
        f"base config:      {_shown(converted.base_config)}",
        *[f"note:             {note}" for note in converted.notes],
        f"time:             {seconds:.2f} s",
        f"wrote:            {pth}",
        f"                  {yaml}",
        f"next:             python tools/train_net.py --config-file {yaml} --eval-only",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    """Convert and write; returns ``{"converted", "pth", "yaml", "seconds"}``. A checkpoint that cannot be
    converted exits with status 2 after printing ``error: <message>`` to stderr."""
    parser = get_parser()
    args = parser.parse_args(argv)
    for source, names in OPTIONS.items():
        for name in names:
            if source != args.source and getattr(args, name) is not None:
                parser.error(f"--{name.replace('_', '-')} applies to --source {source} only")
    options = {name: getattr(args, name) for name in OPTIONS[args.source] if getattr(args, name) is not None}
    start = time.perf_counter()
    try:
        converted = convert_checkpoint(args.source, args.path, **options)
    except (ConversionError, TFCheckpointError) as e:
        parser.exit(2, f"error: {e}\n")
    pth, yaml = write_converted(converted, args.output)
    seconds = time.perf_counter() - start
    print(summary(converted, pth, yaml, seconds))
    return {"converted": converted, "pth": pth, "yaml": yaml, "seconds": seconds}


if __name__ == "__main__":
    main()
