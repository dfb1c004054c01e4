"""Autoregressive decoding of a task's sequences: sampling strategies, beam search, stopping rules.

The decoder is asked for a task by the task's prompt (:meth:`~pix2seq_d2.tasks.Task.prompt`) and writes
its response one token at a time. The task's grammar (:meth:`~pix2seq_d2.tasks.Task.forbidden_tokens`,
periodic over the response positions) restricts every position to the tokens that may stand there, e.g.
for detection an object's first slot takes a coordinate (or EOS), the next three only coordinates, the
class slot only dataset classes; every strategy obeys it. The task also says how long a response may get
and what is recorded per position besides the tokens (:meth:`~pix2seq_d2.tasks.Task.response_recorder`).

Two ways of running the decoder give the same tokens (tested):

* cached (default): the prompt, then one position per step, self-attention keys/values in a
  preallocated cache, the encoder memory projected into cross-attention keys/values once per image;
* recompute: the whole prefix through the decoder at every step (the reference).

With ``stop_at_eos``, images that have ended leave the batch: their rows are dropped from
the cache, so later steps only compute the images still decoding.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from pix2seq_d2.tasks.base import Task
from pix2seq_d2.tasks.decoding_options import TOKEN_SELECTOR_REGISTRY, TOP_P_RULES, DecodingOptions

from .transformer import TokenDecoder

__all__ = ["DecodedSequences", "DecoderSteps", "decode", "beam_search", "filter_logits"]


@dataclass
class DecodedSequences:
    """Generated responses for a batch, without the prompt.

    Positions after an image's EOS hold PAD with log-probability 0. ``records`` holds what the task's
    response recorder kept (for detection: ``class_logprobs [B, K, R]``, the log-softmax of the class
    range at each class slot, and with ``box_from="argmax"`` ``coord_argmax [B, K, 4]``).
    """

    tokens: torch.Tensor  # int64 [B, T]
    token_logprobs: torch.Tensor  # float [B, T] log of the full-vocabulary softmax of each token
    records: dict[str, torch.Tensor] = field(default_factory=dict)  # the task's, batch first
    logits: torch.Tensor | None = None  # float [B, T, V] raw logits, when asked for

    @property
    def token_probs(self) -> torch.Tensor:
        return self.token_logprobs.exp()


# ---- token selection ------------------------------------------------------------------------
@TOKEN_SELECTOR_REGISTRY.register()
def greedy(logits: torch.Tensor, options: DecodingOptions, generator: torch.Generator | None) -> torch.Tensor:
    """The most likely allowed token."""
    return logits.argmax(-1)


def filter_logits(logits: torch.Tensor, top_k: int, top_p: float, top_p_rule: str = "at_least") -> torch.Tensor:
    """Set to -inf every token outside the ``top_k`` most likely (ties at the k-th kept) and
    outside the nucleus ``top_p``.

    ``top_p_rule`` "at_least": the smallest set of most likely tokens holding at least ``top_p``
    of the probability. "at_most" (the official release's ``top_logits``): the tokens whose
    inclusive cumulative probability, most likely first, is at most ``top_p``, and at least the
    most likely one; ties with the least likely kept token are kept. For probabilities
    .35/.30/.20/.15 and p = 0.4, "at_least" keeps two tokens and "at_most" one.
    """
    if top_k > 0 and top_k < logits.shape[-1]:
        kth = logits.topk(top_k, dim=-1).values[..., -1:]  # [N, 1]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        sorted_logits, order = logits.sort(dim=-1, descending=True)
        probs = sorted_logits.softmax(-1)
        if top_p_rule == "at_least":
            # Drop a token when the tokens more likely than it already hold top_p of the mass.
            drop_sorted = (probs.cumsum(-1) - probs) >= top_p
            drop = drop_sorted.scatter(-1, order, drop_sorted)
            logits = logits.masked_fill(drop, float("-inf"))
        elif top_p_rule == "at_most":
            within = probs.cumsum(-1) <= top_p  # a prefix of the sorted tokens
            within[..., 0] = True
            threshold = sorted_logits.gather(-1, within.sum(-1, keepdim=True) - 1)  # [N, 1]
            logits = logits.masked_fill(logits < threshold, float("-inf"))
        else:
            raise ValueError(f"unknown top_p_rule {top_p_rule!r}; known: {TOP_P_RULES}")
    return logits


@TOKEN_SELECTOR_REGISTRY.register()
def sample(logits: torch.Tensor, options: DecodingOptions, generator: torch.Generator | None) -> torch.Tensor:
    """Sample from the allowed tokens after temperature, top-k and top-p (nucleus) filtering."""
    if options.temperature == 0:
        return logits.argmax(-1)
    logits = filter_logits(logits.float() / options.temperature, options.top_k, options.top_p, options.top_p_rule)
    return torch.multinomial(logits.softmax(-1), 1, generator=generator)[:, 0]


# ---- running the decoder ------------------------------------------------------------------
class DecoderSteps:
    """Next-token logits for a batch of prefixes, cached or recomputing the prefix; rows can be
    dropped or reordered (``select``) as images finish or beams are re-ranked."""

    def __init__(
        self,
        decoder: TokenDecoder,
        memory: torch.Tensor,
        memory_pos: torch.Tensor | None,
        memory_padding: torch.Tensor | None,
        max_len: int,
        use_cache: bool,
    ):
        """``max_len``: positions the cache holds (the prompt and every response token fed back)."""
        self.decoder = decoder
        self.memory, self.memory_pos, self.memory_padding = memory, memory_pos, memory_padding
        self.cache = decoder.start(memory, memory_pos, memory_padding, max_len=max_len) if use_cache else None

    def next_logits(self, prefix: torch.Tensor) -> torch.Tensor:
        """``prefix [N, t]`` (prompt included) -> logits ``[N, V]`` for position t. The cached decoder is fed
        the positions it has not seen yet: the whole prompt at the first step, one token after that."""
        if self.cache is not None:
            return self.decoder.step(prefix[:, self.cache.length :], self.cache)[:, -1]
        return self.decoder(prefix, self.memory, self.memory_pos, self.memory_padding)[:, -1]

    def select(self, rows: torch.Tensor, memory_unchanged: bool = False) -> None:
        """Keep (and reorder to) ``rows`` of the batch. ``memory_unchanged``: every row keeps an
        image with the same encoder memory (beams of one image), so it is not gathered again."""
        if self.cache is not None:
            self.cache.select(rows, memory_unchanged)
        elif not memory_unchanged:
            self.memory = self.memory[rows]
            self.memory_pos = None if self.memory_pos is None else self.memory_pos[rows]
            self.memory_padding = None if self.memory_padding is None else self.memory_padding[rows]


@torch.no_grad()
def decode(
    decoder: TokenDecoder,
    task: Task,
    memory: torch.Tensor,
    memory_pos: torch.Tensor,
    memory_padding: torch.Tensor,
    options: DecodingOptions,
    use_cache: bool = True,
    return_logits: bool = False,
) -> DecodedSequences:
    """Decode ``task``'s responses for encoded images with the strategy in ``options``.

    Args:
        task: says the prompt, the grammar, the longest response and what to record per position.
        memory, memory_pos: encoder output and its position encoding, ``[B, S, D]``.
        memory_padding: bool ``[B, S]``, True on batch padding.
        use_cache: False recomputes the whole prefix at every step (reference path).
        return_logits: also return the raw logits of every generated position.
    """
    if options.strategy == "beam":
        return beam_search(decoder, task, memory, memory_pos, memory_padding, options, use_cache, return_logits)
    select = TOKEN_SELECTOR_REGISTRY.get(options.strategy)
    b, device = memory.shape[0], memory.device
    pad, eos = task.tokenizer.PAD, task.tokenizer.EOS
    prompt = task.prompt(b, device)  # [B, L]
    start = prompt.shape[1]
    max_len = task.max_response_length(options)
    forbidden = task.forbidden_tokens(options, device)  # [P, V], periodic over the response
    period = forbidden.shape[0]
    generator = None
    if options.seed >= 0:
        generator = torch.Generator(device=device).manual_seed(options.seed)

    tokens = torch.full((b, start + max_len), pad, dtype=torch.long, device=device)
    tokens[:, :start] = prompt
    token_logprobs = torch.zeros(b, max_len, device=device)
    recorder = task.response_recorder(b, options, device)
    all_logits = memory.new_zeros(b, max_len, decoder.vocab_size) if return_logits else None
    steps = DecoderSteps(decoder, memory, memory_pos, memory_padding, start + max_len - 1, use_cache)
    active = torch.arange(b, device=device)  # batch rows still decoding
    length = 0
    for t in range(max_len):
        logits = steps.next_logits(tokens[active, : start + t])  # [A, V]
        logprobs = logits.float().log_softmax(-1)
        choice = select(logits.masked_fill(forbidden[t % period], float("-inf")), options, generator)  # [A]
        tokens[active, start + t] = choice
        token_logprobs[active, t] = logprobs.gather(1, choice[:, None])[:, 0]
        recorder.record(active, t, logprobs)
        if all_logits is not None:
            all_logits[active, t] = logits
        length = t + 1
        if not options.stop_at_eos:
            continue
        ended = choice == eos
        if bool(ended.any()):
            if bool(ended.all()):
                break
            active = active[~ended]  # finished images leave the batch
            steps.select((~ended).nonzero()[:, 0])
    out_logits = all_logits[:, :length] if all_logits is not None else None
    return DecodedSequences(
        tokens[:, start : start + length], token_logprobs[:, :length], recorder.tensors(), out_logits
    )


@torch.no_grad()
def beam_search(
    decoder: TokenDecoder,
    task: Task,
    memory: torch.Tensor,
    memory_pos: torch.Tensor,
    memory_padding: torch.Tensor,
    options: DecodingOptions,
    use_cache: bool = True,
    return_logits: bool = False,
) -> DecodedSequences:
    """Grammar-constrained beam search over whole responses.

    Keeps ``beam_size`` live hypotheses per image. Each step ranks ``2 * beam_size`` extensions:
    an extension by EOS (allowed where the task's grammar allows it, for detection between objects)
    among the best ``beam_size`` finishes its hypothesis, and the best ``beam_size`` other extensions
    stay live. Finished hypotheses rank by ``logprob / max(items, 1) ** length_penalty``, an item being
    one period of the task's grammar (an object for detection); hypotheses that reach the longest
    response finish too. Without ``stop_at_eos`` every hypothesis has the longest response and the
    ranking is by total log-probability.
    """
    b, device = memory.shape[0], memory.device
    pad, eos = task.tokenizer.PAD, task.tokenizer.EOS
    w, v = options.beam_size, decoder.vocab_size
    max_len = task.max_response_length(options)
    forbidden = task.forbidden_tokens(options, device)  # [P, V]
    period = forbidden.shape[0]
    max_items = -(-max_len // period)
    penalty = options.length_penalty

    def expand(x: torch.Tensor) -> torch.Tensor:  # [B, ...] -> [B*W, ...], beams of an image adjacent
        return x.repeat_interleave(w, dim=0)

    def expand_optional(x: torch.Tensor | None) -> torch.Tensor | None:
        return None if x is None else expand(x)

    prompt = expand(task.prompt(b, device))  # [B*W, L]
    start = prompt.shape[1]
    steps = DecoderSteps(
        decoder, expand(memory), expand_optional(memory_pos), expand_optional(memory_padding),
        start + max_len - 1, use_cache,
    )  # fmt: skip
    tokens = torch.full((b * w, start + max_len), pad, dtype=torch.long, device=device)
    tokens[:, :start] = prompt
    token_logprobs = torch.zeros(b * w, max_len, device=device)
    recorder = task.response_recorder(b * w, options, device)
    all_logits = memory.new_zeros(b * w, max_len, v) if return_logits else None
    # Only the first beam of each image is live at the start, so that the first step does not
    # pick W copies of the same token.
    beam_scores = torch.full((b, w), float("-inf"), device=device)
    beam_scores[:, 0] = 0.0
    best = DecodedSequences(
        tokens=torch.full((b, max_len), pad, dtype=torch.long, device=device),
        token_logprobs=torch.zeros(b, max_len, device=device),
        records={name: torch.zeros_like(x[:b]) for name, x in recorder.tensors().items()},
        logits=memory.new_zeros(b, max_len, v) if return_logits else None,
    )
    best_scores = torch.full((b,), float("-inf"), device=device)

    def keep_if_better(scores: torch.Tensor, rows: torch.Tensor, length: int, eos_logprob=None) -> None:
        """Per image, the finished hypothesis at flat row ``rows[i]`` with ``scores[i]`` replaces the
        best so far if it scores higher; ``eos_logprob`` given: it ends with EOS at ``length - 1``."""
        better = (scores > best_scores).nonzero()[:, 0]
        if better.numel() == 0:
            return
        src = rows[better]
        best_scores[better] = scores[better]
        n = length - 1 if eos_logprob is not None else length
        best.tokens[better] = pad
        best.tokens[better, :n] = tokens[src, start : start + n]
        best.token_logprobs[better] = 0.0
        best.token_logprobs[better, :n] = token_logprobs[src, :n]
        if eos_logprob is not None:
            best.tokens[better, n] = eos
            best.token_logprobs[better, n] = eos_logprob[better]
        for name, recorded in recorder.tensors().items():
            best.records[name][better] = recorded[src]
        if best.logits is not None:
            best.logits[better] = 0.0
            best.logits[better, :length] = all_logits[src, :length]

    for t in range(max_len):
        logits = steps.next_logits(tokens[:, : start + t])  # [B*W, V]
        logprobs = logits.float().log_softmax(-1)
        recorder.record(slice(None), t, logprobs)
        if all_logits is not None:
            all_logits[:, t] = logits
        masked = logprobs.masked_fill(forbidden[t % period], float("-inf"))
        candidates = (beam_scores.reshape(-1, 1) + masked).reshape(b, w * v)
        top_scores, top_index = candidates.topk(min(2 * w, w * v), dim=-1)  # [B, 2W]
        parent = top_index // v + torch.arange(b, device=device)[:, None] * w  # flat rows
        choice = top_index % v
        is_eos = (choice == eos) & torch.isfinite(top_scores)
        finishing = is_eos.clone()
        finishing[:, w:] = False  # an EOS extension finishes only if it ranks among the best W
        if bool(finishing.any()):
            items = max(t // period, 1)
            ranked = (top_scores / items**penalty).masked_fill(~finishing, float("-inf"))
            score, pick = ranked.max(-1)
            src = parent.gather(1, pick[:, None])[:, 0]
            keep_if_better(score, src, t + 1, eos_logprob=logprobs[src, eos])
        beam_scores, pick = top_scores.masked_fill(is_eos, float("-inf")).topk(w, dim=-1)  # [B, W]
        rows = parent.gather(1, pick).reshape(-1)
        chosen = choice.gather(1, pick).reshape(-1)
        tokens = tokens[rows]
        tokens[:, start + t] = chosen
        token_logprobs = token_logprobs[rows]
        token_logprobs[:, t] = logprobs[rows, chosen]
        recorder.select(rows)
        if all_logits is not None:
            all_logits = all_logits[rows]
        steps.select(rows, memory_unchanged=True)  # beams never move between images
        # A live hypothesis can at best keep its log-probability and spread it over the most items.
        bound = beam_scores.max(-1).values / max_items**penalty
        if bool(torch.isinf(beam_scores).all()) or bool((bound <= best_scores).all()):
            break
    else:  # every live hypothesis now is as long as a response gets: they finish here
        score, pick = (beam_scores / max_items**penalty).max(-1)
        keep_if_better(score, torch.arange(b, device=device) * w + pick, max_len)
    used = int((best.tokens != pad).sum(-1).max()) if b else 0
    best.tokens, best.token_logprobs = best.tokens[:, :used], best.token_logprobs[:, :used]
    if best.logits is not None:
        best.logits = best.logits[:, :used]
    return best
