"""Autoregressive decoding of object sequences: sampling strategies, beam search, stopping rules.

The decoder emits five tokens per object. A grammar (owned by the tokenizer) restricts every
position to the tokens that may stand there: the first slot of an object takes a coordinate (or
EOS when decoding stops at EOS), the next three only coordinates, the class slot only dataset
classes (and the noise class when allowed). Every strategy obeys it. Without the grammar
(``grammar=False``) the model may emit whatever its vocabulary layout lets it, as the official
release and Pretrained-Pix2Seq decode.

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

from pix2seq_d2.tasks.tokenizer import Pix2SeqTokenizer

from .transformer import TokenDecoder

TOP_P_RULES = ("at_least", "at_most")
BOX_SOURCES = ("generated", "argmax")

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
    grammar: bool = True  # False: no slot constraints (decode as the peers do)
    top_p_rule: str = "at_least"  # "at_least" (smallest set with >= top_p) or "at_most" (official)
    box_from: str = "generated"  # boxes from the "generated" tokens or each slot's "argmax" coordinate

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
            grammar=d.GRAMMAR,
            top_p_rule=d.TOP_P_RULE,
            box_from=d.BOX_FROM,
        )

    def __post_init__(self):
        if self.strategy not in ("beam", *TOKEN_SELECTOR_REGISTRY._obj_map):
            known = ["beam", *TOKEN_SELECTOR_REGISTRY._obj_map]
            raise ValueError(f"unknown decoding strategy {self.strategy!r}; known: {known}")
        if self.top_p_rule not in TOP_P_RULES or self.box_from not in BOX_SOURCES:
            raise ValueError(f"top_p_rule must be one of {TOP_P_RULES} and box_from one of {BOX_SOURCES}: {self}")
        # "at_most" keeps at least the most likely token, so top_p = 0 is meaningful there (greedy).
        p_ok = 0 <= self.top_p <= 1 if self.top_p_rule == "at_most" else 0 < self.top_p <= 1
        if self.temperature < 0 or not p_ok or self.top_k < 0 or self.beam_size < 1:
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
    # float [B, K, R] log-softmax (full vocabulary) of the tokenizer's class range at each class slot
    class_logprobs: torch.Tensor
    # int64 [B, K, 4] the most likely coordinate token of each coord slot (box_from="argmax" only)
    coord_argmax: torch.Tensor | None = None
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
    """bool ``[5, V]``: which tokens may be generated at each slot of an object (the tokenizer's grammar)."""
    return tokenizer.grammar(device, allow_eos=allow_eos, allow_noise_class=allow_noise_class)


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
            self.memory = self.memory[rows]
            self.memory_pos = None if self.memory_pos is None else self.memory_pos[rows]
            self.memory_padding = None if self.memory_padding is None else self.memory_padding[rows]


def _forbidden_tokens(tokenizer: Pix2SeqTokenizer, options: DecodingOptions, device) -> torch.Tensor:
    """bool ``[5, V]``: the tokens forbidden at each slot, for these options."""
    if not options.grammar:
        return ~tokenizer.generatable(device).expand(tokenizer.tokens_per_object, -1)
    allowed = tokenizer.grammar(device, allow_eos=options.stop_at_eos, allow_noise_class=options.allow_noise_class)
    return ~allowed


class SlotRecorder:
    """What decoding keeps per object slot besides the tokens: the class range's log-probabilities
    at class slots and, for ``box_from="argmax"`` only, the most likely coordinate token at coordinate
    slots (None otherwise: no extra work per step)."""

    def __init__(self, tokenizer: Pix2SeqTokenizer, rows: int, max_objects: int, device, coord_argmax: bool):
        self.tokenizer = tokenizer
        lo, hi = tokenizer.class_token_range()
        self.class_logprobs = torch.zeros(rows, max_objects, hi - lo, device=device)
        self.coord_argmax = None
        if coord_argmax:
            self.coord_argmax = torch.zeros(rows, max_objects, tokenizer.class_slot, dtype=torch.long, device=device)

    def record(self, rows: torch.Tensor | slice, t: int, logprobs: torch.Tensor) -> None:
        """``logprobs [N, V]`` of step ``t`` for batch ``rows``."""
        obj, slot = divmod(t, self.tokenizer.tokens_per_object)
        if slot == self.tokenizer.class_slot:
            lo, hi = self.tokenizer.class_token_range()
            self.class_logprobs[rows, obj] = logprobs[:, lo:hi]
        elif self.coord_argmax is not None:
            lo, hi = self.tokenizer.coord_token_range()
            self.coord_argmax[rows, obj, slot] = logprobs[:, lo:hi].argmax(-1) + lo

    def select(self, rows: torch.Tensor) -> None:
        self.class_logprobs = self.class_logprobs[rows]
        if self.coord_argmax is not None:
            self.coord_argmax = self.coord_argmax[rows]


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
    tpo = tokenizer.tokens_per_object
    max_len = options.max_objects * tpo
    forbidden = _forbidden_tokens(tokenizer, options, device)
    generator = None
    if options.seed >= 0:
        generator = torch.Generator(device=device).manual_seed(options.seed)

    tokens = torch.full((b, max_len + 1), tokenizer.PAD, dtype=torch.long, device=device)
    tokens[:, 0] = tokenizer.START
    token_logprobs = torch.zeros(b, max_len, device=device)
    slots = SlotRecorder(tokenizer, b, options.max_objects, device, options.box_from == "argmax")
    all_logits = memory.new_zeros(b, max_len, tokenizer.vocab_size) if return_logits else None
    steps = DecoderSteps(decoder, memory, memory_pos, memory_padding, max_len, use_cache)
    active = torch.arange(b, device=device)  # batch rows still decoding
    length = 0
    for t in range(max_len):
        logits = steps.next_logits(tokens[active, : t + 1])  # [A, V]
        logprobs = logits.float().log_softmax(-1)
        choice = select(logits.masked_fill(forbidden[t % tpo], float("-inf")), options, generator)  # [A]
        tokens[active, t + 1] = choice
        token_logprobs[active, t] = logprobs.gather(1, choice[:, None])[:, 0]
        slots.record(active, t, logprobs)
        if all_logits is not None:
            all_logits[active, t] = logits
        length = t + 1
        if not options.stop_at_eos:
            continue
        ended = choice == tokenizer.EOS
        if bool(ended.any()):
            if bool(ended.all()):
                break
            active = active[~ended]  # finished images leave the batch
            steps.select((~ended).nonzero()[:, 0])
    out_logits = all_logits[:, :length] if all_logits is not None else None
    return DecodedSequences(
        tokens[:, 1 : length + 1], token_logprobs[:, :length], slots.class_logprobs, slots.coord_argmax, out_logits
    )


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
    tpo = tokenizer.tokens_per_object
    max_len = options.max_objects * tpo
    forbidden = _forbidden_tokens(tokenizer, options, device)
    penalty = options.length_penalty

    def expand(x: torch.Tensor) -> torch.Tensor:  # [B, ...] -> [B*W, ...], beams of an image adjacent
        return x.repeat_interleave(w, dim=0)

    def expand_optional(x: torch.Tensor | None) -> torch.Tensor | None:
        return None if x is None else expand(x)

    steps = DecoderSteps(
        decoder, expand(memory), expand_optional(memory_pos), expand_optional(memory_padding), max_len, use_cache
    )
    tokens = torch.full((b * w, max_len + 1), tokenizer.PAD, dtype=torch.long, device=device)
    tokens[:, 0] = tokenizer.START
    token_logprobs = torch.zeros(b * w, max_len, device=device)
    slots = SlotRecorder(tokenizer, b * w, options.max_objects, device, options.box_from == "argmax")
    all_logits = memory.new_zeros(b * w, max_len, v) if return_logits else None
    # Only the first beam of each image is live at the start, so that the first step does not
    # pick W copies of the same token.
    beam_scores = torch.full((b, w), float("-inf"), device=device)
    beam_scores[:, 0] = 0.0
    best = DecodedSequences(
        tokens=torch.full((b, max_len), tokenizer.PAD, dtype=torch.long, device=device),
        token_logprobs=torch.zeros(b, max_len, device=device),
        class_logprobs=torch.zeros_like(slots.class_logprobs[:b]),
        coord_argmax=None if slots.coord_argmax is None else torch.zeros_like(slots.coord_argmax[:b]),
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
        best.class_logprobs[better] = slots.class_logprobs[src]
        if best.coord_argmax is not None:
            best.coord_argmax[better] = slots.coord_argmax[src]
        if best.logits is not None:
            best.logits[better] = 0.0
            best.logits[better, :length] = all_logits[src, :length]

    for t in range(max_len):
        logits = steps.next_logits(tokens[:, : t + 1])  # [B*W, V]
        logprobs = logits.float().log_softmax(-1)
        slots.record(slice(None), t, logprobs)
        if all_logits is not None:
            all_logits[:, t] = logits
        masked = logprobs.masked_fill(forbidden[t % tpo], float("-inf"))
        candidates = (beam_scores.reshape(-1, 1) + masked).reshape(b, w * v)
        top_scores, top_index = candidates.topk(min(2 * w, w * v), dim=-1)  # [B, 2W]
        parent = top_index // v + torch.arange(b, device=device)[:, None] * w  # flat rows
        choice = top_index % v
        is_eos = (choice == tokenizer.EOS) & torch.isfinite(top_scores)
        finishing = is_eos.clone()
        finishing[:, w:] = False  # an EOS extension finishes only if it ranks among the best W
        if bool(finishing.any()):
            num_objects = max(t // tpo, 1)
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
        slots.select(rows)
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
