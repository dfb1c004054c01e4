"""Convert the official Pix2Seq TensorFlow checkpoints (google-research/pix2seq) to pix2seq_d2.

Reads a checkpoint folder (or prefix) with :class:`~.tf_checkpoint.TFCheckpoint`, reads the
architecture from the tensors (ResNet depth and widths or ViT patch size and width, layer
counts, widths, heads, FFN widths, vocabulary, decoder positions), the image size and bins from
the folder's ``config.json`` when there is one, and maps every ``model/...`` variable onto the
``Pix2Seq`` model of ``configs/official/``. Optimizer slots, step counters and the object graph
are on the ignore list; anything else unmapped is an error naming it.
"""

from __future__ import annotations

import json
import os
import re

from .converter import ConversionError, ConvertedCheckpoint, SourceTensors, family_config, finish
from .tf_checkpoint import TFCheckpoint

SUFFIX = "/.ATTRIBUTES/VARIABLE_VALUE"
IGNORE = [
    r"^_CHECKPOINTABLE_OBJECT_GRAPH$",
    r"^global_step/",
    r"^save_counter/",
    r"^optimizer/",
    r"/\.OPTIMIZER_SLOT/",
]
RESNET_DEPTHS = {(3, 4, 6, 3): 50, (3, 4, 23, 3): 101, (3, 8, 36, 3): 152}
VIT_FAMILIES = {(768, 12): "pix2seq_ViT_B", (1024, 24): "pix2seq_ViT_L"}
_LN = {"gamma": "weight", "beta": "bias"}
_BN = {"gamma": "weight", "beta": "bias", "moving_mean": "running_mean", "moving_variance": "running_var"}
_MHA = {"_query_dense": "q_proj", "_key_dense": "k_proj", "_value_dense": "v_proj", "_output_dense": "out_proj"}
# sub-module of one official transformer layer -> ours
_ENC_LAYER = {
    "mha_ln": "norm1",
    "mha": "self_attn",
    "mlp/layernorms/0": "norm2",
    "mlp/mlp_layers/0/dense1": "ffn.linear1",
    "mlp/mlp_layers/0/dense2": "ffn.linear2",
}
_DEC_LAYER = {
    "self_ln": "norm1",
    "self_mha": "self_attn",
    "cross_ln": "norm2",
    "cross_mha": "multihead_attn",
    "mlp/layernorms/0": "norm3",
    "mlp/mlp_layers/0/dense1": "ffn.linear1",
    "mlp/mlp_layers/0/dense2": "ffn.linear2",
}


def _key(name: str) -> str:
    return f"model/{name}{SUFFIX}"


def _dense(src: SourceTensors, out: dict, name: str, target: str) -> None:
    """A Keras Dense (kernel ``[in, out]``) or MultiHeadAttention projection -> ``target.weight/bias``."""
    kernel = src.take(_key(f"{name}/kernel"))
    if kernel.ndim == 3 and name.endswith("_output_dense"):  # [heads, head_dim, d]
        kernel = kernel.reshape(-1, kernel.shape[-1])
    elif kernel.ndim == 3:  # q/k/v: [d, heads, head_dim]
        kernel = kernel.reshape(kernel.shape[0], -1)
    out[f"{target}.weight"] = kernel.t().contiguous()
    out[f"{target}.bias"] = src.take(_key(f"{name}/bias")).reshape(-1)


def _norm(src: SourceTensors, out: dict, name: str, target: str, names: dict) -> None:
    for theirs, ours in names.items():
        out[f"{target}.{ours}"] = src.take(_key(f"{name}/{theirs}"))


def _conv(src: SourceTensors, out: dict, name: str, target: str) -> None:
    out[f"{target}.weight"] = src.take(_key(f"{name}/kernel")).permute(3, 2, 0, 1).contiguous()  # HWIO -> OIHW


def _layer(src: SourceTensors, out: dict, prefix: str, target: str, parts: dict) -> None:
    for theirs, ours in parts.items():
        name = f"{prefix}/{theirs}"
        if theirs.endswith("mha"):
            for k, v in _MHA.items():
                _dense(src, out, f"{name}/{k}", f"{target}.{ours}.{v}")
        elif "dense" in theirs:
            _dense(src, out, name, f"{target}.{ours}")
        else:
            _norm(src, out, name, f"{target}.{ours}", _LN)


def _count(src: SourceTensors, pattern: str) -> int:
    return len({m.group(1) for m in src.matching(pattern)})


def _resnet(src: SourceTensors, out: dict, overrides: dict) -> str:
    """The ResNet backbone -> ``backbone.*``; returns the output feature name."""
    base = "encoder/resnet"
    _conv(src, out, f"{base}/initial_conv_relu_max_pool/0/conv2d", "backbone.stem.conv1")
    _norm(src, out, f"{base}/initial_conv_relu_max_pool/2/bn", "backbone.stem.conv1.norm", _BN)
    groups = _count(src, f"model/{base}/block_groups/" + r"(\d+)/.*")
    blocks = [_count(src, f"model/{base}/block_groups/{g}/layers/" + r"(\d+)/.*") for g in range(groups)]
    for g, n in enumerate(blocks):
        for b in range(n):
            name, target = f"{base}/block_groups/{g}/layers/{b}", f"backbone.res{g + 2}.{b}"
            for i in range(3):
                _conv(src, out, f"{name}/conv_relu_dropblock_layers/{3 * i}/conv2d", f"{target}.conv{i + 1}")
                _norm(src, out, f"{name}/conv_relu_dropblock_layers/{3 * i + 1}/bn", f"{target}.conv{i + 1}.norm", _BN)
            if b == 0:
                _conv(src, out, f"{name}/projection_layers/0/conv2d", f"{target}.shortcut")
                _norm(src, out, f"{name}/projection_layers/1/bn", f"{target}.shortcut.norm", _BN)
    full = next((blocks_ for blocks_ in RESNET_DEPTHS if list(blocks_[: len(blocks)]) == blocks), None)
    if full is None or groups not in (3, 4):
        raise ConversionError(
            f"{src.path}: ResNet with {blocks} blocks per group is not a ResNet-50/101/152 (C4 or C5)"
        )
    stem = src.shape(_key(f"{base}/initial_conv_relu_max_pool/0/conv2d/kernel"))
    first = f"{base}/block_groups/0/layers/0/conv_relu_dropblock_layers"
    feature = f"res{groups + 1}"
    overrides.update({
        "MODEL.RESNETS.DEPTH": RESNET_DEPTHS[full],
        "MODEL.RESNETS.STEM_OUT_CHANNELS": stem[3],
        "MODEL.RESNETS.WIDTH_PER_GROUP": src.shape(_key(f"{first}/0/conv2d/kernel"))[3],
        "MODEL.RESNETS.RES2_OUT_CHANNELS": src.shape(_key(f"{first}/6/conv2d/kernel"))[3],
        "MODEL.RESNETS.OUT_FEATURES": [feature],
        "MODEL.PIX2SEQ.IN_FEATURE": feature,
    })  # fmt: skip
    return "pix2seq_R50_C4" if groups == 3 else "pix2seq_R50"


def _read_config_json(folder: str) -> dict:
    path = os.path.join(folder, "config.json")
    if not os.path.exists(path):
        return {}
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        raise ConversionError(f"{path}: not a readable JSON config ({e})") from e


def _image_size(config_json: dict, image_size: int | None, path: str) -> int:
    if image_size:
        return image_size
    size = config_json.get("task", {}).get("image_size") or config_json.get("model", {}).get("image_size")
    if size is None:
        raise ConversionError(f"{path}: no config.json with the image size; pass --image-size (640, 1024 or 1333)")
    size = size if isinstance(size, int) else size[0]
    return int(size)


def convert_official(path: str, image_size: int | None = None, dataset: str | None = None) -> ConvertedCheckpoint:
    """An official checkpoint (folder, prefix or ``.index``) -> the converted model.

    Args:
        image_size: the square the model was trained at (default: the folder's ``config.json``).
        dataset: "coco" or "objects365" (which class list the class tokens mean; default: from
            ``config.json``'s dataset name, else COCO).
    """
    ckpt = TFCheckpoint(path)
    src = SourceTensors(ckpt.index_path, ckpt.keys(), ckpt.read, IGNORE)
    strange = [n for n in src.names if not (n.startswith("model/") and n.endswith(SUFFIX))]
    if strange:
        raise ConversionError(f"{ckpt.index_path}: tensors that are neither model variables nor ignored: {strange}")
    folder = os.path.dirname(ckpt.prefix)
    config_json = _read_config_json(folder)
    size = _image_size(config_json, image_size, ckpt.index_path)
    out = src.weights()
    overrides: dict[str, object] = {}

    vit = _key("encoder/stem_conv/kernel") in src
    prefix = "backbone.encoder" if vit else "encoder"
    enc_layers = _count(src, re.escape("model/encoder/transformer_encoder/enc_layers/") + r"(\d+)/.*")
    dec_layers = _count(src, re.escape("model/decoder/decoder/dec_layers/") + r"(\d+)/.*")
    if not dec_layers:
        raise ConversionError(
            f"{ckpt.index_path}: no Pix2Seq decoder layers (model/decoder/decoder/dec_layers/...): "
            "not a Pix2Seq checkpoint?"
        )
    if _key("decoder/ar_decoder.Stoken_embedding") not in src:
        raise ConversionError(f"{ckpt.index_path}: tensor {_key('decoder/ar_decoder.Stoken_embedding')!r} is missing")
    enc_q = src.shape(_key("encoder/transformer_encoder/enc_layers/0/mha/_query_dense/kernel")) if enc_layers else None
    enc_dim = src.shape(_key("proj/kernel"))[0]
    enc_mlp = src.shape(_key("encoder/transformer_encoder/enc_layers/0/mlp/mlp_layers/0/dense1/kernel"))[1]
    if vit:
        _conv(src, out, "encoder/stem_conv", "backbone.patch_embed")
        out["backbone.patch_embed.bias"] = src.take(_key("encoder/stem_conv/bias"))
        _norm(src, out, "encoder/stem_ln", "backbone.patch_norm", _LN)
        family = VIT_FAMILIES.get((enc_dim, enc_layers), "pix2seq_ViT_B")
        overrides.update({
            "MODEL.VIT.PATCH_SIZE": src.shape(_key("encoder/stem_conv/kernel"))[0],
            "MODEL.VIT.EMBED_DIM": enc_dim, "MODEL.VIT.DEPTH": enc_layers, "MODEL.VIT.NUM_HEADS": enc_q[1],
            "MODEL.VIT.MLP_DIM": enc_mlp, "MODEL.PIX2SEQ.ENC_LAYERS": 0,
        })  # fmt: skip
    else:
        if not src.matching(re.escape("model/encoder/resnet/") + ".*"):  # neither encoder: name the ViT's stem
            raise ConversionError(
                f"{ckpt.index_path}: tensor {_key('encoder/stem_conv/kernel')!r} (ViT patch embedding) is missing "
                "and there are no ResNet tensors (model/encoder/resnet/...) either"
            )
        family = _resnet(src, out, overrides)
        _dense(src, out, "encoder/stem_projection", "input_proj.0")
        _norm(src, out, "encoder/stem_ln", "input_proj.1", _LN)
        overrides["MODEL.PIX2SEQ.ENC_LAYERS"] = enc_layers
    for i in range(enc_layers):
        _layer(src, out, f"encoder/transformer_encoder/enc_layers/{i}", f"{prefix}.layers.{i}", _ENC_LAYER)
    if enc_layers:
        _norm(src, out, "encoder/output_ln", f"{prefix}.norm", _LN)

    _dense(src, out, "proj", "memory_projection.proj")
    _norm(src, out, "proj_ln", "memory_projection.norm", _LN)
    _norm(src, out, "proj_mlp/layernorms/0", "memory_projection.mlp_norm", _LN)
    _dense(src, out, "proj_mlp/mlp_layers/0/dense1", "memory_projection.mlp.linear1")
    _dense(src, out, "proj_mlp/mlp_layers/0/dense2", "memory_projection.mlp.linear2")
    for i in range(dec_layers):
        _layer(src, out, f"decoder/decoder/dec_layers/{i}", f"decoder.layers.{i}", _DEC_LAYER)
    _norm(src, out, "decoder/output_ln", "decoder.norm", _LN)
    out["decoder.token_embed.weight"] = src.take(_key("decoder/ar_decoder.Stoken_embedding"))
    out["decoder.pos_embed.weight"] = src.take(_key("decoder/ar_decoder.Sseq_pos_embedding"))
    out["decoder.output_bias"] = src.take(_key("decoder/ar_decoder.Soutp_bias"))

    dec_q = src.shape(_key("decoder/decoder/dec_layers/0/self_mha/_query_dense/kernel"))
    dec_mlp = "decoder/decoder/dec_layers/0/mlp/mlp_layers/0"
    vocab, dec_dim = src.shape(_key("decoder/ar_decoder.Stoken_embedding"))
    bins = int(config_json.get("task", {}).get("quantization_bins", 1000))
    if vocab < 1000 + bins:
        raise ConversionError(
            f"{ckpt.index_path}: vocabulary of {vocab} tokens cannot hold {bins} bins from token 1000"
        )
    overrides.update({
        "MODEL.PIX2SEQ.HIDDEN_DIM": enc_dim,
        "MODEL.PIX2SEQ.NUM_HEADS": enc_q[1] if enc_q else 1,
        "MODEL.PIX2SEQ.DIM_FEEDFORWARD": enc_mlp,
        "MODEL.PIX2SEQ.DEC_HIDDEN_DIM": dec_dim,
        "MODEL.PIX2SEQ.DEC_NUM_HEADS": dec_q[1],
        "MODEL.PIX2SEQ.DEC_DIM_FEEDFORWARD": src.shape(_key(f"{dec_mlp}/dense1/kernel"))[1],
        "MODEL.PIX2SEQ.DEC_LAYERS": dec_layers,
        "MODEL.PIX2SEQ.MAX_SEQ_LEN": src.shape(_key("decoder/ar_decoder.Sseq_pos_embedding"))[0],
        "MODEL.PIX2SEQ.NUM_BINS": bins,
    })  # fmt: skip
    proj_hidden = src.shape(_key("proj_mlp/mlp_layers/0/dense1/kernel"))[1]
    if proj_hidden != dec_dim * (enc_mlp // enc_dim):
        raise ConversionError(
            f"{ckpt.index_path}: memory projection MLP width {proj_hidden} is not the decoder width {dec_dim} x "
            f"the encoder's MLP ratio {enc_mlp // enc_dim}"
        )
    dataset = dataset or ("objects365" if "365" in json.dumps(config_json.get("dataset", {})) + folder else "coco")
    if dataset == "objects365":
        family += "_obj365"
    converted = ConvertedCheckpoint(
        source=ckpt.prefix,
        source_kind="official",
        state_dict=out,
        base_config=family_config(family, size if dataset == "coco" else 640),
        overrides={**overrides, **size_overrides(size)},
        ignored=src.ignored,
        notes=[f"image size {size}, {bins} bins, {dataset} classes"],
    )
    return finish(converted, src)


def size_overrides(size: int) -> dict[str, object]:
    """Everything tied to the official model's square image size."""
    return {
        "INPUT.MIN_SIZE_TEST": size,
        "INPUT.MAX_SIZE_TEST": size,
        "INPUT.LSJ.IMAGE_SIZE": size,
        "MODEL.PIX2SEQ.PAD_TO_SQUARE": size,
        "MODEL.PIX2SEQ.TOKENIZER.COORD_NORMALIZER": size,
    }
