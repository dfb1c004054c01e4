"""Autoregressive decoding of object sequences: sampling strategies, beam search, stopping rules.

The decoder emits five tokens per object. A grammar restricts every position to the tokens
that may stand there: the first slot of an object takes a coordinate (or EOS when decoding
stops at EOS), the next three only coordinates, the class slot only dataset classes (and the
noise class when allowed). Every strategy obeys it.

Two ways of running the decoder give the same tokens (tested):

* cached (default): one position per step, self-attention keys/values in a preallocated
  cache, the encoder memory projected into cross-attention keys/values once per image;
* recompute: the whole prefix through the decoder at every step (the reference).

With ``stop_at_eos``, images that have ended leave the batch: their rows are dropped from
the cache, so later steps only compute the images still decoding.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from detectron2.config import CfgNode
from detectron2.utils.registry import Registry

from .tokenizer import CLASS_SLOT, TOKENS_PER_OBJECT, Pix2SeqTokenizer
from .transformer import TokenDecoder

TOKEN_SELECTOR_REGISTRY = Registry("PIX2SEQ_TOKEN_SELECTOR")
TOKEN_SELECTOR_REGISTRY.__doc__ = """Rules that pick the next token from grammar-masked logits.
Each is called as ``select(logits [N, V], options, generator) -> tokens [N]``."""


@dataclass(frozen=True)
class DecodingOptions:
    """How to decode; built from ``MODEL.PIX2SEQ.DECODE`` by :meth:`from_config`."""

    strategy: str = "greedy"  # "greedy", "sample" or "beam"
    temperature: float = 1.0  # sample: logits / temperature (0 = greedy)
    top_k: int = 0  # sample: keep the k most likely allowed tokens (0 = all)
    top_p: float = 0.4  # sample: keep the smallest set with this much probability (nucleus; paper: 0.4)
    beam_size: int = 4  # beam: hypotheses kept per image
    length_penalty: float = 1.0  # beam: finished hypotheses rank by logprob / num_objects**penalty
    max_objects: int = 100  # objects decoded at most per image
    stop_at_eos: bool = True  # False: ignore EOS and decode exactly max_objects objects
    allow_noise_class: bool = False  # let class slots take the noise (fake) class token
    seed: int = -1  # sample: seed of the sampling generator (< 0: torch's global RNG)

    @classmethod
    def from_config(cls, cfg: CfgNode) -> DecodingOptions:
        d = cfg.MODEL.PIX2SEQ.DECODE
        return cls(
            strategy=d.STRATEGY,
            temperature=d.TEMPERATURE,
            top_k=d.TOP_K,
            top_p=d.TOP_P,
            beam_size=d.BEAM_SIZE,
            length_penalty=d.LENGTH_PENALTY,
            max_objects=cfg.MODEL.PIX2SEQ.MAX_OBJECTS_TEST,
            stop_at_eos=d.STOP_AT_EOS,
            allow_noise_class=d.ALLOW_NOISE_CLASS,
            seed=d.SEED,
        )

    def __post_init__(self):
        if self.strategy not in ("beam", *TOKEN_SELECTOR_REGISTRY._obj_map):
            known = ["beam", *TOKEN_SELECTOR_REGISTRY._obj_map]
            raise ValueError(f"unknown decoding strategy {self.strategy!r}; known: {known}")
        if self.temperature < 0 or not 0 < self.top_p <= 1 or self.top_k < 0 or self.beam_size < 1:
            raise ValueError(f"invalid decoding options: {self}")
        if self.max_objects < 1:
            raise ValueError(f"max_objects must be >= 1, got {self.max_objects}")


@dataclass
class DecodedSequences:
    """Generated tokens for a batch, without the START prompt.

    Positions after an image's EOS hold PAD with log-probability 0.
    """

    tokens: torch.Tensor  # int64 [B, T]
    token_logprobs: torch.Tensor  # float [B, T] log of the full-vocabulary softmax of each token
    class_logprobs: torch.Tensor  # float [B, T // 5, C] log-softmax (full vocabulary) of each class slot
    logits: torch.Tensor | None = None  # float [B, T, V] raw logits, when asked for

    @property
    def token_probs(self) -> torch.Tensor:
        return self.token_logprobs.exp()


# ---- grammar ------------------------------------------------------------------------------
def grammar_masks(
    tokenizer: Pix2SeqTokenizer,
    device: torch.device | str = "cpu",
    allow_eos: bool = True,
    allow_noise_class: bool = False,
) -> torch.Tensor:
    """bool ``[5, V]``: which tokens may be generated at each slot of an object."""
    masks = torch.zeros(TOKENS_PER_OBJECT, tokenizer.vocab_size, dtype=torch.bool, device=device)
    coord_lo, coord_hi = tokenizer.coord_token_range()
    class_lo, class_hi = tokenizer.class_token_range()
    masks[:CLASS_SLOT, coord_lo:coord_hi] = True
    masks[0, tokenizer.EOS] = allow_eos
    masks[CLASS_SLOT, class_lo:class_hi] = True
    masks[CLASS_SLOT, tokenizer.NOISE] = allow_noise_class
    return masks


# ---- token selection ------------------------------------------------------------------------
@TOKEN_SELECTOR_REGISTRY.register()
def greedy(logits: torch.Tensor, options: DecodingOptions, generator: torch.Generator | None) -> torch.Tensor:
    """The most likely allowed token."""
    return logits.argmax(-1)


def filter_logits(logits: torch.Tensor, top_k: int, top_p: float) -> torch.Tensor:
    """Set to -inf every token outside the ``top_k`` most likely and outside the nucleus ``top_p``."""
    if top_k > 0 and top_k < logits.shape[-1]:
        kth = logits.topk(top_k, dim=-1).values[..., -1:]  # [N, 1]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        sorted_logits, order = logits.sort(dim=-1, descending=True)
        probs = sorted_logits.softmax(-1)
        # Drop a token when the tokens more likely than it already hold top_p of the mass.
        drop_sorted = (probs.cumsum(-1) - probs) >= top_p
        drop = drop_sorted.scatter(-1, order, drop_sorted)
        logits = logits.masked_fill(drop, float("-inf"))
    return logits


@TOKEN_SELECTOR_REGISTRY.register()
def sample(logits: torch.Tensor, options: DecodingOptions, generator: torch.Generator | None) -> torch.Tensor:
    """Sample from the allowed tokens after temperature, top-k and top-p (nucleus) filtering."""
    if options.temperature == 0:
        return logits.argmax(-1)
    logits = filter_logits(logits.float() / options.temperature, options.top_k, options.top_p)
    return torch.multinomial(logits.softmax(-1), 1, generator=generator)[:, 0]


# ---- running the decoder ------------------------------------------------------------------
class DecoderSteps:
    """Next-token logits for a batch of prefixes, cached or recomputing the prefix; rows can be
    dropped or reordered (``select``) as images finish or beams are re-ranked."""

    def __init__(
        self,
        decoder: TokenDecoder,
        memory: torch.Tensor,
        memory_pos: torch.Tensor,
        memory_padding: torch.Tensor,
        max_len: int,
        use_cache: bool,
    ):
        self.decoder = decoder
        self.memory, self.memory_pos, self.memory_padding = memory, memory_pos, memory_padding
        self.cache = decoder.start(memory, memory_pos, memory_padding, max_len=max_len) if use_cache else None

    def next_logits(self, prefix: torch.Tensor) -> torch.Tensor:
        """``prefix [N, t+1]`` (START included) -> logits ``[N, V]`` for position t+1."""
        if self.cache is not None:
            return self.decoder.step(prefix[:, -1:], self.cache)[:, -1]
        return self.decoder(prefix, self.memory, self.memory_pos, self.memory_padding)[:, -1]

    def select(self, rows: torch.Tensor, memory_unchanged: bool = False) -> None:
        """Keep (and reorder to) ``rows`` of the batch. ``memory_unchanged``: every row keeps an
        image with the same encoder memory (beams of one image), so it is not gathered again."""
        if self.cache is not None:
            self.cache.select(rows, memory_unchanged)
        elif not memory_unchanged:
            self.memory, self.memory_pos = self.memory[rows], self.memory_pos[rows]
            self.memory_padding = self.memory_padding[rows]


def _forbidden_tokens(tokenizer: Pix2SeqTokenizer, options: DecodingOptions, device) -> torch.Tensor:
    """bool ``[5, V]``: the tokens the grammar forbids at each slot, for these options."""
    return ~grammar_masks(tokenizer, device, allow_eos=options.stop_at_eos, allow_noise_class=options.allow_noise_class)


def _class_logprobs(logprobs: torch.Tensor, tokenizer: Pix2SeqTokenizer) -> torch.Tensor:
    lo, hi = tokenizer.class_token_range()
    return logprobs[..., lo:hi]


@torch.no_grad()
def decode(
    decoder: TokenDecoder,
    tokenizer: Pix2SeqTokenizer,
    memory: torch.Tensor,
    memory_pos: torch.Tensor,
    memory_padding: torch.Tensor,
    options: DecodingOptions,
    use_cache: bool = True,
    return_logits: bool = False,
) -> DecodedSequences:
    """Decode object sequences for encoded images with the strategy in ``options``.

    Args:
        memory, memory_pos: encoder output and its position encoding, ``[B, S, D]``.
        memory_padding: bool ``[B, S]``, True on batch padding.
        use_cache: False recomputes the whole prefix at every step (reference path).
        return_logits: also return the raw logits of every generated position.
    """
    if options.strategy == "beam":
        return beam_search(decoder, tokenizer, memory, memory_pos, memory_padding, options, use_cache, return_logits)
    select = TOKEN_SELECTOR_REGISTRY.get(options.strategy)
    b, device = memory.shape[0], memory.device
    max_len = options.max_objects * TOKENS_PER_OBJECT
    forbidden = _forbidden_tokens(tokenizer, options, device)
    generator = None
    if options.seed >= 0:
        generator = torch.Generator(device=device).manual_seed(options.seed)

    tokens = torch.full((b, max_len + 1), tokenizer.PAD, dtype=torch.long, device=device)
    tokens[:, 0] = tokenizer.START
    token_logprobs = torch.zeros(b, max_len, device=device)
    class_logprobs = torch.zeros(b, options.max_objects, tokenizer.num_classes, device=device)
    all_logits = memory.new_zeros(b, max_len, tokenizer.vocab_size) if return_logits else None
    steps = DecoderSteps(decoder, memory, memory_pos, memory_padding, max_len, use_cache)
    active = torch.arange(b, device=device)  # batch rows still decoding
    length = 0
    for t in range(max_len):
        logits = steps.next_logits(tokens[active, : t + 1])  # [A, V]
        logprobs = logits.float().log_softmax(-1)
        slot = t % TOKENS_PER_OBJECT
        choice = select(logits.masked_fill(forbidden[slot], float("-inf")), options, generator)  # [A]
        tokens[active, t + 1] = choice
        token_logprobs[active, t] = logprobs.gather(1, choice[:, None])[:, 0]
        if slot == CLASS_SLOT:
            class_logprobs[active, t // TOKENS_PER_OBJECT] = _class_logprobs(logprobs, tokenizer)
        if all_logits is not None:
            all_logits[active, t] = logits
        length = t + 1
        ended = choice == tokenizer.EOS
        if bool(ended.any()):
            if bool(ended.all()):
                break
            active = active[~ended]  # finished images leave the batch
            steps.select((~ended).nonzero()[:, 0])
    out_logits = all_logits[:, :length] if all_logits is not None else None
    return DecodedSequences(tokens[:, 1 : length + 1], token_logprobs[:, :length], class_logprobs, out_logits)


@torch.no_grad()
def beam_search(
    decoder: TokenDecoder,
    tokenizer: Pix2SeqTokenizer,
    memory: torch.Tensor,
    memory_pos: torch.Tensor,
    memory_padding: torch.Tensor,
    options: DecodingOptions,
    use_cache: bool = True,
    return_logits: bool = False,
) -> DecodedSequences:
    """Grammar-constrained beam search over whole object sequences.

    Keeps ``beam_size`` live hypotheses per image. Each step ranks ``2 * beam_size`` extensions:
    an extension by EOS (allowed only between objects) among the best ``beam_size`` finishes
    its hypothesis, and the best ``beam_size`` other extensions stay live. Finished hypotheses
    rank by ``logprob / max(num_objects, 1) ** length_penalty``; hypotheses that reach
    ``max_objects`` objects finish too. Without ``stop_at_eos`` every hypothesis has
    ``max_objects`` objects and the ranking is by total log-probability.
    """
    b, device = memory.shape[0], memory.device
    w, v = options.beam_size, tokenizer.vocab_size
    max_len = options.max_objects * TOKENS_PER_OBJECT
    forbidden = _forbidden_tokens(tokenizer, options, device)
    penalty = options.length_penalty

    def expand(x: torch.Tensor) -> torch.Tensor:  # [B, ...] -> [B*W, ...], beams of an image adjacent
        return x.repeat_interleave(w, dim=0)

    steps = DecoderSteps(decoder, expand(memory), expand(memory_pos), expand(memory_padding), max_len, use_cache)
    tokens = torch.full((b * w, max_len + 1), tokenizer.PAD, dtype=torch.long, device=device)
    tokens[:, 0] = tokenizer.START
    token_logprobs = torch.zeros(b * w, max_len, device=device)
    class_logprobs = torch.zeros(b * w, options.max_objects, tokenizer.num_classes, device=device)
    all_logits = memory.new_zeros(b * w, max_len, v) if return_logits else None
    # Only the first beam of each image is live at the start, so that the first step does not
    # pick W copies of the same token.
    beam_scores = torch.full((b, w), float("-inf"), device=device)
    beam_scores[:, 0] = 0.0
    best = DecodedSequences(
        tokens=torch.full((b, max_len), tokenizer.PAD, dtype=torch.long, device=device),
        token_logprobs=torch.zeros(b, max_len, device=device),
        class_logprobs=torch.zeros(b, options.max_objects, tokenizer.num_classes, device=device),
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
        best.tokens[better] = tokenizer.PAD
        best.tokens[better, :n] = tokens[src, 1 : n + 1]
        best.token_logprobs[better] = 0.0
        best.token_logprobs[better, :n] = token_logprobs[src, :n]
        if eos_logprob is not None:
            best.tokens[better, n] = tokenizer.EOS
            best.token_logprobs[better, n] = eos_logprob[better]
        best.class_logprobs[better] = class_logprobs[src]
        if best.logits is not None:
            best.logits[better] = 0.0
            best.logits[better, :length] = all_logits[src, :length]

    for t in range(max_len):
        logits = steps.next_logits(tokens[:, : t + 1])  # [B*W, V]
        logprobs = logits.float().log_softmax(-1)
        slot = t % TOKENS_PER_OBJECT
        if slot == CLASS_SLOT:
            class_logprobs[:, t // TOKENS_PER_OBJECT] = _class_logprobs(logprobs, tokenizer)
        if all_logits is not None:
            all_logits[:, t] = logits
        masked = logprobs.masked_fill(forbidden[slot], float("-inf"))
        candidates = (beam_scores.reshape(-1, 1) + masked).reshape(b, w * v)
        top_scores, top_index = candidates.topk(min(2 * w, w * v), dim=-1)  # [B, 2W]
        parent = top_index // v + torch.arange(b, device=device)[:, None] * w  # flat rows
        choice = top_index % v
        is_eos = (choice == tokenizer.EOS) & torch.isfinite(top_scores)
        finishing = is_eos.clone()
        finishing[:, w:] = False  # an EOS extension finishes only if it ranks among the best W
        if bool(finishing.any()):
            num_objects = max(t // TOKENS_PER_OBJECT, 1)
            ranked = (top_scores / num_objects**penalty).masked_fill(~finishing, float("-inf"))
            score, pick = ranked.max(-1)
            src = parent.gather(1, pick[:, None])[:, 0]
            keep_if_better(score, src, t + 1, eos_logprob=logprobs[src, tokenizer.EOS])
        beam_scores, pick = top_scores.masked_fill(is_eos, float("-inf")).topk(w, dim=-1)  # [B, W]
        rows = parent.gather(1, pick).reshape(-1)
        chosen = choice.gather(1, pick).reshape(-1)
        tokens = tokens[rows]
        tokens[:, t + 1] = chosen
        token_logprobs = token_logprobs[rows]
        token_logprobs[:, t] = logprobs[rows, chosen]
        class_logprobs = class_logprobs[rows]
        if all_logits is not None:
            all_logits = all_logits[rows]
        steps.select(rows, memory_unchanged=True)  # beams never move between images
        # A live hypothesis can at best keep its log-probability and spread it over max_objects.
        bound = beam_scores.max(-1).values / options.max_objects**penalty
        if bool(torch.isinf(beam_scores).all()) or bool((bound <= best_scores).all()):
            break
    else:  # every live hypothesis now holds max_objects objects: they finish here
        score, pick = (beam_scores / options.max_objects**penalty).max(-1)
        keep_if_better(score, torch.arange(b, device=device) * w + pick, max_len)
    used = int((best.tokens != tokenizer.PAD).sum(-1).max()) if b else 0
    best.tokens, best.token_logprobs = best.tokens[:, :used], best.token_logprobs[:, :used]
    if best.logits is not None:
        best.logits = best.logits[:, :used]
    return best
