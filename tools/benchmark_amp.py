#!/usr/bin/env python
"""Training throughput in float32 vs mixed precision, side by side on the same model and batch.

    python tools/benchmark_amp.py --device cuda                         # R-50 at 640 px, batch 16 (the issue's setting)
    python tools/benchmark_amp.py --device cpu --size 320 --batch-size 4 --steps 3

Builds the model of ``--config-file`` (default ``configs/pix2seq_R50.yaml``, random weights),
makes one batch of ``--batch-size`` random ``--size`` x ``--size`` images with
``--objects`` random boxes each (full-length token sequences, as sequence augmentation
gives), and times full training steps (forward, backward, AdamW step with clipping)
in float32 and under ``torch.autocast`` with the ``SOLVER.AMP.PRECISION`` dtype (float16 +
GradScaler on a GPU, bfloat16 on the CPU), alternating the two after warm-up steps. Prints
images/s, peak GPU memory, and the AMP / float32 ratio.
"""

from __future__ import annotations

import pix2seq_d2  # noqa: F401  (first: it keeps detectron2's import-time FutureWarnings off the console)

# isort: split

import argparse
import copy
import os
import statistics
import time

import torch
from detectron2.modeling import build_model

from pix2seq_d2.config import load_config
from pix2seq_d2.engine.launch import add_config_file_argument
from pix2seq_d2.solver.build import build_optimizer
from pix2seq_d2.solver.precision import amp_dtype
from pix2seq_d2.tasks import build_task

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def random_batch(cfg, batch_size: int, size: int, objects: int, seed: int = 0) -> list[dict]:
    """Images with random boxes, tokenized like the training mapper does."""
    gen = torch.Generator().manual_seed(seed)
    task = build_task(cfg)
    batch = []
    for _ in range(batch_size):
        corners = torch.rand(objects, 2, 2, generator=gen) * size  # [n, 2 points, (x, y)]
        boxes = torch.cat([corners.min(1).values, corners.max(1).values + 1], 1).clamp(max=size)  # [n, 4]
        classes = torch.randint(0, cfg.MODEL.PIX2SEQ.NUM_CLASSES, (objects,), generator=gen)
        tokens = task.encode(boxes, classes, (size, size))
        image = torch.randint(0, 256, (3, size, size), dtype=torch.uint8, generator=gen)
        batch.append({"image": image, "seq_input": tokens.input, "seq_target": tokens.target,
                      "seq_weight": tokens.weight})  # fmt: skip
    return batch


def time_steps(model, optimizer, batch, steps: int, dtype: torch.dtype | None, device: torch.device) -> list[float]:
    """Seconds per training step; ``dtype`` None is float32, else autocast (+ scaling for float16)."""
    scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)
    times = []
    for _ in range(steps):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            loss = sum(model(batch).values())
        optimizer.zero_grad()
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return times


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_file_argument(parser, default=os.path.join(REPO_ROOT, "configs", "pix2seq_R50.yaml"))
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--precision", default="auto", help="SOLVER.AMP.PRECISION: auto, float16, bfloat16")
    parser.add_argument("--size", type=int, default=640)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--objects", type=int, default=100, help="objects per sequence")
    parser.add_argument("--steps", type=int, default=10, help="timed steps per mode and round")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=2, help="alternations of float32 and AMP")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides KEY VALUE ...")
    args = parser.parse_args(argv)

    cfg = load_config(args.config_file, ["MODEL.WEIGHTS", "", "MODEL.DEVICE", args.device, *args.opts])
    device = torch.device(args.device)
    dtype = amp_dtype(args.precision, device.type)
    torch.manual_seed(0)
    model = build_model(cfg).train()
    initial = copy.deepcopy(model.state_dict())
    optimizer = build_optimizer(cfg, model)
    batch = random_batch(cfg, args.batch_size, args.size, min(args.objects, cfg.MODEL.PIX2SEQ.MAX_OBJECTS))

    results: dict[str, list[float]] = {"float32": [], str(dtype).replace("torch.", ""): []}
    peak_memory: dict[str, float] = {}
    for _ in range(args.rounds):
        for name, mode in (("float32", None), (str(dtype).replace("torch.", ""), dtype)):
            model.load_state_dict(initial)  # the same weights for every mode
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats()
            time_steps(model, optimizer, batch, args.warmup, mode, device)
            results[name] += time_steps(model, optimizer, batch, args.steps, mode, device)
            if device.type == "cuda":
                peak_memory[name] = max(peak_memory.get(name, 0.0), torch.cuda.max_memory_allocated() / 2**30)

    print(f"device {args.device}, {os.path.basename(args.config_file)}, {args.size}x{args.size} px, "
          f"batch {args.batch_size}, {len(batch[0]['seq_input'])} tokens per sequence")  # fmt: skip
    summary = {}
    for name, times in results.items():
        ips = args.batch_size / statistics.median(times)
        summary[name] = ips
        memory = f", peak memory {peak_memory[name]:.1f} GiB" if name in peak_memory else ""
        print(f"  {name:9s}: {ips:8.2f} images/s (median of {len(times)} steps){memory}")
    amp_name = str(dtype).replace("torch.", "")
    summary["ratio"] = summary[amp_name] / summary["float32"]
    print(f"  {amp_name} / float32 throughput: {summary['ratio']:.2f}x")
    return summary


if __name__ == "__main__":
    main()
