"""The command line of every tool: a :class:`~pix2seq_d2.utils.errors.UserError` (a wrong file, dataset
or setting) is printed as one ``error: ...`` line (exit status 1) instead of a traceback; the training
scripts' shared arguments and checked ``launch``; and ``--config-file`` by path or by the name of a config
shipped with the package (:func:`add_config_file_argument`)."""

from __future__ import annotations

import argparse
import functools
import sys
from collections.abc import Callable

from detectron2.engine import default_argument_parser, launch
from detectron2.utils.logger import setup_logger

from pix2seq_d2.engine.distributed import leave_process_group
from pix2seq_d2.model_zoo import resolve_config_path
from pix2seq_d2.utils.errors import UserError

CONFIG_FILE_HELP = (
    "config file: a path, or the name of a config shipped with pix2seq_d2 (e.g. quickstart/pix2seq_shapes.yaml, "
    "official/pix2seq_R50_640.yaml; a leading configs/ is allowed) when no such file exists here"
)


def setup_tool_logging() -> None:
    """Log to the console as detectron2's tools do: detectron2's, fvcore's and this package's loggers
    (for the command line only: in-process callers keep their own logging)."""
    for name in ("detectron2", "fvcore", "pix2seq_d2"):
        setup_logger(name=name)


def run_tool(main: Callable[[list[str] | None], object], argv: list[str] | None = None) -> int:
    """A tool's command line: console logging, then ``main(argv)`` under :func:`run_command` (a user error
    is one ``error:`` line and exit status 1)."""
    setup_tool_logging()
    return run_command(lambda: main(argv))


def run_command(main: Callable[[], object]) -> int:
    """Run ``main()``; a user error is printed as ``error: ...`` on stderr -> exit status 1, else 0."""
    try:
        main()
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


def add_config_file_argument(parser: argparse.ArgumentParser, **kwargs) -> argparse.Action:
    """``--config-file FILE``, resolved by :func:`pix2seq_d2.model_zoo.resolve_config_path`: an existing
    path as is, else the shipped config of that name (a name that is neither is kept, so that reading it
    reports the missing file). ``kwargs`` go to ``add_argument`` (``required``, ``default``, ``help``)."""
    kwargs.setdefault("metavar", "FILE")
    kwargs.setdefault("help", CONFIG_FILE_HELP)
    return parser.add_argument("--config-file", type=resolve_config_path, **kwargs)


def parse_train_args(argv: list[str] | None, output_dir_key: str, example_configs: str) -> argparse.Namespace:
    """detectron2's training arguments plus ``--resume-newest-intact``; a missing ``--config-file`` is
    a usage error naming ``example_configs`` (detectron2's defaults would otherwise build a GPU
    Mask R-CNN and fail on the missing driver); a config name resolves as in :func:`add_config_file_argument`.
    ``output_dir_key``: where the script's config keeps its output folder (for the help text)."""
    parser = default_argument_parser()
    parser.add_argument(
        "--resume-newest-intact",
        action="store_true",
        help=f"like --resume; if the checkpoint named in {output_dir_key}/last_checkpoint is missing or corrupt, "
        "resume from the newest intact model_*.pth there (logged; nothing is deleted)",
    )
    args = parser.parse_args(argv)
    if not args.config_file:
        parser.error(f"--config-file is required: e.g. {example_configs}")
    args.config_file = resolve_config_path(args.config_file)  # a path, or the name of a shipped config
    return args


def _run_worker(main: Callable[[argparse.Namespace], object], args: argparse.Namespace) -> object:
    """One launched worker: ``main(args)``, then a clean exit from the process group (see
    :func:`~pix2seq_d2.engine.distributed.leave_process_group`)."""
    results = main(args)
    leave_process_group()
    return results


def launch_command(main: Callable[[argparse.Namespace], object], args: argparse.Namespace) -> int:
    """detectron2's ``launch`` of ``main(args)`` on ``args.num_gpus`` workers per machine (each leaves
    the process group cleanly after a completed run), under :func:`run_command`: a user error is one
    ``error:`` line and exit status 1."""
    print("Command Line Args:", args)
    return run_command(
        lambda: launch(
            functools.partial(_run_worker, main),
            args.num_gpus,
            num_machines=args.num_machines,
            machine_rank=args.machine_rank,
            dist_url=args.dist_url,
            args=(args,),
        )
    )
