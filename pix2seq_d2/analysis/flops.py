"""Parameters and FLOPs of a Pix2Seq model: image encoder per image, decoder per decoded token.

FLOPs are counted as detectron2/fvcore count them: by tracing the model and adding, per traced
operator, the multiply-adds of the known operators (one multiply-add is one "flop"; element-wise
ops, softmax and the like are ignored). fvcore has no handle for
``aten::scaled_dot_product_attention``, which every attention layer of this package calls, so its
attention products would silently be missing; :func:`sdpa_flop_jit` counts them
(``Q K^T`` and ``attention @ V``) and :class:`FlopCountAnalysis` is detectron2's class with it added.

A detection costs one pass of the image encoder (backbone, input projection, transformer encoder:
:func:`encoder_flops`), one projection of the encoder memory into every decoder layer's
cross-attention keys/values (:func:`decoder_start_flops`), then one cached decoder step per generated
token (:func:`decoder_step_flops`). A step's cost grows linearly with its position (its
self-attention reads every earlier position), so the decoder cost of a whole sequence of ``n``
tokens is exactly ``n * (step(0) + step(n - 1)) / 2`` (:func:`decoder_sequence_flops`).
"""

from __future__ import annotations

import contextlib
import math
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from detectron2.utils import analysis as d2_analysis
from fvcore.nn.jit_handles import get_shape
from torch import nn

from pix2seq_d2.modeling.meta_arch.pix2seq import Pix2Seq
from pix2seq_d2.modeling.transformer import DecoderCache, TokenDecoder

__all__ = [
    "FLOP_HANDLES",
    "FlopCountAnalysis",
    "FlopSummary",
    "ModelFlops",
    "decoder_sequence_flops",
    "decoder_start_flops",
    "decoder_step_flops",
    "encoder_flops",
    "flop_summary",
    "format_count",
    "model_flops",
    "parameter_counts",
    "sdpa_flop_jit",
    "table",
]

SDPA_OP = "aten::scaled_dot_product_attention"


def sdpa_flop_jit(inputs: list[Any], outputs: list[Any]) -> int:
    """fvcore handle for ``aten::scaled_dot_product_attention``: the multiply-adds of ``Q K^T`` and of
    ``softmax(.) V``, i.e. ``prod(out.shape[:-1]) * Tk * (Dk + Dv)`` for ``q [..., Tq, Dk]``,
    ``k [..., Tk, Dk]``, ``v [..., Tk, Dv]`` and ``out [..., Tq, Dv]`` (softmax and scaling are
    element-wise: not counted, as fvcore counts none)."""
    q_shape, k_shape, v_shape = (get_shape(v) for v in inputs[:3])
    out_shape = get_shape(outputs[0])
    if None in (q_shape, k_shape, v_shape, out_shape):
        raise ValueError(f"{SDPA_OP}: shapes unknown in the trace (q {q_shape}, k {k_shape}, v {v_shape})")
    rows = math.prod(out_shape[:-1])  # batch x heads x Tq
    return rows * k_shape[-2] * (q_shape[-1] + v_shape[-1])


FLOP_HANDLES = {SDPA_OP: sdpa_flop_jit}
"""Operators fvcore does not count and this package uses: op name -> fvcore handle."""


class FlopCountAnalysis(d2_analysis.FlopCountAnalysis):
    """detectron2's ``FlopCountAnalysis`` (any detectron2 model, ``inputs`` in its own format) that also
    counts ``aten::scaled_dot_product_attention`` (:data:`FLOP_HANDLES`)."""

    def __init__(self, model: nn.Module, inputs: Any):
        super().__init__(model, inputs)
        self.set_op_handle(**FLOP_HANDLES)


# ---- parameters ----------------------------------------------------------------------------
def _numel(module: nn.Module | None) -> int:
    return 0 if module is None else sum(p.numel() for p in module.parameters())


def parameter_counts(model: Pix2Seq) -> dict[str, int]:
    """Parameters per part of the model, in forward order, and ``"total"`` (shared weights counted once).

    Parts: ``backbone``, ``input_proj``, ``encoder``, ``memory_projection``, and the decoder split into
    ``decoder.embeddings`` (token and position embeddings; with a shared output layer the token
    embedding is also the output projection), ``decoder.layers`` (with per-layer ``decoder.layers.N``),
    ``decoder.output`` (final norm, output bias, and an unshared output projection) and ``decoder``.
    """
    dec = model.decoder
    counts = {
        "backbone": _numel(model.backbone),
        "input_proj": _numel(model.input_proj),
        "encoder": _numel(model.encoder),
        "memory_projection": _numel(model.memory_projection),
        "decoder.embeddings": _numel(dec.token_embed) + _numel(dec.pos_embed),
        "decoder.layers": _numel(dec.layers),
    }
    for i, layer in enumerate(dec.layers):
        counts[f"decoder.layers.{i}"] = _numel(layer)
    counts["decoder.output"] = _numel(dec.norm) + dec.output_bias.numel() + _numel(dec.output_proj)
    counts["decoder"] = _numel(dec)
    counts["total"] = _numel(model)
    return counts


# ---- FLOPs of the parts --------------------------------------------------------------------
@dataclass(frozen=True)
class FlopSummary:
    """One traced computation: its total FLOPs, per operator, and the operators that were not counted."""

    total: int
    by_operator: dict[str, int]
    uncounted: dict[str, int]  # operator -> occurrences (fvcore has no handle and it is not ignored)


def flop_summary(module: nn.Module, inputs: Any) -> FlopSummary:
    """Trace ``module(*inputs)`` (``inputs`` a tuple, or one argument) with :class:`FlopCountAnalysis`."""
    analysis = FlopCountAnalysis(module, inputs)
    analysis.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
    return FlopSummary(int(analysis.total()), dict(analysis.by_operator()), dict(analysis.unsupported_ops()))


class _ImageEncoder(nn.Module):
    """Model inputs -> encoder memory: preprocessing, backbone, input projection, transformer encoder
    (and the memory projection of the official layout)."""

    def __init__(self, model: Pix2Seq):
        super().__init__()
        self.model = model

    def forward(self, batched_inputs: list[dict]) -> torch.Tensor:
        memory, _, _ = self.model.encode(self.model.preprocess_image(batched_inputs))
        return memory


class _DecoderStart(nn.Module):
    """Encoder memory -> every decoder layer's cross-attention keys/values (once per image)."""

    def __init__(self, decoder: TokenDecoder):
        super().__init__()
        self.decoder = decoder

    def forward(self, memory: torch.Tensor, memory_pos: torch.Tensor | None = None) -> tuple[torch.Tensor, ...]:
        return tuple(t for kv in self.decoder.memory_kv(memory, memory_pos) for t in kv)


class _DecoderStep(nn.Module):
    """One cached :meth:`TokenDecoder.step` at a fixed position (the cache holds ``position`` tokens)."""

    def __init__(self, decoder: TokenDecoder, position: int):
        super().__init__()
        self.decoder = decoder
        self.position = position

    def forward(
        self,
        token: torch.Tensor,
        self_k: torch.Tensor,
        self_v: torch.Tensor,
        cross_k: torch.Tensor,
        cross_v: torch.Tensor,
    ) -> torch.Tensor:
        cache = DecoderCache(self_k, self_v, cross_k, cross_v, memory_mask=None, length=self.position)
        return self.decoder.step(token, cache)


@contextlib.contextmanager
def _training_mode_off(model: nn.Module) -> Iterator[None]:
    """``model`` in eval mode inside (dropout off, as in inference), its own mode restored after."""
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


@torch.no_grad()
def encoder_flops(model: Pix2Seq, batched_inputs: list[dict]) -> FlopSummary:
    """FLOPs of the image encoder for ``batched_inputs`` (model input dicts; one image: per image)."""
    with _training_mode_off(model):
        return flop_summary(_ImageEncoder(model), (batched_inputs,))


@torch.no_grad()
def decoder_start_flops(decoder: TokenDecoder, memory_length: int, batch: int = 1) -> FlopSummary:
    """FLOPs of projecting an encoder memory of ``memory_length`` positions into every decoder layer's
    cross-attention keys/values (once per image, before the first step)."""
    dim = decoder.token_embed.embedding_dim
    memory = decoder.token_embed.weight.new_zeros(batch, memory_length, dim)
    with _training_mode_off(decoder):
        return flop_summary(_DecoderStart(decoder), (memory,))


@torch.no_grad()
def decoder_step_flops(decoder: TokenDecoder, memory_length: int, position: int = 0, batch: int = 1) -> FlopSummary:
    """FLOPs of one cached decoder step: the token at ``position`` (0: START) fed with ``position``
    cached tokens, cross-attending to ``memory_length`` encoder positions; per token for ``batch`` 1."""
    if not 0 <= position < decoder.max_len:
        raise ValueError(f"position {position} is outside the decoder's {decoder.max_len} positions")
    weight = decoder.token_embed.weight
    dim, heads = weight.shape[1], decoder.num_heads
    layers = len(decoder.layers)
    self_kv = weight.new_zeros(layers, batch, heads, position + 1, dim // heads)
    cross_kv = weight.new_zeros(layers, batch, heads, memory_length, dim // heads)
    token = torch.zeros(batch, 1, dtype=torch.long, device=weight.device)
    with _training_mode_off(decoder):
        return flop_summary(
            _DecoderStep(decoder, position), (token, self_kv, self_kv.clone(), cross_kv, cross_kv.clone())
        )


def decoder_sequence_flops(decoder: TokenDecoder, memory_length: int, num_tokens: int) -> int:
    """FLOPs of the cached decoder steps that generate ``num_tokens`` tokens for one image (positions
    0 .. num_tokens - 1): a step's cost is linear in its position, so the sum is exact from two traces."""
    if num_tokens < 1:
        return 0
    first = decoder_step_flops(decoder, memory_length, 0).total
    last = decoder_step_flops(decoder, memory_length, num_tokens - 1).total
    return num_tokens * (first + last) // 2


# ---- the whole model -----------------------------------------------------------------------
@dataclass(frozen=True)
class ModelFlops:
    """FLOPs of one image (averaged over the images given): the parts, and the decoding that ran."""

    num_images: int
    memory_length: int  # encoder positions of the first image (they set the cross-attention cost)
    encoder: float  # image encoder, per image
    decoder_start: float  # cross-attention keys/values, per image
    step_first: float  # one decoder step at position 0
    step_last: float  # one decoder step at the last position of a full sequence
    step_mean: float  # mean per decoded token over a full sequence
    full_sequence_tokens: int  # tokens of a full sequence (5 * MAX_OBJECTS_TEST)
    full_sequence: float  # encoder + start + every step of a full sequence
    inference: float | None  # model.inference as traced (decoding as far as the model went), per image
    by_operator: dict[str, float]  # per image: of the traced inference (else: of the full sequence)
    uncounted: dict[str, int]  # operators without a handle (not ignored) seen in the traces


def _memory_length(model: Pix2Seq, inputs: dict) -> int:
    with _training_mode_off(model):
        images = model.preprocess_image([inputs])
        feature = model.backbone(images.tensor)[model.in_feature]
    return int(feature.shape[-2] * feature.shape[-1])


def _mean_by_operator(summaries: Sequence[FlopSummary]) -> Counter[str]:
    total: Counter[str] = Counter()
    for summary in summaries:
        total.update({op: value / len(summaries) for op, value in summary.by_operator.items()})
    return total


def _sequence_by_operator(
    encoder: Counter[str], start: FlopSummary, first: FlopSummary, last: FlopSummary, tokens: int
) -> Counter[str]:
    """Per operator: encoder + start + the ``tokens`` steps (each operator's step cost is linear in the
    position too, so the sum over the steps is ``tokens * (first + last) / 2``)."""
    total = Counter(encoder)
    total.update(start.by_operator)
    for op in set(first.by_operator) | set(last.by_operator):
        total[op] += tokens * (first.by_operator.get(op, 0) + last.by_operator.get(op, 0)) / 2
    return total


@torch.no_grad()
def model_flops(model: Pix2Seq, inputs: Sequence[dict], trace_inference: bool = True) -> ModelFlops:
    """FLOPs per image of ``model`` on ``inputs`` (model input dicts, one image each).

    The encoder and the full traced ``model.inference`` are averaged over the images; the decoder
    step costs use the first image's encoder length (all images of a size give the same).
    ``trace_inference`` False skips tracing the inference (the slowest part); ``by_operator`` is then
    that of the full sequence.
    """
    if not inputs:
        raise ValueError("model_flops needs at least one input")
    decoder = model.decoder
    enc = [encoder_flops(model, [x]) for x in inputs]
    memory_length = _memory_length(model, inputs[0])
    start = decoder_start_flops(decoder, memory_length)
    tokens = min(model.task.max_response_length(model.decoding), decoder.max_len)
    first = decoder_step_flops(decoder, memory_length, 0)
    last = decoder_step_flops(decoder, memory_length, tokens - 1)
    encoder_mean = sum(f.total for f in enc) / len(enc)
    steps_total = tokens * (first.total + last.total) / 2
    summaries = [*enc, start, first, last]
    inference, by_operator = None, _sequence_by_operator(_mean_by_operator(enc), start, first, last, tokens)
    if trace_inference:
        with _training_mode_off(model):
            traced = [flop_summary(_Inference(model), ([x],)) for x in inputs]
        inference = sum(t.total for t in traced) / len(traced)
        by_operator = _mean_by_operator(traced)
        summaries += traced
    uncounted: Counter[str] = Counter()
    for summary in summaries:
        uncounted.update(summary.uncounted)
    return ModelFlops(
        num_images=len(inputs),
        memory_length=memory_length,
        encoder=encoder_mean,
        decoder_start=start.total,
        step_first=first.total,
        step_last=last.total,
        step_mean=steps_total / tokens,
        full_sequence_tokens=tokens,
        full_sequence=encoder_mean + start.total + steps_total,
        inference=inference,
        by_operator=dict(by_operator),
        uncounted=dict(uncounted),
    )


class _Inference(nn.Module):
    """``model.inference(inputs, do_postprocess=False)`` as a module to trace."""

    def __init__(self, model: Pix2Seq):
        super().__init__()
        self.model = model

    def forward(self, batched_inputs: list[dict]) -> list[dict]:
        return self.model.inference(batched_inputs, do_postprocess=False)


def format_count(value: float, unit: str = "") -> str:
    """``1234567`` -> ``"1.23 M"`` (K, M, G, T)."""
    for scale, prefix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "K")):
        if abs(value) >= scale:
            return f"{value / scale:.3g} {prefix}{unit}"
    return f"{value:.3g} {unit}".rstrip()


def table(rows: Iterable[tuple[str, str]], header: tuple[str, str]) -> str:
    """A two-column text table."""
    rows = [header, *rows]
    width = max(len(name) for name, _ in rows)
    lines = [f"| {name:<{width}} | {value:>12} |" for name, value in rows]
    rule = f"|{'-' * (width + 2)}|{'-' * 14}|"
    return "\n".join([lines[0], rule, *lines[1:]])
