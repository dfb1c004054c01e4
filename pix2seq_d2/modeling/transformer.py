"""The Pix2Seq transformer: a DETR-layout encoder over image features and a causal token decoder.

Layer layout follows DETR (``self_attn``, ``multihead_attn``, ``linear1/2``, ``norm1/2/3``;
post-norm by default, pre-norm optional) so that public checkpoints can be mapped onto it.
Activation (ReLU or exact GELU), LayerNorm eps, where positions enter (every attention layer,
as DETR, or once at the input, as the official release) and the decoder's position embedding
are options, so that the official Pix2Seq and Pretrained-Pix2Seq models are expressible exactly.
The decoder supports two ways of running:

* ``forward(tokens, memory)``: all positions at once with a causal mask (training, and the
  reference path that recomputes the whole prefix);
* ``start(memory)`` then ``step(token, cache)``: one position at a time with a preallocated
  key/value cache for self-attention, and the encoder memory projected into cross-attention
  keys/values once per image.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


def sine_position_encoding(
    padding_mask: torch.Tensor, dim: int, temperature: float = 10000.0, normalize: bool = True
) -> torch.Tensor:
    """DETR's 2-D sine position encoding (sin/cos interleaved, y half first).

    Args:
        padding_mask: bool ``[B, H, W]``, True on batch padding.
        dim: encoding size (half for y, half for x).
        normalize: True: positions scaled to (0, 2*pi) by each image's own (unpadded) extent;
            False: raw positions 1..n (Pretrained-Pix2Seq).
    Returns:
        float ``[B, H*W, dim]``.
    """
    if dim % 4 != 0:
        raise ValueError(f"position encoding size must be divisible by 4, got {dim}")
    not_pad = (~padding_mask).float()
    eps = 1e-6
    y = not_pad.cumsum(1)  # [B, H, W]
    x = not_pad.cumsum(2)
    if normalize:
        y = (y - 0.5) / (y[:, -1:, :] + eps) * 2 * math.pi
        x = (x - 0.5) / (x[:, :, -1:] + eps) * 2 * math.pi
    half = dim // 2
    freq = temperature ** (2 * (torch.arange(half, device=padding_mask.device) // 2) / half)  # [half]
    pos_x = x[..., None] / freq  # [B, H, W, half]
    pos_y = y[..., None] / freq
    pos_x = torch.stack([pos_x[..., 0::2].sin(), pos_x[..., 1::2].cos()], dim=-1).flatten(3)
    pos_y = torch.stack([pos_y[..., 0::2].sin(), pos_y[..., 1::2].cos()], dim=-1).flatten(3)
    return torch.cat([pos_y, pos_x], dim=-1).flatten(1, 2)


def sincos_position_table(height: int, width: int, dim: int, device=None) -> torch.Tensor:
    """The official release's fixed 2-D sin-cos table, ``[H*W, dim]`` (row-major positions).

    y fills the first ``dim/2`` channels and x the last; within each half a block of sines then a
    block of cosines of ``c * f_m``, ``f_m = 10000^(-2m / (dim/2))``, ``c = i / (n-1) * 6.2831852``
    (the release's constant). A grid of one row or column gets a 1-D table over its positions.
    """
    if dim % 4 != 0:
        raise ValueError(f"position table size must be divisible by 4, got {dim}")

    def table(n: int, d: int) -> torch.Tensor:  # [n, d]
        coord = torch.arange(n, dtype=torch.float64, device=device) / max(n - 1, 1) * 6.2831852
        freq = 10000.0 ** (-2 * torch.arange(d // 2, dtype=torch.float64, device=device) / d)
        angle = coord[:, None] * freq[None]
        return torch.cat([angle.sin(), angle.cos()], dim=1)

    if height == 1 or width == 1:
        return table(height * width, dim).float()
    y = table(height, dim // 2)[:, None].expand(height, width, dim // 2)
    x = table(width, dim // 2)[None].expand(height, width, dim // 2)
    return torch.cat([y, x], dim=-1).reshape(height * width, dim).float()


def add_pos(x: torch.Tensor, pos: torch.Tensor | None) -> torch.Tensor:
    """``x + pos``, or ``x`` where positions do not enter (``pos`` None)."""
    return x if pos is None else x + pos


class MultiHeadAttention(nn.Module):
    """Multi-head attention on ``scaled_dot_product_attention``, with the projections exposed
    so that keys/values can be computed once and cached."""

    def __init__(self, dim: int, num_heads: int, dropout: float = 0.0):
        super().__init__()
        if dim % num_heads != 0:
            raise ValueError(f"width {dim} is not divisible by {num_heads} heads")
        self.num_heads = num_heads
        self.dropout = dropout
        self.q_proj = nn.Linear(dim, dim)
        self.k_proj = nn.Linear(dim, dim)
        self.v_proj = nn.Linear(dim, dim)
        self.out_proj = nn.Linear(dim, dim)

    def split_heads(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape  # [B, T, D] -> [B, H, T, D/H]
        return x.view(b, t, self.num_heads, d // self.num_heads).transpose(1, 2)

    def attend(
        self,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        attn_mask: torch.Tensor | None = None,
        is_causal: bool = False,
    ) -> torch.Tensor:
        """Heads-split ``q [B,H,Tq,Dh]``, ``k/v [B,H,Tk,Dh]`` -> ``[B, Tq, D]``."""
        p = self.dropout if self.training else 0.0
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, dropout_p=p, is_causal=is_causal)
        b, h, t, dh = out.shape
        return self.out_proj(out.transpose(1, 2).reshape(b, t, h * dh))

    def forward(
        self,
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        attn_mask: torch.Tensor | None = None,
        is_causal: bool = False,
    ) -> torch.Tensor:
        q = self.split_heads(self.q_proj(query))
        k = self.split_heads(self.k_proj(key))
        v = self.split_heads(self.v_proj(value))
        return self.attend(q, k, v, attn_mask, is_causal)


class DropPath(nn.Module):
    """Stochastic depth: in training, zero a residual branch for a random ``rate`` fraction of
    the samples and scale the rest by ``1 / (1 - rate)``; the identity in eval mode."""

    def __init__(self, rate: float = 0.0):
        super().__init__()
        if not 0.0 <= rate < 1.0:
            raise ValueError(f"drop path rate must be in [0, 1), got {rate}")
        self.rate = rate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.rate == 0.0:
            return x
        keep = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(1.0 - self.rate)  # [B, 1, ...]
        return x * keep / (1.0 - self.rate)

    def extra_repr(self) -> str:
        return f"rate={self.rate}"


ACTIVATIONS = {"relu": F.relu, "gelu": F.gelu}  # gelu: the exact (erf) form


class FeedForward(nn.Module):
    """The position-wise MLP of a transformer layer (DETR's ``linear1``/``linear2`` names)."""

    def __init__(self, dim: int, hidden: int, dropout: float, activation: str = "relu"):
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ValueError(f"unknown activation {activation!r}; known: {sorted(ACTIVATIONS)}")
        self.linear1 = nn.Linear(dim, hidden)
        self.linear2 = nn.Linear(hidden, dim)
        self.dropout = nn.Dropout(dropout)
        self.activation = activation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear2(self.dropout(ACTIVATIONS[self.activation](self.linear1(x))))


class ResidualLayer(nn.Module):
    """What encoder and decoder layers share: self-attention, optionally cross-attention, an FFN, one
    LayerNorm per block, and the residual wiring of each block (pre- or post-norm, dropout, drop path)."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        ffn_dim: int,
        dropout: float,
        pre_norm: bool,
        drop_path: float = 0.0,
        activation: str = "relu",
        norm_eps: float = 1e-5,
        cross_attention: bool = False,
    ):
        super().__init__()
        self.self_attn = MultiHeadAttention(dim, num_heads, dropout)
        if cross_attention:
            self.multihead_attn = MultiHeadAttention(dim, num_heads, dropout)
        self.ffn = FeedForward(dim, ffn_dim, dropout, activation)
        self.norm1 = nn.LayerNorm(dim, eps=norm_eps)
        self.norm2 = nn.LayerNorm(dim, eps=norm_eps)
        if cross_attention:
            self.norm3 = nn.LayerNorm(dim, eps=norm_eps)
        self.dropout = nn.Dropout(dropout)
        self.drop_path = DropPath(drop_path)
        self.pre_norm = pre_norm

    def _residual(self, x: torch.Tensor, norm: nn.LayerNorm, block) -> torch.Tensor:
        if self.pre_norm:
            return x + self.drop_path(self.dropout(block(norm(x))))
        return norm(x + self.drop_path(self.dropout(block(x))))


class EncoderLayer(ResidualLayer):
    """Self-attention over image positions (padding masked) + FFN."""

    def forward(self, src: torch.Tensor, pos: torch.Tensor | None, attn_mask: torch.Tensor | None) -> torch.Tensor:
        # src, pos: [B, S, D] (pos None: no positions inside attention); attn_mask: bool [B, 1, 1, S]
        def self_attention(h: torch.Tensor) -> torch.Tensor:
            q = add_pos(h, pos)
            return self.self_attn(q, q, h, attn_mask)

        return self._residual(self._residual(src, self.norm1, self_attention), self.norm2, self.ffn)


class TransformerEncoder(nn.Module):
    """A stack of encoder layers (with a final norm in the pre-norm layout; none layers: the identity)."""

    def __init__(
        self,
        num_layers: int,
        dim: int,
        num_heads: int,
        ffn_dim: int,
        dropout: float,
        pre_norm: bool,
        drop_path: float = 0.0,
        activation: str = "relu",
        norm_eps: float = 1e-5,
    ):
        super().__init__()
        self.layers = nn.ModuleList(
            EncoderLayer(dim, num_heads, ffn_dim, dropout, pre_norm, drop_path, activation, norm_eps)
            for _ in range(num_layers)
        )
        self.norm = nn.LayerNorm(dim, eps=norm_eps) if pre_norm and num_layers else nn.Identity()

    def forward(self, src: torch.Tensor, pos: torch.Tensor | None, padding_mask: torch.Tensor | None) -> torch.Tensor:
        """``src``/``pos`` ``[B, S, D]``, ``padding_mask`` bool ``[B, S]`` (True on padding) -> ``[B, S, D]``.
        ``pos`` None: no positions inside attention; ``padding_mask`` None: every position is attended to."""
        attn_mask = _attend_mask(padding_mask)
        for layer in self.layers:
            src = layer(src, pos, attn_mask)
        return self.norm(src)


def _attend_mask(padding: torch.Tensor | None) -> torch.Tensor | None:
    """bool ``[B, S]`` padding (True on padding) -> attention mask ``[B, 1, 1, S]`` (True = may attend)."""
    return None if padding is None else (~padding)[:, None, None, :]


@dataclass
class DecoderCache:
    """Everything the decoder keeps between steps for a batch of images.

    ``self_k``/``self_v`` are preallocated to the longest sequence; ``length`` positions
    are filled. ``cross_k``/``cross_v`` hold the encoder memory projected once per image.
    """

    self_k: torch.Tensor  # [L, B, H, T_max, Dh]
    self_v: torch.Tensor  # [L, B, H, T_max, Dh]
    cross_k: torch.Tensor  # [L, B, H, S, Dh]
    cross_v: torch.Tensor  # [L, B, H, S, Dh]
    memory_mask: torch.Tensor | None  # bool [B, 1, 1, S], True = may attend (None: all)
    length: int = 0

    def select(self, rows: torch.Tensor, memory_unchanged: bool = False) -> None:
        """Keep (and reorder to) batch ``rows``; only the filled positions are copied.
        ``memory_unchanged``: the cross-attention keys/values are the same for the new rows."""
        n, t = rows.numel(), self.length
        self.self_k[:, :n, :, :t] = self.self_k[:, rows, :, :t]
        self.self_v[:, :n, :, :t] = self.self_v[:, rows, :, :t]
        self.self_k, self.self_v = self.self_k[:, :n], self.self_v[:, :n]
        if not memory_unchanged:
            self.cross_k, self.cross_v = self.cross_k[:, rows], self.cross_v[:, rows]
            self.memory_mask = None if self.memory_mask is None else self.memory_mask[rows]


class DecoderLayer(ResidualLayer):
    """Causal self-attention over tokens, cross-attention to the image, FFN."""

    def __init__(self, *args, **kwargs):
        """The arguments of :class:`ResidualLayer` (with cross-attention)."""
        super().__init__(*args, **kwargs, cross_attention=True)

    def memory_kv(self, memory: torch.Tensor, memory_pos: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """Cross-attention keys/values of the encoder memory, ``[B, H, S, Dh]`` each (positions on keys only)."""
        attn = self.multihead_attn
        return attn.split_heads(attn.k_proj(add_pos(memory, memory_pos))), attn.split_heads(attn.v_proj(memory))

    def forward(
        self,
        x: torch.Tensor,
        memory_k: torch.Tensor,
        memory_v: torch.Tensor,
        memory_mask: torch.Tensor | None,
        cache: DecoderCache | None = None,
        layer_index: int = 0,
    ) -> torch.Tensor:
        """``x [B, T, D]`` -> ``[B, T, D]``. With ``cache``, ``x`` holds the next ``T`` positions
        and their keys/values are appended to the cache's slots for ``layer_index``."""

        def self_attention(h: torch.Tensor) -> torch.Tensor:
            attn = self.self_attn
            q, k, v = self.self_attention_qkv(h)
            if cache is None:
                return attn.attend(q, k, v, is_causal=True)
            start, end = cache.length, cache.length + h.shape[1]
            cache.self_k[layer_index, :, :, start:end] = k
            cache.self_v[layer_index, :, :, start:end] = v
            k_all = cache.self_k[layer_index, :, :, :end]
            v_all = cache.self_v[layer_index, :, :, :end]
            # A single new position may see every cached one; several new ones need the causal
            # mask shifted by the cached prefix.
            mask = None
            if end - start > 1:
                mask = torch.ones(end - start, end, dtype=torch.bool, device=h.device).tril(diagonal=start)
            return attn.attend(q, k_all, v_all, attn_mask=mask)

        return self.with_self_attention(x, self_attention, memory_k, memory_v, memory_mask)

    def self_attention_qkv(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The self-attention's heads-split queries, keys and values of ``h [B, T, D]``, ``[B, H, T, Dh]`` each."""
        attn = self.self_attn
        return tuple(attn.split_heads(proj(h)) for proj in (attn.q_proj, attn.k_proj, attn.v_proj))

    def with_self_attention(
        self,
        x: torch.Tensor,
        self_attention: Callable[[torch.Tensor], torch.Tensor],
        memory_k: torch.Tensor,
        memory_v: torch.Tensor,
        memory_mask: torch.Tensor | None,
    ) -> torch.Tensor:
        """The layer on ``x [B, T, D]`` with ``self_attention`` (normed ``h [B, T, D]`` -> ``[B, T, D]``,
        keys/values from wherever it keeps them), then cross-attention to the memory and the FFN."""

        def cross_attention(h: torch.Tensor) -> torch.Tensor:
            q = self.multihead_attn.split_heads(self.multihead_attn.q_proj(h))
            return self.multihead_attn.attend(q, memory_k, memory_v, attn_mask=memory_mask)

        x = self._residual(x, self.norm1, self_attention)
        x = self._residual(x, self.norm2, cross_attention)
        return self._residual(x, self.norm3, self.ffn)


class TokenDecoder(nn.Module):
    """Autoregressive decoder: token (+ learned position) embeddings -> layers -> vocabulary logits."""

    def __init__(
        self,
        vocab_size: int,
        max_len: int,
        num_layers: int,
        dim: int,
        num_heads: int,
        ffn_dim: int,
        dropout: float,
        pre_norm: bool,
        share_embedding: bool,
        drop_path: float = 0.0,
        activation: str = "relu",
        norm_eps: float = 1e-5,
        input_vocab_size: int | None = None,
        learned_positions: bool = True,
    ):
        """
        Args:
            vocab_size: output vocabulary (logits per position).
            input_vocab_size: rows of the input token embedding (default ``vocab_size``); larger when
                some tokens are input-only (a separate START embedding). A shared output layer uses
                the first ``vocab_size`` rows.
            learned_positions: add a learned embedding of each position (False: no positions at all).
        """
        super().__init__()
        self.max_len = max_len
        self.num_heads = num_heads
        self.vocab_size = vocab_size
        self.token_embed = nn.Embedding(input_vocab_size or vocab_size, dim)
        self.pos_embed = nn.Embedding(max_len, dim) if learned_positions else None
        self.dropout = nn.Dropout(dropout)
        self.layers = nn.ModuleList(
            DecoderLayer(dim, num_heads, ffn_dim, dropout, pre_norm, drop_path, activation, norm_eps)
            for _ in range(num_layers)
        )
        self.norm = nn.LayerNorm(dim, eps=norm_eps)
        self.output_proj = None if share_embedding else nn.Linear(dim, vocab_size, bias=False)
        self.output_bias = nn.Parameter(torch.zeros(vocab_size))
        nn.init.normal_(self.token_embed.weight, std=dim**-0.5)
        if self.pos_embed is not None:
            nn.init.normal_(self.pos_embed.weight, std=0.02)

    def _logits(self, x: torch.Tensor) -> torch.Tensor:
        x = self.norm(x)
        weight = self.token_embed.weight[: self.vocab_size] if self.output_proj is None else self.output_proj.weight
        return F.linear(x, weight, self.output_bias)

    def _embed(self, tokens: torch.Tensor, offset: int) -> torch.Tensor:
        t = tokens.shape[1]
        if offset + t > self.max_len:
            raise ValueError(f"sequence of {offset + t} tokens exceeds the decoder's max length {self.max_len}")
        x = self.token_embed(tokens)
        if self.pos_embed is not None:
            x = x + self.pos_embed(torch.arange(offset, offset + t, device=tokens.device))
        return self.dropout(x)

    def memory_kv(
        self, memory: torch.Tensor, memory_pos: torch.Tensor | None
    ) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Per layer, the encoder memory projected into cross-attention keys/values."""
        return [layer.memory_kv(memory, memory_pos) for layer in self.layers]

    def forward(
        self,
        tokens: torch.Tensor,
        memory: torch.Tensor,
        memory_pos: torch.Tensor | None,
        memory_padding: torch.Tensor | None,
    ) -> torch.Tensor:
        """All positions at once: ``tokens [B, T]``, ``memory [B, S, D]`` -> logits ``[B, T, V]``."""
        memory_mask = _attend_mask(memory_padding)
        x = self._embed(tokens, 0)
        for layer, (mk, mv) in zip(self.layers, self.memory_kv(memory, memory_pos)):
            x = layer(x, mk, mv, memory_mask)
        return self._logits(x)

    def start(
        self,
        memory: torch.Tensor,
        memory_pos: torch.Tensor | None,
        memory_padding: torch.Tensor | None,
        max_len: int | None = None,
    ) -> DecoderCache:
        """An empty cache for ``memory [B, S, D]`` holding up to ``max_len`` positions."""
        max_len = self.max_len if max_len is None else max_len
        b, _, d = memory.shape
        kv = self.memory_kv(memory, memory_pos)
        shape = (len(self.layers), b, self.num_heads, max_len, d // self.num_heads)
        return DecoderCache(
            self_k=memory.new_empty(shape),
            self_v=memory.new_empty(shape),
            cross_k=torch.stack([k for k, _ in kv]),
            cross_v=torch.stack([v for _, v in kv]),
            memory_mask=_attend_mask(memory_padding),
        )

    def step(self, tokens: torch.Tensor, cache: DecoderCache) -> torch.Tensor:
        """Feed the next positions ``tokens [B, T]`` (usually T = 1) -> their logits ``[B, T, V]``."""
        x = self._embed(tokens, cache.length)
        for i, layer in enumerate(self.layers):
            x = layer(x, cache.cross_k[i], cache.cross_v[i], cache.memory_mask, cache=cache, layer_index=i)
        cache.length += tokens.shape[1]
        return self._logits(x)


class MemoryProjection(nn.Module):
    """The official release's block between encoder and decoder (``dec_proj_mode='mlp'``):
    Linear(encoder width -> decoder width) -> LayerNorm -> + sin-cos positions -> one pre-norm
    residual MLP. ``[B, S, D_enc]`` -> ``[B, S, D_dec]``."""

    def __init__(self, in_dim: int, dim: int, ffn_dim: int, activation: str = "gelu", norm_eps: float = 1e-6):
        super().__init__()
        self.proj = nn.Linear(in_dim, dim)
        self.norm = nn.LayerNorm(dim, eps=norm_eps)
        self.mlp_norm = nn.LayerNorm(dim, eps=norm_eps)
        self.mlp = FeedForward(dim, ffn_dim, 0.0, activation)

    def forward(self, memory: torch.Tensor, grid_hw: tuple[int, int]) -> torch.Tensor:
        x = self.norm(self.proj(memory))
        x = x + sincos_position_table(*grid_hw, x.shape[-1], device=x.device).to(x.dtype)
        return x + self.mlp(self.mlp_norm(x))
