"""Convert Pretrained-Pix2Seq checkpoints (``checkpoint.pth`` of its ``main.py``) to pix2seq_d2.

The file is a dict ``{"model": state_dict, "optimizer", "lr_scheduler", "epoch", "args": argparse.Namespace,
...}``. It is loaded by the one weights-only loader, which allows ``argparse.Namespace`` and nothing
else, so no code in it runs. Widths, layer counts and the vocabulary are read from the
tensors (the torchvision ResNet's widths too); the number of attention heads is not in any
tensor and comes from ``args.nheads``.
"""

from __future__ import annotations

import argparse
import os
import re

import torch

from pix2seq_d2.checkpoint import NotACheckpointError, UntrustedCheckpointError, load_weights_only

from .converter import ConversionError, ConvertedCheckpoint, SourceTensors, family_config, finish
from .official import RESNET_DEPTHS

IGNORE: list[str] = []  # every tensor of "model" is part of the model; other top-level entries are not read
_BN = ("weight", "bias", "running_mean", "running_var")


def load_pretrained_pix2seq(path: str) -> tuple[dict[str, torch.Tensor], argparse.Namespace | None]:
    """-> the ``model`` state dict and the pickled ``args`` (None when absent), read by the one weights-only
    loader (:func:`~pix2seq_d2.checkpoint.load_weights_only`): no code in the file runs."""
    if not os.path.exists(path):
        raise ConversionError(f"{path}: no such file")
    try:
        checkpoint = load_weights_only(path, trusted=False, detect_layouts=False)
    except UntrustedCheckpointError as e:
        raise ConversionError(
            f"{path}: refused to load: {e.reason}, which is not a tensor, container or argparse.Namespace; loading "
            "it could run code (nothing was executed)"
        ) from e
    except NotACheckpointError as e:
        raise ConversionError(f"{path}: not a loadable Pretrained-Pix2Seq checkpoint (it is {e.what})") from e
    if not isinstance(checkpoint, dict) or not isinstance(checkpoint.get("model"), dict):
        raise ConversionError(f"{path}: expected a dict with a 'model' state dict (Pretrained-Pix2Seq main.py format)")
    args = checkpoint.get("args")
    return checkpoint["model"], args if isinstance(args, argparse.Namespace) else None


def _split_qkv(src: SourceTensors, out: dict, weight: str, bias: str, target: str) -> None:
    """A fused ``[3d, d]`` projection (rows q; k; v) -> ``target.{q,k,v}_proj``."""
    for leaf, name in (("weight", weight), ("bias", bias)):
        for part, rows in zip(("q_proj", "k_proj", "v_proj"), src.take(name).chunk(3)):
            out[f"{target}.{part}.{leaf}"] = rows.contiguous()


def _in_proj(module: str) -> tuple[str, str]:
    """``nn.MultiheadAttention``'s fused projection names."""
    return f"{module}.in_proj_weight", f"{module}.in_proj_bias"


def _copy(src: SourceTensors, out: dict, name: str, target: str, leaves=("weight", "bias")) -> None:
    for leaf in leaves:
        out[f"{target}.{leaf}"] = src.take(f"{name}.{leaf}")


def _count(src: SourceTensors, pattern: str) -> int:
    return len({m.group(1) for m in src.matching(pattern)})


def _backbone(src: SourceTensors, out: dict, overrides: dict) -> None:
    body = "backbone.0.body"
    _copy(src, out, f"{body}.conv1", "backbone.stem.conv1", ("weight",))
    _copy(src, out, f"{body}.bn1", "backbone.stem.conv1.norm", _BN)
    blocks = [_count(src, re.escape(f"{body}.layer{g}.") + r"(\d+)\..*") for g in range(1, 5)]
    if tuple(blocks) not in RESNET_DEPTHS:
        raise ConversionError(
            f"{src.path}: torchvision ResNet with {blocks} blocks per layer is not a ResNet-50/101/152"
        )
    for g, n in enumerate(blocks, start=1):
        for b in range(n):
            name, target = f"{body}.layer{g}.{b}", f"backbone.res{g + 1}.{b}"
            for i in (1, 2, 3):
                _copy(src, out, f"{name}.conv{i}", f"{target}.conv{i}", ("weight",))
                _copy(src, out, f"{name}.bn{i}", f"{target}.conv{i}.norm", _BN)
            if b == 0:
                _copy(src, out, f"{name}.downsample.0", f"{target}.shortcut", ("weight",))
                _copy(src, out, f"{name}.downsample.1", f"{target}.shortcut.norm", _BN)
    overrides.update({
        "MODEL.RESNETS.DEPTH": RESNET_DEPTHS[tuple(blocks)],
        "MODEL.RESNETS.STEM_OUT_CHANNELS": src.shape(f"{body}.conv1.weight")[0],
        "MODEL.RESNETS.WIDTH_PER_GROUP": src.shape(f"{body}.layer1.0.conv1.weight")[0],
        "MODEL.RESNETS.RES2_OUT_CHANNELS": src.shape(f"{body}.layer1.0.conv3.weight")[0],
    })  # fmt: skip


def convert_pretrained_pix2seq(path: str, num_heads: int | None = None) -> ConvertedCheckpoint:
    """A Pretrained-Pix2Seq ``checkpoint.pth`` -> the converted model (``num_heads`` overrides ``args.nheads``)."""
    state, args = load_pretrained_pix2seq(path)
    src = SourceTensors(path, state.keys(), lambda name: state[name], IGNORE)
    absent = [name for name in ("transformer.vocal_classifier.weight", "input_proj.0.weight") if name not in src]
    if absent:
        raise ConversionError(
            f"{path}: tensor(s) {', '.join(repr(name) for name in absent)} missing from 'model': "
            "not a (complete) Pretrained-Pix2Seq checkpoint"
        )
    heads = num_heads or getattr(args, "nheads", None)
    if not heads:
        raise ConversionError(
            f"{path}: the number of attention heads is in no tensor and the file has no args.nheads; pass --num-heads"
        )
    width = src.shape("transformer.vocal_classifier.weight")[1]
    if int(heads) <= 0 or width % int(heads):
        raise ConversionError(
            f"{path}: the transformer width {width} is not divisible into {heads} attention heads "
            f"({'--num-heads' if num_heads else 'args.nheads'})"
        )
    out = src.weights()
    overrides: dict[str, object] = {}
    _backbone(src, out, overrides)
    _copy(src, out, "input_proj.0", "input_proj.0")
    _copy(src, out, "input_proj.1", "input_proj.1")
    enc_layers = _count(src, r"transformer\.encoder\.layers\.(\d+)\..*")
    dec_layers = _count(src, r"transformer\.decoder\.layers\.(\d+)\..*")
    for i in range(enc_layers):
        name, target = f"transformer.encoder.layers.{i}", f"encoder.layers.{i}"
        _split_qkv(src, out, *_in_proj(f"{name}.self_attn"), f"{target}.self_attn")
        _copy(src, out, f"{name}.self_attn.out_proj", f"{target}.self_attn.out_proj")
        for theirs, ours in (
            ("linear1", "ffn.linear1"),
            ("linear2", "ffn.linear2"),
            ("norm1", "norm1"),
            ("norm2", "norm2"),
        ):
            _copy(src, out, f"{name}.{theirs}", f"{target}.{ours}")
    for i in range(dec_layers):
        name, target = f"transformer.decoder.layers.{i}", f"decoder.layers.{i}"
        _split_qkv(src, out, f"{name}.self_attn.qkv.weight", f"{name}.self_attn.qkv.bias", f"{target}.self_attn")
        _copy(src, out, f"{name}.self_attn.proj", f"{target}.self_attn.out_proj")
        _split_qkv(src, out, *_in_proj(f"{name}.multihead_attn"), f"{target}.multihead_attn")
        _copy(src, out, f"{name}.multihead_attn.out_proj", f"{target}.multihead_attn.out_proj")
        for theirs, ours in (("linear1", "ffn.linear1"), ("linear2", "ffn.linear2")):
            _copy(src, out, f"{name}.{theirs}", f"{target}.{ours}")
        for norm in ("norm1", "norm2", "norm3"):
            _copy(src, out, f"{name}.{norm}", f"{target}.{norm}")
    _copy(src, out, "transformer.decoder.norm", "decoder.norm")
    out["decoder.output_proj.weight"] = src.take("transformer.vocal_classifier.weight")
    out["decoder.output_bias"] = src.take("transformer.vocal_classifier.bias")

    vocab, dim = src.shape("transformer.vocal_classifier.weight")
    real = src.take("transformer.vocal_embed.weight")  # [vocab - 2, d]: every token but EOS and NOISE
    start = src.take("transformer.det_embed.weight")  # [1, d]
    if real.shape[0] != vocab - 2 or start.shape != (1, dim):
        raise ConversionError(
            f"{path}: vocal_embed {tuple(real.shape)} / det_embed {tuple(start.shape)} do not fit a {vocab}-token "
            "output vocabulary (expected vocab - 2 input rows and one start row)"
        )
    # Input rows: the real tokens, then EOS and NOISE (never fed to this model: zeros), then START.
    out["decoder.token_embed.weight"] = torch.cat([real, real.new_zeros(2, dim), start])
    overrides.update({
        "MODEL.PIX2SEQ.HIDDEN_DIM": dim,
        "MODEL.PIX2SEQ.NUM_HEADS": int(heads),
        "MODEL.PIX2SEQ.ENC_LAYERS": enc_layers,
        "MODEL.PIX2SEQ.DEC_LAYERS": dec_layers,
        "MODEL.PIX2SEQ.DIM_FEEDFORWARD": src.shape("transformer.encoder.layers.0.linear1.weight")[0],
        "MODEL.PIX2SEQ.NUM_BINS": vocab - 93,  # bins, 91 class tokens (COCO ids 0..90), EOS, NOISE
    })  # fmt: skip
    converted = ConvertedCheckpoint(
        source=path,
        source_kind="pretrained_pix2seq",
        state_dict=out,
        base_config=family_config("pix2seq_pretrained_R50", 1333),
        overrides=overrides,
        notes=[f"attention heads from {'--num-heads' if num_heads else 'args.nheads'}: {heads}"],
    )
    return finish(converted, src)
