#!/usr/bin/env python
"""Decoding speed, side by side on the same decoder weights and encoder memory.

    python tools/benchmark_decode.py                       # R50 decoder sizes, CPU, batch 1/8/32, 500 tokens
    python tools/benchmark_decode.py --device cuda --batch-sizes 1 8 32

Three ways to decode the same greedy, grammar-constrained, fixed-length sequences:

(a) recompute: the whole prefix through the decoder at every step (the seed reproduction);
(b) concat:    self-attention keys/values cached but grown with ``torch.cat``, and the encoder
               memory projected into cross-attention keys/values again at every step (the best
               public PyTorch reproduction's approach, re-implemented here for the comparison);
(c) ours:      ``pix2seq_d2.modeling.decoding.decode``: preallocated cache, memory projected once.

All three must produce identical tokens (checked). Prints images/s, ms per decoding step,
and the ratios of (c) to (a) and (b).
"""

from __future__ import annotations

import pix2seq_d2  # noqa: F401  (first: it keeps detectron2's import-time FutureWarnings off the console)

# isort: split

import argparse
import time

import torch
from detectron2.modeling import build_model

from pix2seq_d2.config import load_config
from pix2seq_d2.engine.launch import add_config_file_argument
from pix2seq_d2.modeling.decoding import decode
from pix2seq_d2.modeling.transformer import TokenDecoder, sine_position_encoding
from pix2seq_d2.tasks import DecodingOptions, DetectionTask


@torch.no_grad()
def decode_with_concat_cache(
    decoder: TokenDecoder,
    task: DetectionTask,
    memory: torch.Tensor,
    memory_pos: torch.Tensor,
    num_tokens: int,
) -> torch.Tensor:
    """Method (b): greedy fixed-length decoding, K/V grown by concatenation, memory re-projected
    every step. Uses ``decoder``'s weights; returns tokens ``[B, num_tokens]``."""
    b = memory.shape[0]
    allowed = task.grammar(memory.device, allow_eos=False)
    tokens = task.prompt(b, memory.device)
    past = [None] * len(decoder.layers)  # per layer: (k, v) [B, H, t, Dh]
    for t in range(num_tokens):
        pos = decoder.pos_embed.weight[t]
        x = decoder.token_embed(tokens[:, -1:]) + pos  # [B, 1, D]
        for i, layer in enumerate(decoder.layers):
            sa = layer.self_attn
            q, k, v = (sa.split_heads(proj(x)) for proj in (sa.q_proj, sa.k_proj, sa.v_proj))
            if past[i] is not None:
                k, v = torch.cat([past[i][0], k], dim=2), torch.cat([past[i][1], v], dim=2)
            past[i] = (k, v)
            x = layer.norm1(x + sa.attend(q, k, v))
            ca = layer.multihead_attn
            mk, mv = layer.memory_kv(memory, memory_pos)  # re-projected at every step
            x = layer.norm2(x + ca.attend(ca.split_heads(ca.q_proj(x)), mk, mv))
            x = layer.norm3(x + layer.ffn(x))
        logits = decoder._logits(x)[:, -1]
        choice = logits.masked_fill(~allowed[t % task.tokens_per_object], float("-inf")).argmax(-1)
        tokens = torch.cat([tokens, choice[:, None]], dim=1)
    return tokens[:, 1:]


def build_decoder(config_file: str) -> tuple[TokenDecoder, DetectionTask, int]:
    """The decoder and task of the model a config builds (random weights)."""
    cfg = load_config(config_file, ["MODEL.WEIGHTS", "", "MODEL.DEVICE", "cpu"])
    if cfg.MODEL.PIX2SEQ.PRE_NORM:
        raise ValueError("method (b) is written for the post-norm layout")
    model = build_model(cfg)
    return model.decoder.eval(), model.task, cfg.MODEL.PIX2SEQ.HIDDEN_DIM


def timed(fn, device: torch.device, *args) -> tuple[float, torch.Tensor]:
    """Wall-clock seconds of ``fn(*args)`` (GPU work included) and its result."""
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    out = fn(*args)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start, out


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_file_argument(parser, default="configs/pix2seq_R50.yaml")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--tokens", type=int, default=500, help="decoded tokens per image (multiple of 5)")
    parser.add_argument("--memory-hw", type=int, nargs=2, default=[20, 20],
                        help="encoder grid: 20x20 is res5 (stride 32) of a 640x640 image")  # fmt: skip
    parser.add_argument("--methods", nargs="+", default=["recompute", "concat", "ours"])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=0, help="torch threads on the CPU (0: torch's default)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    torch.manual_seed(0)
    decoder, task, dim = build_decoder(args.config_file)
    decoder.to(device)
    num_objects = args.tokens // task.tokens_per_object
    length = num_objects * task.tokens_per_object
    options = DecodingOptions(max_objects=num_objects, stop_at_eos=False)
    print(f"device={device} threads={torch.get_num_threads()} decoder: {len(decoder.layers)} layers d={dim} "
          f"vocab={task.tokenizer.vocab_size}; memory {args.memory_hw[0]}x{args.memory_hw[1]}; "
          f"{length} tokens per image")  # fmt: skip

    methods = {
        "recompute": lambda m, p, pad: decode(decoder, task, m, p, pad, options, use_cache=False).tokens,
        "concat": lambda m, p, pad: decode_with_concat_cache(decoder, task, m, p, length),
        "ours": lambda m, p, pad: decode(decoder, task, m, p, pad, options, use_cache=True).tokens,
    }
    rows = []
    for batch in args.batch_sizes:
        h, w = args.memory_hw
        padding = torch.zeros(batch, h, w, dtype=torch.bool, device=device)
        memory_pos = sine_position_encoding(padding, dim)
        memory = torch.randn(batch, h * w, dim, device=device)
        padding = padding.flatten(1)
        warm = DecodingOptions(max_objects=2, stop_at_eos=False)
        decode(decoder, task, memory, memory_pos, padding, warm)  # warm-up
        results = {}
        for name in args.methods:
            seconds, tokens = timed(methods[name], device, memory, memory_pos, padding)
            results[name] = (seconds, tokens)
            steps = tokens.shape[1]
            row = {"method": name, "batch": batch, "seconds": seconds, "images_per_s": batch / seconds,
                   "ms_per_step": 1000 * seconds / steps}  # fmt: skip
            rows.append(row)
            print(f"  batch {batch:3d}  {name:>9}: {seconds:8.2f} s  {row['images_per_s']:8.2f} img/s  "
                  f"{row['ms_per_step']:8.2f} ms/step")  # fmt: skip
        reference = next(iter(results.values()))[1]
        same = all(torch.equal(tokens, reference) for _, tokens in results.values())
        print(f"  batch {batch:3d}  identical tokens across methods: {'yes' if same else 'NO'}")
        if "ours" in results:
            for other in ("recompute", "concat"):
                if other in results:
                    ratio = results[other][0] / results["ours"][0]
                    print(f"  batch {batch:3d}  ours is {ratio:.1f}x faster than {other}")
    return rows


if __name__ == "__main__":
    main()
