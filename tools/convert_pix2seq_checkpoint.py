#!/usr/bin/env python
"""Convert a checkpoint of another Pix2Seq implementation to pix2seq_d2: OUTPUT.pth + OUTPUT.yaml.

    python tools/convert_pix2seq_checkpoint.py --model official/R50_640 --output OUT.pth
    python tools/convert_pix2seq_checkpoint.py --source official PATH --output OUT.pth \\
        [--image-size N] [--dataset coco|objects365]
    python tools/convert_pix2seq_checkpoint.py --source pretrained_pix2seq PATH/checkpoint.pth --output OUT.pth \\
        [--num-heads N]

``--model NAME``: a published checkpoint (``--list-models`` lists them: the official ones as
``official/<R50|R50_C4|ViT_B|ViT_L>_<640|1024|1333>`` and ``official/<...>_obj365_640``, and
``pretrained_pix2seq/R50_1333``), downloaded over HTTPS from its public location into the cache folder
``$PIX2SEQ_CACHE`` (default ``~/.cache/pix2seq_d2``) with a progress bar, resumed where an interrupted
run stopped, checked (size and format) and converted with the published model's settings
(``PIX2SEQ_ZOO_MIRROR=URL`` fetches ``URL/NAME/FILE`` instead).

``--source official``: a TensorFlow 2 checkpoint of google-research/pix2seq (its folder, the
``ckpt-N`` prefix or the ``.index`` file); the image size and the class list come from the folder's
``config.json`` unless given. ``--source pretrained_pix2seq``: the ``checkpoint.pth`` of
Pretrained-Pix2Seq's ``main.py`` (loaded weights-only: no code in it runs); the number of attention
heads comes from its pickled ``args`` unless given.

The architecture is read from the tensors; every tensor is mapped onto a model parameter or is on
the source's ignore list (optimizer slots, step counters), and every parameter of the model that
OUTPUT.yaml builds is filled with the right shape, otherwise nothing is written and the tool prints
``error: ...`` naming the file and the tensors, with exit status 2 (so does a failed download).
OUTPUT.yaml's ``_BASE_`` is the config shipped with the installed package. Then evaluate with

    python tools/train_net.py --config-file OUT.yaml --eval-only
"""

from __future__ import annotations

import pix2seq_d2  # noqa: F401  (first: it keeps detectron2's import-time FutureWarnings off the console)

# isort: split

import argparse
import os
import sys
import time
from collections import Counter

from pix2seq_d2.conversion import (
    SOURCES,
    ConvertedCheckpoint,
    checkpoint_folder,
    convert_checkpoint,
    convert_published,
    write_converted,
)
from pix2seq_d2.model_zoo import PUBLISHED_CHECKPOINTS
from pix2seq_d2.utils.errors import UserError

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OPTIONS = {"official": ("image_size", "dataset"), "pretrained_pix2seq": ("num_heads",)}


def positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--source", choices=sorted(SOURCES), help="which implementation wrote PATH")
    which.add_argument(
        "--model", metavar="NAME", choices=sorted(PUBLISHED_CHECKPOINTS),
        help="a published checkpoint to download and convert (see --list-models)",
    )  # fmt: skip
    which.add_argument("--list-models", action="store_true", help="print the published checkpoints and exit")
    parser.add_argument(
        "path", metavar="PATH", nargs="?", help="with --source: official: checkpoint folder, prefix or .index; "
        "pretrained_pix2seq: the .pth"
    )  # fmt: skip
    parser.add_argument("--output", metavar="OUT.pth", help="writes OUT.pth and OUT.yaml")
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


def model_table() -> str:
    """The published checkpoints: name, config, URL."""
    width = max(len(name) for name in PUBLISHED_CHECKPOINTS)
    return "\n".join(
        f"{name:<{width}}  {entry.config:<42}  {entry.url}" for name, entry in sorted(PUBLISHED_CHECKPOINTS.items())
    )


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


def check_arguments(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """--source PATH or --model NAME (exactly one), --output, and only the chosen source's options."""
    if args.model is None and args.source is None:
        parser.error("give --model NAME (a published checkpoint) or --source SOURCE PATH")
    if args.source is not None and args.path is None:
        parser.error(f"--source {args.source} needs the PATH of the checkpoint")
    if args.model is not None and args.path is not None:
        parser.error(f"--model downloads its files: no PATH ({args.path}); to convert local files use --source")
    if args.output is None:
        parser.error("--output OUT.pth is required")
    for source, names in OPTIONS.items():
        for name in names:
            if getattr(args, name) is None:
                continue
            if args.model is not None:
                parser.error(
                    f"--{name.replace('_', '-')} applies to --source only (--model uses the published settings)"
                )
            if source != args.source:
                parser.error(f"--{name.replace('_', '-')} applies to --source {source} only")


def main(argv: list[str] | None = None) -> dict | None:
    """Convert and write; returns ``{"converted", "pth", "yaml", "seconds"}`` (None for ``--list-models``).
    A checkpoint that cannot be fetched or converted exits with status 2 after printing ``error: <message>``
    to stderr."""
    parser = get_parser()
    args = parser.parse_args(argv)
    if args.list_models:
        print(model_table())
        return None
    check_arguments(parser, args)
    start = time.perf_counter()
    try:
        if args.model is not None:
            print(f"fetching:         {args.model} into {checkpoint_folder(args.model)}", file=sys.stderr)
            converted = convert_published(args.model)
        else:
            options = {name: getattr(args, name) for name in OPTIONS[args.source] if getattr(args, name) is not None}
            converted = convert_checkpoint(args.source, args.path, **options)
    except UserError as e:
        parser.exit(2, f"error: {e}\n")
    pth, yaml = write_converted(converted, args.output)
    seconds = time.perf_counter() - start
    print(summary(converted, pth, yaml, seconds))
    return {"converted": converted, "pth": pth, "yaml": yaml, "seconds": seconds}


if __name__ == "__main__":
    main()
