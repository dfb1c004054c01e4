#!/usr/bin/env python
"""The training data as the model sees it: each augmented image with its boxes, and its token sequence.

    python tools/visualize_data.py --config-file configs/quickstart/pix2seq_shapes.yaml \
        --output-dir output/data --num-images 16

Reads the first ``--num-images`` training examples from ``Pix2SeqTrainer``'s training loader (the
Pix2Seq mapper: augmentation, object order, ``MAX_OBJECTS``, sequence augmentation; the same
seeded stream training reads) and writes, per example:

* ``NNN_<image id>.jpg``: the augmented image (what the model gets, before normalisation) with each
  object's box and class name after augmentation; noise objects of sequence augmentation dashed
  grey, labelled "noise";
* ``NNN_<image id>.txt``: the token sequence, one line per position: the input token (teacher
  forcing) and the target token, each with its id, kind and value (``ymin bin 40 = 30.3 px``,
  ``class square``, ``START``, ``EOS``, ...), and the target's loss weight.

With multi-crop (``INPUT.MULTI_CROP.NUM_VIEWS`` > 1) every view is an example of its own (``_v1``...).
"""

from __future__ import annotations

import pix2seq_d2  # noqa: F401  (first: it keeps detectron2's import-time FutureWarnings off the console)

# isort: split

import argparse
import logging
import os
import sys
from collections.abc import Iterator, Sequence

import numpy as np
import torch
from detectron2.config import CfgNode
from detectron2.data import MetadataCatalog
from detectron2.data import detection_utils as utils
from detectron2.utils.visualizer import Visualizer
from PIL import Image

from pix2seq_d2 import Pix2SeqTrainer
from pix2seq_d2.config import load_config, prepare_config
from pix2seq_d2.data.dataset_mapper import expand_views
from pix2seq_d2.engine.launch import add_config_file_argument, run_tool
from pix2seq_d2.tasks import DetectionTask, build_task

logger = logging.getLogger("pix2seq_d2.tools.visualize_data")
AXIS_NAMES = ("xmin", "ymin", "xmax", "ymax")  # the tokenizer's slot_axes index into this
_COLORS = ((0.9, 0.1, 0.1), (0.1, 0.6, 0.1), (0.1, 0.3, 0.9), (0.9, 0.6, 0.0), (0.6, 0.1, 0.8), (0.0, 0.7, 0.7))


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_file_argument(parser, required=True)
    parser.add_argument("--output-dir", required=True)
    parser.add_argument("--num-images", type=int, default=8, help="training examples to write")
    parser.add_argument("--scale", type=float, default=1.0, help="drawing scale (small images: 2-4)")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides: KEY VALUE ...")
    return parser


# ---- tokens as text ----------------------------------------------------------------------------
def describe_token(
    task: DetectionTask, token: int, slot: int | None, image_hw: tuple[int, int], names: dict[int, str]
) -> str:
    """One token as text: its kind and value. ``slot``: its place in an object (0-3 a coordinate, 4 the
    class; None: outside the objects: START, EOS), which says which coordinate a bin is."""
    tokenizer = task.tokenizer
    lo, hi = tokenizer.coord_token_range()
    if slot == task.class_slot and token in names:  # dataset classes and NOISE
        return f"class {names[token]}"
    if slot is not None and slot < task.class_slot and lo <= token < hi:
        axis = AXIS_NAMES[tokenizer.slot_axes[slot]]
        h, w = tokenizer.normalizer_hw(image_hw)
        pixels = float(tokenizer.dequantize(torch.tensor(token - lo))) * (h if axis[0] == "y" else w)
        return f"{axis} bin {token - lo} = {pixels:.1f} px"
    special = {tokenizer.PAD: "PAD", tokenizer.NOISE: "NOISE", tokenizer.START: "START", tokenizer.EOS: "EOS"}
    if token in special:
        return special[token]
    kinds = [kind for kind, mask in task.token_kinds(torch.tensor([token])).items() if bool(mask[0])]
    return f"{kinds[0] if kinds else 'other'} token (unexpected here)"


def token_lines(example: dict, task: DetectionTask, class_names: Sequence[str] | None) -> list[str]:
    """The input/target/weight lines of one mapped training example."""
    tokenizer = task.tokenizer
    seq_input, seq_target = example["seq_input"].tolist(), example["seq_target"].tolist()
    weights = example["seq_weight"].tolist()
    image_hw = tuple(example["image"].shape[-2:])
    names = tokenizer.class_names(class_names)
    tpo, body = task.tokens_per_object, len(seq_target) - 1  # the last target is EOS

    def text(token: int, target_position: int) -> str:
        """``target_position``: where the token stands in the target sequence (-1: START)."""
        slot = target_position % tpo if 0 <= target_position < body else None
        return f"{token:5d} {describe_token(task, token, slot, image_hw, names):<26}"

    lines = [f"# {'pos':>4} {'input (id, meaning)':<32} {'target (id, meaning)':<32} weight"]
    for pos, (inp, tgt, weight) in enumerate(zip(seq_input, seq_target, weights)):
        # the input at position p is the target of position p - 1 (teacher forcing; START first)
        lines.append(f"  {pos:4d} {text(inp, pos - 1)} {text(tgt, pos)} {weight:.2f}")
    return lines


def header_lines(example: dict, task: DetectionTask, dataset_hint: str) -> list[str]:
    tokenizer = task.tokenizer
    h, w = example["image"].shape[-2:]
    objects = len(example["instances"])
    in_sequence = (len(example["seq_target"]) - 1) // task.tokens_per_object
    return [
        f"# image {example.get('image_id')} ({dataset_hint}): {example.get('file_name')}",
        f"# original {example.get('height')} x {example.get('width')} px (h x w); augmented {h} x {w} px",
        f"# {objects} objects after augmentation; {in_sequence} in the sequence ({in_sequence - objects} noise); "
        f"{len(example['seq_target'])} positions",
        f"# {tokenizer!r}; coordinates as fractions of {tokenizer.normalizer_hw((h, w))} px (h, w)",
    ]


# ---- drawing -------------------------------------------------------------------------------------
def noise_boxes(example: dict, task: DetectionTask) -> np.ndarray:
    """Boxes ``[k, 4]`` (x0 y0 x1 y1, pixels) of the sequence's noise objects (target class NOISE)."""
    tokenizer, tpo, class_slot = task.tokenizer, task.tokens_per_object, task.class_slot
    target = example["seq_target"][:-1].reshape(-1, tpo)  # [n, 5]
    noise = target[target[:, class_slot] == tokenizer.NOISE]
    if not len(noise):
        return np.zeros((0, 4))
    lo, _ = tokenizer.coord_token_range()
    values = tokenizer.dequantize(noise[:, :class_slot] - lo)  # [k, 4] in slot order
    xyxy = values[:, list(tokenizer.slot_axes)]
    h, w = tokenizer.normalizer_hw(tuple(example["image"].shape[-2:]))
    return (xyxy * torch.tensor([w, h, w, h])).numpy()


def draw_example(example: dict, task: DetectionTask, metadata, image_format: str, scale: float = 1.0) -> np.ndarray:
    """The augmented image (RGB) with the example's boxes and class names; noise objects dashed grey."""
    image = utils.convert_image_to_rgb(example["image"].permute(1, 2, 0).numpy(), image_format)
    visualizer = Visualizer(image, metadata=metadata, scale=scale)
    instances = example["instances"]
    classes = instances.gt_classes.tolist()
    names = metadata.get("thing_classes", None)
    labels = [names[c] if names and c < len(names) else str(c) for c in classes]
    colors = [_COLORS[c % len(_COLORS)] for c in classes]
    out = visualizer.overlay_instances(boxes=instances.gt_boxes, labels=labels, assigned_colors=colors)
    for x0, y0, x1, y1 in noise_boxes(example, task):
        visualizer.draw_box((x0, y0, x1, y1), edge_color="gray", line_style="--")
        visualizer.draw_text("noise", (x0, y0), color="gray", horizontal_alignment="left")
    return out.get_image()


# ---- writing -------------------------------------------------------------------------------------
def training_examples(cfg: CfgNode) -> Iterator[dict]:
    """Mapped training examples in the order training reads them (every view of a multi-crop input)."""
    for batch in Pix2SeqTrainer.build_train_loader(cfg):
        yield from expand_views(batch)


def example_name(index: int, example: dict, view: int | None) -> str:
    suffix = f"_v{view}" if view is not None else ""
    return f"{index:03d}_{example.get('image_id', 'image')}{suffix}"


def write_example(
    output_dir: str, name: str, example: dict, task: DetectionTask, cfg: CfgNode, scale: float
) -> tuple[str, str]:
    """Write ``name.jpg`` (drawing) and ``name.txt`` (tokens); returns both paths."""
    dataset = cfg.DATASETS.TRAIN[0]
    metadata = MetadataCatalog.get(dataset)
    drawing = draw_example(example, task, metadata, cfg.INPUT.FORMAT, scale)
    image_path, text_path = (os.path.join(output_dir, name + ext) for ext in (".jpg", ".txt"))
    Image.fromarray(drawing).save(image_path, quality=95)
    lines = header_lines(example, task, f"training set {tuple(cfg.DATASETS.TRAIN)}")
    lines += token_lines(example, task, metadata.get("thing_classes", None))
    with open(text_path, "w") as f:
        f.write("\n".join(lines) + "\n")
    return image_path, text_path


def main(argv: list[str] | None = None) -> list[tuple[str, str]]:
    """Write the first ``--num-images`` training examples; returns their (image, text) paths."""
    args = get_parser().parse_args(argv)
    cfg = prepare_config(load_config(args.config_file, args.opts), for_training=False)
    cfg.DATALOADER.NUM_WORKERS = 0  # a few examples: no worker processes
    cfg.freeze()
    task = build_task(cfg)
    if not isinstance(task, DetectionTask):
        raise ValueError(f"visualize_data draws boxes: MODEL.PIX2SEQ.TASKS must be detection, got {task.name!r}")
    os.makedirs(args.output_dir, exist_ok=True)
    views = cfg.INPUT.MULTI_CROP.NUM_VIEWS
    written = []
    for index, example in zip(range(args.num_images), training_examples(cfg)):
        view = index % views + 1 if views > 1 else None
        written.append(write_example(args.output_dir, example_name(index, example, view), example, task, cfg,
                                     args.scale))  # fmt: skip
    logger.info(f"wrote {len(written)} training examples (.jpg + .txt) to {args.output_dir}")
    return written


def cli(argv: list[str] | None = None) -> int:
    """The command line: console logging, ``main``; bad settings or files are ``error: ...``, exit status 1."""
    return run_tool(main, argv)


if __name__ == "__main__":
    sys.exit(cli())
