#!/usr/bin/env python
"""Time converting a full-size official checkpoint (no download needed).

python tools/benchmark_convert.py [--config configs/official/pix2seq_R50_640.yaml] [--folder /tmp/ckpt]

Writes a TensorFlow checkpoint in the official format with the variable names and shapes of the
model a config builds (random values: the official R-50 640 px model by default, 36.6 M values),
as a real checkpoint folder would hold them, then times ``convert_checkpoint("official", folder)``
(reading, mapping, checking against the built model) and writing OUTPUT.pth + OUTPUT.yaml.
The names and layouts are those of the tiny fixture checkpoint (``tests/fixtures/pix2seq_official/
official_resnet``), widened to the config's sizes and layer counts.
"""

from __future__ import annotations

import pix2seq_d2  # noqa: F401  (first: it keeps detectron2's import-time FutureWarnings off the console)

# isort: split

import argparse
import os
import re
import sys
import tempfile
import time

import numpy as np
import torch
from detectron2.modeling import build_model

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from pix2seq_d2.config import load_config  # noqa: E402
from pix2seq_d2.conversion import convert_checkpoint, write_converted  # noqa: E402
from tests.helpers.tf_checkpoint_writer import write_tf_checkpoint_arrays  # noqa: E402

TEMPLATE = os.path.join(ROOT, "tests", "fixtures", "pix2seq_official", "official_resnet")


def official_arrays(state: dict[str, torch.Tensor], num_heads: int, dec_heads: int) -> dict[str, np.ndarray]:
    """Our state dict -> official variable names and layouts (the converter's mapping, inverted
    from the template fixture's conversion, with its two layers per stack repeated)."""
    template = convert_checkpoint("official", TEMPLATE).state_dict
    pattern = re.compile(r"(enc_layers|dec_layers)/\d+/|(encoder\.layers|decoder\.layers)\.\d+\.")
    by_target = {}
    for target, source in template.origins.items():
        if ".layers.0." in target or "backbone" in target or ".layers." not in target:
            by_target[
                pattern.sub(lambda m: (m.group(1) or m.group(2)) + ("/{i}/" if m.group(1) else ".{i}."), target)
            ] = pattern.sub(lambda m: m.group(1) + "/{i}/" if m.group(1) else m.group(0), source)
    arrays = {}
    for name, value in state.items():
        index = re.search(r"(?:encoder|decoder)\.layers\.(\d+)\.", name)
        key = re.sub(r"((?:encoder|decoder)\.layers)\.\d+\.", r"\1.{i}.", name)
        source = by_target[key].format(i=index.group(1) if index else 0)
        arrays[source] = _official_layout(source, value, dec_heads if "/decoder/" in source else num_heads)
    return arrays


def _official_layout(source: str, value: torch.Tensor, heads: int) -> np.ndarray:
    x = value.detach().float()
    if x.ndim == 4:  # OIHW -> HWIO
        return x.permute(2, 3, 1, 0).numpy()
    if re.search(r"_(query|key|value)_dense/kernel", source):  # [h*hd, d] -> [d, h, hd]
        return x.t().reshape(x.shape[1], heads, -1).numpy()
    if re.search(r"_(query|key|value)_dense/bias", source):
        return x.reshape(heads, -1).numpy()
    if "_output_dense/kernel" in source:  # [d, h*hd] -> [h, hd, d]
        return x.t().reshape(heads, -1, x.shape[0]).numpy()
    if source.endswith("/kernel/.ATTRIBUTES/VARIABLE_VALUE") and x.ndim == 2:
        return x.t().numpy()
    return x.numpy()


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=os.path.join(ROOT, "configs", "official", "pix2seq_R50_640.yaml"))
    parser.add_argument("--folder", default="", help="where to write the checkpoint (default: a temporary folder)")
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    cfg = load_config(args.config, ["MODEL.DEVICE", "cpu"])
    state = build_model(cfg).state_dict()
    p = cfg.MODEL.PIX2SEQ
    arrays = official_arrays(state, p.NUM_HEADS, p.DEC_NUM_HEADS or p.NUM_HEADS)
    arrays["global_step/.ATTRIBUTES/VARIABLE_VALUE"] = np.array(1, dtype=np.int64)
    folder = args.folder or tempfile.mkdtemp(prefix="pix2seq_ckpt_")
    write_tf_checkpoint_arrays(folder, arrays)
    values = sum(a.size for a in arrays.values())
    size = sum(os.path.getsize(os.path.join(folder, f)) for f in os.listdir(folder))
    start = time.perf_counter()
    converted = convert_checkpoint("official", folder, image_size=cfg.MODEL.PIX2SEQ.PAD_TO_SQUARE)
    convert_s = time.perf_counter() - start
    start = time.perf_counter()
    write_converted(converted, os.path.join(folder, "converted.pth"))
    write_s = time.perf_counter() - start
    same = all(torch.equal(converted.state_dict[k], v.float()) for k, v in state.items())
    print(f"{os.path.relpath(args.config, ROOT)}: {len(arrays)} variables, {values / 1e6:.1f} M values, "
          f"{size / 2**20:.0f} MiB on disk")  # fmt: skip
    print(f"convert (read + map + build and check the model): {convert_s:.1f} s; write .pth + .yaml: {write_s:.1f} s")
    print(f"converted weights equal the written ones: {same}")
    return {"convert_s": convert_s, "write_s": write_s, "same": same}


if __name__ == "__main__":
    sys.exit(0 if main()["same"] else 1)
