"""Autoregressive decoding of object sequences from encoded images.

The decoder emits five tokens per object. A grammar restricts every position to the
tokens that may stand there: the first slot of an object takes a coordinate or EOS, the
next three only coordinates, the class slot only dataset classes. Each image stops at
its own EOS (its later positions are PAD) or after ``max_objects`` objects.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .tokenizer import CLASS_SLOT, TOKENS_PER_OBJECT, Pix2SeqTokenizer
from .transformer import TokenDecoder


@dataclass
class DecodedSequences:
    """Generated tokens for a batch, without the START prompt."""

    tokens: torch.Tensor  # int64 [B, T]
    token_probs: torch.Tensor  # float [B, T] probability (full-vocabulary softmax) of each token
    logits: torch.Tensor | None = None  # float [B, T, V] raw logits, when asked for


def grammar_masks(tokenizer: Pix2SeqTokenizer, device: torch.device | str = "cpu") -> torch.Tensor:
    """bool ``[5, V]``: which tokens may be generated at each slot of an object."""
    masks = torch.zeros(TOKENS_PER_OBJECT, tokenizer.vocab_size, dtype=torch.bool, device=device)
    coord_lo, coord_hi = tokenizer.coord_token_range()
    class_lo, class_hi = tokenizer.class_token_range()
    masks[:CLASS_SLOT, coord_lo:coord_hi] = True
    masks[0, tokenizer.EOS] = True
    masks[CLASS_SLOT, class_lo:class_hi] = True
    return masks


@torch.no_grad()
def greedy_decode(
    decoder: TokenDecoder,
    tokenizer: Pix2SeqTokenizer,
    memory: torch.Tensor,
    memory_pos: torch.Tensor,
    memory_padding: torch.Tensor,
    max_objects: int,
    use_cache: bool = True,
    return_logits: bool = False,
) -> DecodedSequences:
    """Greedy, grammar-constrained decoding of up to ``max_objects`` objects per image.

    Args:
        memory, memory_pos: encoder output and its position encoding, ``[B, S, D]``.
        memory_padding: bool ``[B, S]``, True on batch padding.
        use_cache: use the key/value cache (one position per step); False recomputes the
            whole prefix at every step (the reference the cache is tested against).
    """
    b = memory.shape[0]
    device = memory.device
    max_len = max_objects * TOKENS_PER_OBJECT
    allowed = grammar_masks(tokenizer, device)
    tokens = torch.full((b, max_len + 1), tokenizer.PAD, dtype=torch.long, device=device)
    tokens[:, 0] = tokenizer.START
    token_probs = torch.zeros(b, max_len, device=device)
    all_logits = memory.new_zeros(b, max_len, tokenizer.vocab_size) if return_logits else None
    finished = torch.zeros(b, dtype=torch.bool, device=device)
    cache = decoder.start(memory, memory_pos, memory_padding, max_len=max_len) if use_cache else None

    steps = 0
    for t in range(max_len):
        if use_cache:
            logits = decoder.step(tokens[:, t : t + 1], cache)[:, -1]  # [B, V]
        else:
            logits = decoder(tokens[:, : t + 1], memory, memory_pos, memory_padding)[:, -1]
        probs = logits.float().softmax(-1)
        choice = logits.masked_fill(~allowed[t % TOKENS_PER_OBJECT], float("-inf")).argmax(-1)  # [B]
        choice = torch.where(finished, torch.full_like(choice, tokenizer.PAD), choice)
        tokens[:, t + 1] = choice
        token_probs[:, t] = probs.gather(1, choice[:, None])[:, 0] * (~finished)
        if all_logits is not None:
            all_logits[:, t] = logits
        finished |= choice == tokenizer.EOS
        steps = t + 1
        if bool(finished.all()):
            break
    out_logits = all_logits[:, :steps] if all_logits is not None else None
    return DecodedSequences(tokens=tokens[:, 1 : steps + 1], token_probs=token_probs[:, :steps], logits=out_logits)
