#!/usr/bin/env python
"""Parameters and FLOPs of a Pix2Seq model: per part, image encoder per image, decoder per decoded token.

    python tools/analyze_model.py --config-file configs/quickstart/pix2seq_shapes.yaml
    python tools/analyze_model.py --config-file configs/pix2seq_R50.yaml --tasks flop -n 4 MODEL.WEIGHTS model.pth

``parameter``: parameters of the backbone, input projection, transformer encoder, memory projection
and decoder (embeddings, each layer, output), and the total.

``flop``: FLOPs counted as detectron2's ``tools/analyze_model.py`` counts them (fvcore, one
multiply-add = one flop), plus ``scaled_dot_product_attention`` (fvcore has no handle for it; see
pix2seq_d2/analysis/flops.py), on the first ``-n`` images of ``DATASETS.TEST[0]`` read by the Pix2Seq test
mapper: the image encoder per image, the decoder's cross-attention keys/values (once per image), one
cached decoder step at the first and at the last position of a full sequence
(``5 * MAX_OBJECTS_TEST`` tokens) and their mean per decoded token, the full sequence, and
``model.inference`` as traced (decoding as far as the weights go: an untrained model may stop early).
"""

from __future__ import annotations

import pix2seq_d2  # noqa: F401  (first: it keeps detectron2's import-time FutureWarnings off the console)

# isort: split

import argparse
import itertools
import logging
import sys

from detectron2.config import CfgNode
from detectron2.data import build_detection_test_loader
from detectron2.modeling import build_model

from pix2seq_d2 import Pix2SeqDatasetMapper
from pix2seq_d2.analysis.flops import ModelFlops, format_count, model_flops, parameter_counts, table
from pix2seq_d2.checkpoint import Pix2SeqCheckpointer
from pix2seq_d2.config import load_config, prepare_config
from pix2seq_d2.engine.launch import add_config_file_argument, run_tool

TASKS = ("parameter", "flop")
logger = logging.getLogger("pix2seq_d2.tools.analyze_model")


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_file_argument(parser, required=True)
    parser.add_argument("--tasks", nargs="+", choices=TASKS, default=list(TASKS))
    parser.add_argument("-n", "--num-inputs", type=int, default=1, help="test images the FLOPs are averaged over")
    parser.add_argument(
        "--no-inference-trace", action="store_true", help="skip tracing model.inference (the slowest part)"
    )
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides: KEY VALUE ...")
    return parser


def build_analyzed_model(cfg: CfgNode):
    """The model of ``cfg`` in eval mode, with ``MODEL.WEIGHTS`` loaded when set."""
    model = build_model(cfg)
    if cfg.MODEL.WEIGHTS:
        Pix2SeqCheckpointer(model).load(cfg.MODEL.WEIGHTS)
    return model.eval()


def flop_inputs(cfg: CfgNode, count: int) -> list[dict]:
    """The first ``count`` images of ``DATASETS.TEST[0]`` as model inputs (test mapper, no annotations)."""
    if not len(cfg.DATASETS.TEST):
        raise ValueError("FLOPs are counted on DATASETS.TEST[0], but DATASETS.TEST is empty")
    mapper = Pix2SeqDatasetMapper(cfg, is_train=False, use_annotations=False)
    loader = build_detection_test_loader(cfg, cfg.DATASETS.TEST[0], mapper=mapper)
    return [batch[0] for batch in itertools.islice(loader, count)]


def parameter_table(counts: dict[str, int]) -> str:
    return table(((name, f"{value:,}") for name, value in counts.items()), ("module", "parameters"))


def flop_table(flops: ModelFlops) -> str:
    n = flops.full_sequence_tokens
    rows = [
        ("image encoder (backbone, projection, encoder), per image", flops.encoder),
        ("decoder: cross-attention keys/values, once per image", flops.decoder_start),
        ("decoder step: first token (position 0)", flops.step_first),
        (f"decoder step: last token (position {n - 1})", flops.step_last),
        (f"decoder: per decoded token (mean over {n})", flops.step_mean),
        (f"full sequence ({n} tokens), per image", flops.full_sequence),
    ]
    if flops.inference is not None:
        rows.append(("model.inference as traced, per image", flops.inference))
    return table(((name, format_count(value)) for name, value in rows), ("part", "FLOPs"))


def main(argv: list[str] | None = None) -> dict:
    """Print the tables of the chosen tasks; returns ``{"parameter": counts, "flop": ModelFlops}``."""
    args = get_parser().parse_args(argv)
    cfg = prepare_config(load_config(args.config_file, args.opts), for_training=False)
    cfg.freeze()
    model = build_analyzed_model(cfg)
    results: dict = {}
    if "parameter" in args.tasks:
        results["parameter"] = parameter_counts(model)
        print("Parameters:\n" + parameter_table(results["parameter"]))
    if "flop" in args.tasks:
        inputs = flop_inputs(cfg, args.num_inputs)
        flops = model_flops(model, inputs, trace_inference=not args.no_inference_trace)
        results["flop"] = flops
        h, w = inputs[0]["image"].shape[-2:]
        print(f"FLOPs (one multiply-add = 1; attention products counted), {len(inputs)} image(s) of "
              f"{cfg.DATASETS.TEST[0]}, first {h}x{w} px -> {flops.memory_length} encoder positions:")  # fmt: skip
        print(flop_table(flops))
        by_op = ", ".join(f"{k} {format_count(v)}" for k, v in sorted(flops.by_operator.items(), key=lambda kv: -kv[1]))
        print(f"per operator: {by_op}")
        if flops.uncounted:
            logger.info(f"operators without a FLOP count (not included): {sorted(flops.uncounted)}")
    return results


def cli(argv: list[str] | None = None) -> int:
    """The command line: console logging, ``main``; bad settings or files are ``error: ...``, exit status 1."""
    return run_tool(main, argv)


if __name__ == "__main__":
    sys.exit(cli())
