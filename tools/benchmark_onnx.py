#!/usr/bin/env python
"""CPU speed of the ONNX export under ONNX Runtime against PyTorch decoding, side by side in one run.

    python tools/benchmark_onnx.py      # R-50 sizes at random weights: 320 px images, 20 objects, batch 1 and 8
    python tools/benchmark_onnx.py --image-size 640 --objects 100 --batch-sizes 1
    python tools/benchmark_onnx.py --config-file configs/quickstart/pix2seq_shapes.yaml --image-size 96 --objects 10

Both engines get the same weights (random, seeded; or ``MODEL.WEIGHTS`` among the config overrides, which go last) and
the same random square images of ``--image-size`` px (so that both pad alike), and decode greedily
with the grammar exactly ``--objects`` objects per image (``STOP_AT_EOS`` False: 5 decoder steps per
object; random weights would stop anywhere):

* PyTorch:      ``Pix2Seq.generate`` + ``Pix2Seq.detections``, what ``Pix2Seq.inference`` runs
  (cached decoding, :mod:`pix2seq_d2.modeling.decoding`);
* ONNX Runtime: :class:`~pix2seq_d2.export.exporter.OnnxPix2SeqRunner` on the files of ``export_onnx``, CPU
  execution provider with as many threads as torch uses (``--threads``).

The R-50 paper setting (640 px and 100 objects, or 1333 px) takes minutes per batch on a 2-core CPU,
hence the smaller defaults; every size is a flag. On a CPU shared with other jobs, ``--threads 1``:
torch's OpenMP threads slow down many times over when the cores are oversubscribed.

Prints per batch size the seconds spent (best of ``--repeats``; the encoder alone timed once more),
images/s of both and their ratio, and whether the tokens are identical.
"""

from __future__ import annotations

import pix2seq_d2  # noqa: F401  (first: it keeps detectron2's import-time FutureWarnings off the console)

# isort: split

import argparse
import dataclasses
import tempfile
import time

import torch
from detectron2.modeling import build_model

from pix2seq_d2.checkpoint import load_inference_weights
from pix2seq_d2.config import load_config
from pix2seq_d2.engine.launch import add_config_file_argument
from pix2seq_d2.export.exporter import ONNX_EXPORTERS, OnnxPix2SeqRunner, export_image_size, export_onnx


def set_objects(model, runner: OnnxPix2SeqRunner, objects: int) -> None:
    """Decode ``objects`` objects per image with both engines from now on."""
    model.decoding = dataclasses.replace(model.decoding, max_objects=objects)
    runner.settings.decoding = model.decoding


def timed(fn, *args) -> tuple[float, object]:
    start = time.perf_counter()
    out = fn(*args)
    return time.perf_counter() - start, out


@torch.no_grad()
def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_file_argument(parser, default="configs/pix2seq_R50.yaml")
    parser.add_argument("--image-size", type=int, default=320, help="side of the square test images (px)")
    parser.add_argument("--objects", type=int, default=20, help="objects decoded per image (5 steps each)")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--repeats", type=int, default=1, help="timed runs per engine and batch size (best kept)")
    parser.add_argument("--threads", type=int, default=0, help="CPU threads of both engines (0: torch's default)")
    parser.add_argument("--onnx-exporter", choices=ONNX_EXPORTERS, default="dynamo")
    parser.add_argument("--output", default="", help="folder for the ONNX files (default: a temporary one)")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides: KEY VALUE ...")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    size, objects = args.image_size, args.objects
    cfg = load_config(
        args.config_file,
        ["MODEL.WEIGHTS", "", *args.opts, "MODEL.DEVICE", "cpu", "MODEL.PIX2SEQ.DECODE.STRATEGY", "greedy",
         "MODEL.PIX2SEQ.DECODE.STOP_AT_EOS", False, "MODEL.PIX2SEQ.MAX_OBJECTS_TEST", objects,
         "INPUT.MIN_SIZE_TEST", size, "INPUT.MAX_SIZE_TEST", size],
    )  # fmt: skip
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    if cfg.MODEL.WEIGHTS:
        load_inference_weights(cfg, model)
    with tempfile.TemporaryDirectory() as tmp:
        seconds, _ = timed(export_onnx, model, args.output or tmp, export_image_size(cfg, model), args.onnx_exporter)
        runner = OnnxPix2SeqRunner.from_dir(cfg, args.output or tmp, num_threads=torch.get_num_threads())
    p = cfg.MODEL.PIX2SEQ
    print(f"{args.config_file}: {p.ENC_LAYERS}+{p.DEC_LAYERS} layers d={p.HIDDEN_DIM}, vocabulary "
          f"{model.tokenizer.vocab_size}; {size}x{size} images, {objects} objects ({5 * objects} steps) per image; "
          f"{torch.get_num_threads()} threads; ONNX export ({args.onnx_exporter}) {seconds:.0f} s")  # fmt: skip
    rows = []
    for batch in args.batch_sizes:
        inputs = [{"image": torch.randint(0, 256, (3, size, size), dtype=torch.uint8)} for _ in range(batch)]
        set_objects(model, runner, 1)  # warm-up: allocations, ONNX Runtime's first runs
        model.inference(inputs)
        runner(inputs)
        set_objects(model, runner, objects)
        engines = {  # generate + detections: what Pix2Seq.inference does
            "PyTorch": (model.generate, model.detections, lambda x: model.encode(model.preprocess_image(x))),
            "ONNX Runtime": (runner.generate, runner.detections, lambda x: runner.encode(runner.preprocess(x))),
        }
        tokens = {}
        for name, (generate, detections, encode) in engines.items():
            total = float("inf")
            for _ in range(args.repeats):
                start = time.perf_counter()
                sequences, images = generate(inputs)
                detections(inputs, sequences, images)
                total = min(total, time.perf_counter() - start)
            tokens[name] = sequences.tokens
            encode_s, _ = timed(encode, inputs)  # the encoder alone, once
            rows.append({"engine": name, "batch": batch, "seconds": total, "encode_seconds": encode_s,
                         "images_per_s": batch / total})  # fmt: skip
        same = torch.equal(tokens["PyTorch"], tokens["ONNX Runtime"])
        rows[-1]["ratio"] = rows[-1]["images_per_s"] / rows[-2]["images_per_s"]
        rows[-1]["identical_tokens"] = same
    print_table(rows)
    return rows


def print_table(rows: list[dict]) -> None:
    header = ("batch", "engine", "total s", "encoder s", "images/s", "ORT / PyTorch")
    print("| {:>5} | {:<12} | {:>8} | {:>9} | {:>8} | {:<21} |".format(*header))
    print(f"|{'-' * 7}|{'-' * 14}|{'-' * 10}|{'-' * 11}|{'-' * 10}|{'-' * 23}|")
    for row in rows:
        ratio = f"{row['ratio']:.2f}x" if "ratio" in row else ""
        if "identical_tokens" in row:
            ratio += ", same tokens" if row["identical_tokens"] else ", TOKENS DIFFER"
        print(f"| {row['batch']:>5} | {row['engine']:<12} | {row['seconds']:>8.2f} | {row['encode_seconds']:>9.2f} "
              f"| {row['images_per_s']:>8.2f} | {ratio:<21} |")  # fmt: skip


if __name__ == "__main__":
    main()
