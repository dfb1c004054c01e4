"""Choosing the checkpoint ``--resume`` loads, when the newest one of the folder may be damaged.

``resume_or_load(..., resume=True)`` of :class:`~pix2seq_d2.checkpoint.checkpointer.Pix2SeqCheckpointer` checks the
checkpoint named in ``OUTPUT_DIR/last_checkpoint`` (size, magic bytes, zip CRCs, weights-only load).
When it is missing or corrupt, the error (:class:`ResumeCheckpointError`) names it and the
newest intact ``model_*.pth`` of the folder, with the command to use that one; with
``resume_newest_intact`` (``tools/train_net.py --resume-newest-intact``, or the environment
variable ``PIX2SEQ_RESUME_NEWEST_INTACT=1``) training resumes from the newest intact one,
logging which file was skipped. Nothing is ever deleted (:func:`resolve_resume_checkpoint`).
"""

from __future__ import annotations

import logging
import math
import os
import re
from collections.abc import Mapping

from pix2seq_d2.utils.errors import UserError

from .file_checks import NotACheckpointError, check_checkpoint_file, checkpoint_files_in, crc_problem, not_a_checkpoint
from .weights_only import UntrustedCheckpointError, checkpoints_trusted, env_flag, read_checkpoint_file

__all__ = [
    "ResumeCheckpointError",
    "resolve_resume_checkpoint",
    "resume_newest_intact_default",
    "RESUME_NEWEST_INTACT_ENV_VAR",
]

logger = logging.getLogger(__name__)

RESUME_NEWEST_INTACT_ENV_VAR = "PIX2SEQ_RESUME_NEWEST_INTACT"


def resume_newest_intact_default() -> bool:
    """Whether ``PIX2SEQ_RESUME_NEWEST_INTACT`` asks ``--resume`` to skip a corrupt newest checkpoint."""
    return env_flag(RESUME_NEWEST_INTACT_ENV_VAR)


class ResumeCheckpointError(UserError, ValueError):
    """``--resume`` cannot use the checkpoint named in ``last_checkpoint`` (missing or corrupt). The message
    names it and the newest intact checkpoint of the folder (``newest_intact``, None if there is none) and
    how to resume from that one."""

    def __init__(self, message: str, unusable: str | None, newest_intact: str | None):
        super().__init__(message)
        self.unusable = unusable
        self.newest_intact = newest_intact


_NUMBERED = re.compile(r"^model_(\d+)\.pth$")


def numbered_checkpoints(save_dir: str) -> list[str]:
    """``model_<iteration>.pth`` and ``model_final.pth`` of ``save_dir``."""
    names = [n for n in checkpoint_files_in(save_dir, (".pth",)) if _NUMBERED.match(n) or n == "model_final.pth"]
    return [os.path.join(save_dir, n) for n in names]


def _iteration(path: str, data: Mapping) -> int | None:
    for value in (data.get("iteration"), (data.get("trainer") or {}).get("iteration")):
        if isinstance(value, int):
            return value
    match = _NUMBERED.match(os.path.basename(path))
    return int(match.group(1)) if match else None


def _is(error: Exception) -> str:
    """``error`` (about one file) as a phrase after the file's name: "is truncated ...", "is missing"."""
    if isinstance(error, NotACheckpointError):
        return f"is {error.what}"
    return f"cannot be loaded: {error}"


def _intact(path: str, trusted: bool) -> tuple[int | None, str | None]:
    """(iteration, None) for a checkpoint that passes the checks and loads; (None, why not) otherwise."""
    try:
        data = read_checkpoint_file(path, trusted=trusted, verify_crc=True)
    except (NotACheckpointError, UntrustedCheckpointError) as e:
        return None, f"{os.path.basename(path)} {_is(e)}"
    return _iteration(path, data), None


def _newest_intact(save_dir: str, exclude: set[str], trusted: bool) -> tuple[str | None, int | None, list[str]]:
    """The newest (by iteration) intact ``model_*.pth`` of ``save_dir`` not in ``exclude``, its iteration, and
    why newer ones are not intact. ``model_final.pth`` is placed by the iteration it holds."""
    numbered, final = [], None
    for path in numbered_checkpoints(save_dir):
        if os.path.abspath(path) in exclude:
            continue
        match = _NUMBERED.match(os.path.basename(path))
        if match:
            numbered.append((int(match.group(1)), path))
        else:
            final = path
    skipped = []
    final_iteration: float | None = None
    if final is not None:
        iteration, problem = _intact(final, trusted)
        if problem is None:
            final_iteration = math.inf if iteration is None else iteration
        else:
            skipped.append(problem)
    for number, path in sorted(numbered, reverse=True):
        if final_iteration is not None and final_iteration >= number:
            break
        iteration, problem = _intact(path, trusted)
        if problem is None:
            return path, iteration, skipped
        skipped.append(problem)
    if final_iteration is not None:
        return final, None if math.isinf(final_iteration) else int(final_iteration), skipped
    return None, None, skipped


def _named_problem(named: str, trusted: bool, verify_named: bool) -> Exception | None:
    """Why the checkpoint ``named`` in last_checkpoint cannot be resumed from, or None. Without ``verify_named``
    it is only inspected (size, magic bytes, zip CRCs); the caller loads it next."""
    try:
        if verify_named:
            read_checkpoint_file(named, trusted=trusted, verify_crc=True)
        elif check_checkpoint_file(named) == "torch":
            crc = crc_problem(named)
            if crc is not None:
                raise not_a_checkpoint(named, "corrupt", f"a PyTorch checkpoint whose data are damaged: {crc}")
    except (NotACheckpointError, UntrustedCheckpointError) as e:
        return e
    return None


def resolve_resume(
    save_dir: str, use_newest_intact: bool, trusted: bool, verify_named: bool, known_problem: Exception | None = None
) -> str | None:
    """See :func:`resolve_resume_checkpoint`. ``verify_named=False`` only inspects the named file (the caller
    loads it next and comes back with the error as ``known_problem`` if that fails)."""
    last_file = os.path.join(save_dir, "last_checkpoint")
    named = None
    if os.path.isfile(last_file):
        try:
            with open(last_file, encoding="utf-8") as f:
                name = f.read().strip()
        except (OSError, UnicodeDecodeError):
            name = ""
        if name:
            named = os.path.join(save_dir, name)
            error = known_problem or _named_problem(named, trusted, verify_named)
            if error is None:
                return named
            problem = f"{named}, the checkpoint named in {last_file}, {_is(error)}"
        else:
            problem = f"{last_file}, which names the checkpoint to resume from, is empty or unreadable"
    elif numbered_checkpoints(save_dir):
        problem = f"{save_dir} holds checkpoints but no last_checkpoint file, which names the one to resume from"
    else:
        return None  # nothing to resume from: detectron2 starts from MODEL.WEIGHTS
    problem = problem.rstrip(".")
    intact, iteration, skipped = _newest_intact(save_dir, {os.path.abspath(named)} if named else set(), trusted)
    not_intact = "; ".join(reason.rstrip(".") for reason in skipped)
    also = f" Newer checkpoints that are not intact either: {not_intact}." if skipped else ""
    kept = "Nothing is deleted"
    if named and os.path.exists(named):
        kept += f": {named} stays on disk (a later save under its name replaces it; copy it elsewhere to keep it)"
    if intact is None:
        listed = f" Not intact: {not_intact}." if skipped else ""
        raise ResumeCheckpointError(
            f"Cannot resume: {problem}, and {save_dir} holds no intact model_*.pth to resume from instead.{listed} "
            "Start without --resume (in a new OUTPUT_DIR to keep these files), with MODEL.WEIGHTS for initial "
            "weights.",
            named,
            None,
        )
    at = f"iteration {iteration}" if iteration is not None else "iteration unknown"
    if use_newest_intact:
        logger.warning(
            f"Resuming from {intact} ({at}), the newest intact checkpoint in {save_dir}, because {problem}.{also} "
            f"{kept}."
        )
        return intact
    raise ResumeCheckpointError(
        f"Cannot resume: {problem}. The newest intact checkpoint in {save_dir} is {intact} ({at}). To resume from "
        "it, run the same command with --resume-newest-intact instead of --resume (tools/train_net.py; elsewhere "
        f"set the environment variable {RESUME_NEWEST_INTACT_ENV_VAR}=1), or make it the last checkpoint: echo "
        f"{os.path.basename(intact)} > {last_file}. {kept}.{also}",
        named,
        intact,
    )


def resolve_resume_checkpoint(save_dir: str, use_newest_intact: bool, *, trusted: bool | None = None) -> str | None:
    """The checkpoint ``--resume`` should load from ``save_dir`` (a local ``OUTPUT_DIR``), or None when there is
    nothing to resume (no ``last_checkpoint`` and no ``model_*.pth``: training starts from ``MODEL.WEIGHTS``).

    Normally the file named in ``save_dir/last_checkpoint``, after checking that it is intact (size and magic
    bytes, every zip record against its CRC, a weights-only load). When it is missing or not intact (or
    ``last_checkpoint`` is missing/empty while ``model_*.pth`` files exist):

    * ``use_newest_intact=False``: raises :class:`ResumeCheckpointError` naming the unusable file and the
      newest intact ``model_*.pth`` (by iteration; ``model_final.pth`` by the iteration it holds), with how to
      resume from it;
    * ``use_newest_intact=True``: logs a warning naming the skipped file and returns the newest intact one.

    Nothing is deleted or rewritten. Raises :class:`ResumeCheckpointError` when no checkpoint is intact.
    """
    trusted = checkpoints_trusted() if trusted is None else trusted
    return resolve_resume(save_dir, use_newest_intact, trusted, verify_named=True)
