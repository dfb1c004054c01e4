"""The task seam: what a vision task must say to run on the Pix2Seq decoder, and the registry of tasks.

Pix2Seq writes every vision task as a token sequence in one shared vocabulary
(:class:`~.tokenizer.Pix2SeqTokenizer`): the decoder is asked for a task by its *prompt* and answers
with a *response* in the task's grammar. A :class:`Task` owns everything about its sequences:

* the prompt (:meth:`Task.prompt`) and the response grammar (:meth:`Task.forbidden_tokens`, a periodic
  table of the tokens forbidden at each response position), and how long responses get
  (:meth:`Task.max_response_length`, :meth:`Task.max_sequence_length`);
* encoding: which annotation fields it reads (:attr:`Task.annotation_keys`), and how a dataset dict's
  annotations (as detectron2 ``Instances``) become training tokens and weights
  (:meth:`Task.example` for the mapper, one image; :meth:`Task.batch_sequences` for the model, a batch);
* decoding: its :class:`~.decoding_options.DecodingOptions` and what is recorded per response position
  while decoding (:meth:`Task.response_recorder`);
* output: how decoded sequences become the model's outputs (:meth:`Task.outputs`, e.g. fields of
  ``Instances``), and the kinds of its target tokens for the likelihood evaluator (:meth:`Task.token_kinds`).

The model, the mapper, the decoding engine, the likelihood evaluator and the analysis tools ask the task;
none of them knows a task's format. Tasks are registered in ``TASK_REGISTRY`` and named by
``MODEL.PIX2SEQ.TASKS``; docs/tasks.md says how to add one.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import torch
from detectron2.config import CfgNode
from detectron2.structures import ImageList, Instances
from detectron2.utils.registry import Registry

from pix2seq_d2.tasks.tokenizer import Pix2SeqTokenizer, TokenSequences

from .decoding_options import DecodingOptions

__all__ = ["TASK_REGISTRY", "ResponseRecorder", "Task", "build_task"]

TASK_REGISTRY = Registry("PIX2SEQ_TASK")
TASK_REGISTRY.__doc__ = """Pix2Seq tasks by name (``MODEL.PIX2SEQ.TASKS``): classes derived from :class:`Task`,
built with ``Task.from_config(cfg, tokenizer)``."""


class ResponseRecorder(Protocol):
    """What decoding keeps per response position besides the tokens (e.g. a distribution at some
    positions), for a batch whose rows may be dropped or reordered (finished images, beams)."""

    def record(self, rows: torch.Tensor | slice, t: int, logprobs: torch.Tensor) -> None:
        """``logprobs [N, V]`` of response position ``t`` for batch ``rows``."""

    def select(self, rows: torch.Tensor) -> None:
        """Keep (and reorder to) batch ``rows``."""

    def tensors(self) -> dict[str, torch.Tensor]:
        """What was recorded, each with the batch as its first dimension."""


class Task:
    """One vision task as a token sequence: prompt, response grammar, encoding, decoding, outputs.

    Subclasses are registered in ``TASK_REGISTRY`` by their class name (what ``MODEL.PIX2SEQ.TASKS`` names),
    set :attr:`name` (the key of their prompt in the vocabulary layout) and implement the methods below;
    the base class holds the shared :class:`~.tokenizer.Pix2SeqTokenizer` and the task's
    :class:`~.decoding_options.DecodingOptions`.
    """

    name: str = ""  # the task's prompt key in the vocabulary layout, e.g. "detection"
    annotation_keys: tuple[str, ...] = ()  # the annotation fields (besides boxes and classes) the task reads

    def __init__(self, tokenizer: Pix2SeqTokenizer, decoding: DecodingOptions):
        self.tokenizer = tokenizer
        self.decoding = decoding

    @classmethod
    def from_config(cls, cfg: CfgNode, tokenizer: Pix2SeqTokenizer | None = None) -> Task:
        """The task as ``cfg`` describes it (``tokenizer``: one already built from ``cfg``)."""
        raise NotImplementedError

    # ---- the sequence format ------------------------------------------------------------------
    def prompt(self, batch_size: int, device: torch.device | str = "cpu") -> torch.Tensor:
        """int64 ``[B, L]``: the tokens that ask the decoder for this task (default: its prompt token)."""
        token = self.tokenizer.prompt_token(self.name)
        return torch.full((batch_size, 1), token, dtype=torch.long, device=device)

    def forbidden_tokens(self, options: DecodingOptions, device: torch.device | str = "cpu") -> torch.Tensor:
        """bool ``[P, V]``: the tokens that may not be generated at response position ``t`` are row ``t % P``."""
        raise NotImplementedError

    def max_response_length(self, options: DecodingOptions) -> int:
        """The most tokens a response decoded with ``options`` may have (EOS included)."""
        raise NotImplementedError

    def max_sequence_length(self, max_items: int) -> int:
        """Decoder positions a training or decoded sequence of up to ``max_items`` items takes (prompt included)."""
        raise NotImplementedError

    # ---- encoding ---------------------------------------------------------------------------------
    def example(self, instances: Instances, is_train: bool = True) -> tuple[Instances, TokenSequences]:
        """One image's ground truth (``instances`` of the augmented image) -> the instances the sequence
        holds, in sequence order, and its 1-D input/target/weight (the dataset mapper's call; at test
        time, ``is_train`` False, for the likelihood evaluator: no randomness)."""
        raise NotImplementedError

    def batch_sequences(
        self,
        instances: Sequence[Instances],
        names: Sequence[str],
        device: torch.device | str,
        generator: torch.Generator | None = None,
        draws: Any = None,
    ) -> TokenSequences:
        """A batch's ground truth -> its ``[B, T]`` training sequences on ``device`` (the model's call, for
        inputs from any detectron2 mapper), drawing randomness from ``generator`` (None: the global RNG)
        unless ``draws`` (the task's own record of random draws) replays given ones; ``names`` say which
        image is which in errors and warnings."""
        raise NotImplementedError

    # ---- decoding and outputs --------------------------------------------------------------------
    def response_recorder(self, rows: int, options: DecodingOptions, device: torch.device | str) -> ResponseRecorder:
        """What decoding records per response position for a batch of ``rows``."""
        raise NotImplementedError

    def outputs(
        self,
        batched_inputs: list[dict],
        sequences: Any,
        images: ImageList,
        do_postprocess: bool = True,
        options: DecodingOptions | None = None,
    ) -> list[dict]:
        """Decoded ``sequences`` (:class:`~pix2seq_d2.modeling.decoding.DecodedSequences`) of the images
        ``images``, decoded with ``options`` (default: the task's) -> one output dict per input (e.g.
        ``{"instances": Instances}`` in each input's original size when ``do_postprocess``)."""
        raise NotImplementedError

    def token_kinds(self, tokens: torch.Tensor) -> dict[str, torch.Tensor]:
        """Boolean masks over target ``tokens`` by kind (PAD in none), for the likelihood evaluator."""
        raise NotImplementedError


def build_task(cfg: CfgNode, tokenizer: Pix2SeqTokenizer | None = None) -> Task:
    """The task of ``MODEL.PIX2SEQ.TASKS`` (one task per model for now; joint training of several is not
    built yet), from ``TASK_REGISTRY``."""
    names = list(cfg.MODEL.PIX2SEQ.TASKS)
    if len(names) != 1:
        raise ValueError(
            f"MODEL.PIX2SEQ.TASKS = {names}: exactly one task per model (joint training of several is not built yet)"
        )
    return TASK_REGISTRY.get(names[0]).from_config(cfg, tokenizer)
