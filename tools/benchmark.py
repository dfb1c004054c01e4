#!/usr/bin/env python
"""Throughput of Pix2Seq training, evaluation and training data, as tools/train_net.py runs them.

    python tools/benchmark.py --task train --config-file configs/quickstart/pix2seq_shapes.yaml
    python tools/benchmark.py --task eval --config-file configs/quickstart/pix2seq_shapes.yaml MODEL.WEIGHTS m.pth
    python tools/benchmark.py --task data --config-file configs/quickstart/pix2seq_shapes.yaml DATALOADER.NUM_WORKERS 2

``train``: full training steps (forward, backward, optimizer step; mixed precision with
``SOLVER.AMP.ENABLED``) of ``Pix2SeqTrainer``'s model and optimizer on ``--cached`` batches of its
training loader, read beforehand so that the data does not count (0: the live loader, data
included), after ``--warmup`` steps. Reports iterations/s and images/s.

``eval``: ``model(inputs)`` in eval mode (encode + decode, as evaluation runs it) on ``--cached``
test images of ``DATASETS.TEST[0]`` (Pix2Seq test mapper, one image per batch, as detectron2's test
loader batches). Decoding stops at EOS, so an untrained model's speed says little: load weights.

``data``: the Pix2Seq training mapper alone (images/s: reading, augmentation, tokenization) and the
whole training loader (``DATALOADER.NUM_WORKERS`` workers; batches/s and images/s), timed with
detectron2's ``iter_benchmark``.
"""

from __future__ import annotations

import pix2seq_d2  # noqa: F401  (first: it keeps detectron2's import-time FutureWarnings off the console)

# isort: split

import argparse
import itertools
import sys
import time
from collections.abc import Callable, Iterable, Iterator

import torch
from detectron2.config import CfgNode
from detectron2.data import build_detection_test_loader
from detectron2.data.benchmark import iter_benchmark
from detectron2.data.samplers import TrainingSampler
from detectron2.engine import SimpleTrainer
from detectron2.utils.events import EventStorage

from pix2seq_d2 import Pix2SeqDatasetMapper, Pix2SeqTrainer
from pix2seq_d2.checkpoint import Pix2SeqCheckpointer
from pix2seq_d2.config import load_config, prepare_config
from pix2seq_d2.data.resumable_loader import load_train_dataset_dicts
from pix2seq_d2.engine.amp import MixedPrecisionTrainer
from pix2seq_d2.engine.launch import add_config_file_argument, run_tool

TASKS = ("train", "eval", "data")


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", choices=TASKS, required=True)
    add_config_file_argument(parser, required=True)
    parser.add_argument("--iters", type=int, default=50, help="timed iterations (train steps, images, batches)")
    parser.add_argument("--warmup", type=int, default=5, help="untimed iterations first")
    parser.add_argument(
        "--cached", type=int, default=20, help="train/eval: batches read before timing and cycled (train 0: live)"
    )
    parser.add_argument("--max-seconds", type=float, default=120.0, help="data: stop a benchmark after this long")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides: KEY VALUE ...")
    return parser


def timed_loop(step: Callable[[int], None], iters: int, warmup: int) -> float:
    """Seconds per call of ``step(i)`` over ``iters`` calls after ``warmup`` untimed ones."""
    for i in range(warmup):
        step(i)
    start = time.perf_counter()
    for i in range(warmup, warmup + iters):
        step(i)
    return (time.perf_counter() - start) / max(iters, 1)


def training_batches(cfg: CfgNode, cached: int) -> Iterator[list[dict]]:
    """The training loader's batches: its first ``cached`` ones cycled, or the live loader (0)."""
    loader = Pix2SeqTrainer.build_train_loader(cfg)
    if cached <= 0:
        return iter(loader)
    return itertools.cycle(list(itertools.islice(loader, cached)))


def benchmark_train(cfg: CfgNode, iters: int, warmup: int, cached: int) -> dict:
    """Training steps of ``Pix2SeqTrainer``'s model, optimizer and step (``SimpleTrainer`` or
    ``MixedPrecisionTrainer``); -> iterations/s and images/s."""
    model = Pix2SeqTrainer.build_model(cfg).train()
    optimizer = Pix2SeqTrainer.build_optimizer(cfg, model)
    batches = training_batches(cfg, cached)
    if cfg.SOLVER.AMP.ENABLED:
        trainer = MixedPrecisionTrainer.from_config(cfg, model, batches, optimizer)
    else:
        trainer = SimpleTrainer(model, batches, optimizer)

    def step(i: int) -> None:
        trainer.iter = trainer.storage.iter = i
        trainer.run_step()

    with EventStorage(0) as storage:
        trainer.storage = storage
        seconds = timed_loop(step, iters, warmup)
    images = cfg.SOLVER.IMS_PER_BATCH * cfg.INPUT.MULTI_CROP.NUM_VIEWS
    return {"iterations_per_s": 1 / seconds, "images_per_s": images / seconds, "seconds_per_iter": seconds}


def eval_batches(cfg: CfgNode, count: int) -> list[list[dict]]:
    """The first ``count`` batches (one image each) of ``DATASETS.TEST[0]`` (Pix2Seq test mapper)."""
    if not len(cfg.DATASETS.TEST):
        raise ValueError("--task eval reads DATASETS.TEST[0], but DATASETS.TEST is empty")
    mapper = Pix2SeqDatasetMapper(cfg, is_train=False, use_annotations=False)
    loader = build_detection_test_loader(cfg, cfg.DATASETS.TEST[0], mapper=mapper)
    return list(itertools.islice(loader, max(count, 1)))


@torch.no_grad()
def benchmark_eval(cfg: CfgNode, iters: int, warmup: int, cached: int) -> dict:
    """``model(inputs)`` in eval mode on cached test images; -> images/s and detections per image."""
    model = Pix2SeqTrainer.build_model(cfg)
    if cfg.MODEL.WEIGHTS:
        Pix2SeqCheckpointer(model).load(cfg.MODEL.WEIGHTS)
    model.eval()
    batches = eval_batches(cfg, cached)
    detections = []

    def step(i: int) -> None:
        outputs = model(batches[i % len(batches)])
        detections.extend(len(x["instances"]) for x in outputs)

    seconds = timed_loop(step, iters, warmup)
    return {"images_per_s": 1 / seconds, "seconds_per_image": seconds,
            "detections_per_image": sum(detections) / max(len(detections), 1)}  # fmt: skip


def _mapped(dicts: list[dict], mapper: Callable[[dict], dict], seed: int) -> Iterable[dict]:
    for index in TrainingSampler(len(dicts), seed=seed):
        yield mapper(dicts[index])


def benchmark_data(cfg: CfgNode, iters: int, warmup: int, max_seconds: float) -> dict:
    """The training mapper alone and the whole training loader; -> images/s of each (and batches/s)."""
    dicts = load_train_dataset_dicts(cfg.DATASETS.TRAIN, cfg.DATALOADER.FILTER_EMPTY_ANNOTATIONS)
    mapper = Pix2SeqDatasetMapper(cfg, is_train=True)
    mapper_seconds, _ = iter_benchmark(_mapped(dicts, mapper, max(cfg.SEED, 0)), iters, warmup, max_seconds)
    loader = Pix2SeqTrainer.build_train_loader(cfg)
    loader_seconds, _ = iter_benchmark(loader, iters, warmup, max_seconds)
    batch = cfg.SOLVER.IMS_PER_BATCH
    return {"mapper_images_per_s": 1 / mapper_seconds, "loader_batches_per_s": 1 / loader_seconds,
            "loader_images_per_s": batch / loader_seconds}  # fmt: skip


def report(task: str, cfg: CfgNode, result: dict, args: argparse.Namespace) -> str:
    """The one summary line of a benchmark."""
    if task == "train":
        source = f"{args.cached} cached batches" if args.cached > 0 else "the live loader"
        return (
            f"train: {result['iterations_per_s']:.2f} iterations/s, {result['images_per_s']:.1f} images/s "
            f"({args.iters} steps of {cfg.SOLVER.IMS_PER_BATCH} images after {args.warmup} warm-up, {source}, "
            f"{torch.get_num_threads()} threads)"
        )
    if task == "eval":
        return (
            f"eval: {result['images_per_s']:.2f} images/s ({args.iters} images after {args.warmup} warm-up, "
            f"{result['detections_per_image']:.1f} detections per image)"
        )
    return (
        f"data: mapper {result['mapper_images_per_s']:.1f} images/s; loader {result['loader_batches_per_s']:.2f} "
        f"batches/s = {result['loader_images_per_s']:.1f} images/s ({cfg.DATALOADER.NUM_WORKERS} workers)"
    )


def main(argv: list[str] | None = None) -> dict:
    """Run the benchmark of ``--task``; prints one summary line and returns its numbers."""
    args = get_parser().parse_args(argv)
    cfg = prepare_config(load_config(args.config_file, args.opts), for_training=False)
    cfg.freeze()
    if args.task == "train":
        result = benchmark_train(cfg, args.iters, args.warmup, args.cached)
    elif args.task == "eval":
        result = benchmark_eval(cfg, args.iters, args.warmup, args.cached)
    else:
        result = benchmark_data(cfg, args.iters, args.warmup, args.max_seconds)
    print(report(args.task, cfg, result, args))
    return result


def cli(argv: list[str] | None = None) -> int:
    """The command line: console logging, ``main``; bad settings or files are ``error: ...``, exit status 1."""
    return run_tool(main, argv)


if __name__ == "__main__":
    sys.exit(cli())
