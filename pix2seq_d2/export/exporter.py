"""Export of a Pix2Seq model to TorchScript and ONNX, and greedy decoding of the export under ONNX Runtime.

The model is exported as two pure-tensor graphs:

* the image encoder (:class:`ExportableEncoder`): a normalised, padded image batch
  ``images [B, 3, H, W]`` and the unpadded sizes ``image_sizes [B, 2]`` (int64 h, w) -> what
  :meth:`Pix2Seq.encode` gives (``memory``, ``memory_pos``, ``padding``) plus every decoder layer's
  cross-attention keys/values of the memory, ``cross_k``/``cross_v [L, B, H, S, Dh]``;
* one cached decoder step (:class:`ExportableDecoderStep`): the previous token, its position (an
  int64 scalar tensor), the self-attention caches ``self_k``/``self_v [L, B, H, T_max, Dh]``, the
  cross-attention keys/values and the padding -> the next token's logits ``[B, V]`` and the caches
  with this position written. The write and the causal mask are ``torch.where`` over an arange,
  so the position stays a graph input.

Shapes: the image side is fixed at export (:func:`export_image_size`: ``PAD_TO_SQUARE`` or
``INPUT.MAX_SIZE_TEST``, every image padded at the bottom/right to that square, as the model pads
with ``PAD_TO_SQUARE``); the batch (both graphs) and the cache length ``T_max`` (step) are dynamic.
The outputs equal the PyTorch model's wherever it pads a batch to the same size (``PAD_TO_SQUARE``
equal to the export size, or every image of the batch that size); otherwise the bottom/right
borders of the backbone features see a different amount of padding.

Values at padded positions may differ between PyTorch and ONNX Runtime (the sine positions of fully
padded rows are sines of ~1e6 rad); attention masks them, so nothing downstream sees them.

ONNX: ``torch.onnx.export(dynamo=True)`` (torch.export + onnxscript, torch's default) or the
deprecated TorchScript-based exporter (``exporter="legacy"``); both give the same graphs' outputs.

:class:`OnnxPix2SeqRunner` runs the ONNX files on the CPU through :func:`~pix2seq_d2.modeling.decoding.decode`
itself (greedy, grammar, the model's stopping rule from ``MODEL.PIX2SEQ.DECODE``) and returns
``[{"instances": Instances}]`` through :meth:`Pix2Seq.detections`, like the model.
"""

from __future__ import annotations

import contextlib
import os
import warnings

import numpy as np
import torch
from detectron2.config import CfgNode
from detectron2.structures import ImageList
from torch import nn

from pix2seq_d2.config import ConfigError
from pix2seq_d2.modeling.decoding import DecodedSequences, decode
from pix2seq_d2.modeling.meta_arch.pix2seq import Pix2Seq
from pix2seq_d2.modeling.transformer import DecoderCache
from pix2seq_d2.tasks import DecodingOptions, build_task

__all__ = [
    "ExportableEncoder",
    "ExportableDecoderStep",
    "OnnxPix2SeqRunner",
    "export_image_size",
    "example_inputs",
    "export_torchscript",
    "export_onnx",
    "greedy_decoding_options",
]

ENCODER_INPUTS = ["images", "image_sizes"]
ENCODER_OUTPUTS = ["memory", "memory_pos", "padding", "cross_k", "cross_v"]
STEP_INPUTS = ["token", "position", "self_k", "self_v", "cross_k", "cross_v", "padding"]
STEP_OUTPUTS = ["logits", "self_k_out", "self_v_out"]
# the dynamic axes of every input and output (the rest is fixed at export)
DYNAMIC_AXES = {
    **{name: {0: "batch"} for name in ("images", "image_sizes", "memory", "memory_pos", "padding", "token", "logits")},
    **{name: {1: "batch"} for name in ("cross_k", "cross_v")},
    **{name: {1: "batch", 3: "cache_len"} for name in ("self_k", "self_v", "self_k_out", "self_v_out")},
    "position": {},
}
ONNX_EXPORTERS = ("dynamo", "legacy")
FILES = {"torchscript": ("encoder.ts", "step.ts"), "onnx": ("encoder.onnx", "step.onnx")}


class ExportableEncoder(nn.Module):
    """``Pix2Seq.encode`` on tensors, plus the decoder's cross-attention keys/values of the memory.

    ``images [B, 3, H, W]`` (normalised, padded), ``image_sizes`` int64 ``[B, 2]`` -> ``memory [B, S, D]``,
    ``memory_pos [B, S, D]`` (zeros where the model has none: adding it changes nothing),
    ``padding`` bool ``[B, S]`` (True on padding; all False without ``USE_PADDING_MASK``) and
    ``cross_k``/``cross_v [L, B, H, S, Dh]``.
    """

    def __init__(self, model: Pix2Seq):
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor, image_sizes: torch.Tensor) -> tuple[torch.Tensor, ...]:
        memory, pos, padding = self.model.encode_padded(images, image_sizes)
        kv = self.model.decoder.memory_kv(memory, pos)
        cross_k = torch.stack([k for k, _ in kv])  # [L, B, H, S, Dh]
        cross_v = torch.stack([v for _, v in kv])
        if padding is None:  # USE_PADDING_MASK False: nothing masked
            padding = torch.zeros(memory.shape[:2], dtype=torch.bool, device=memory.device)
        return memory, torch.zeros_like(memory) if pos is None else pos, padding, cross_k, cross_v


class ExportableDecoderStep(nn.Module):
    """``TokenDecoder.step`` for one position with the cache as tensors in and out.

    ``token [B]`` int64, ``position`` int64 scalar, ``self_k``/``self_v [L, B, H, T_max, Dh]``,
    ``cross_k``/``cross_v [L, B, H, S, Dh]``, ``padding`` bool ``[B, S]`` -> ``logits [B, V]`` and
    the caches with ``position`` written. Cache slots beyond ``position`` are masked out; they must
    hold finite values (start from zeros).
    """

    def __init__(self, model: Pix2Seq):
        super().__init__()
        self.decoder = model.decoder

    def forward(
        self,
        token: torch.Tensor,
        position: torch.Tensor,
        self_k: torch.Tensor,
        self_v: torch.Tensor,
        cross_k: torch.Tensor,
        cross_v: torch.Tensor,
        padding: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        dec = self.decoder
        x = dec.token_embed(token[:, None])  # [B, 1, D]
        if dec.pos_embed is not None:
            x = x + dec.pos_embed(position.reshape(1))
        slots = torch.arange(self_k.shape[3], device=token.device)  # [T_max]
        write = (slots == position)[:, None]  # [T_max, 1]: broadcasts over [B, H, T_max, Dh]
        visible = (slots <= position)[None]  # [1, T_max]: the causal mask of the one query
        memory_mask = ~padding[:, None, None, :]  # [B, 1, 1, S]
        new_k, new_v = [], []
        for i, layer in enumerate(dec.layers):

            def self_attention(h: torch.Tensor, i: int = i, layer: nn.Module = layer) -> torch.Tensor:
                q, k, v = layer.self_attention_qkv(h)
                new_k.append(torch.where(write, k, self_k[i]))  # [B, H, T_max, Dh]
                new_v.append(torch.where(write, v, self_v[i]))
                return layer.self_attn.attend(q, new_k[-1], new_v[-1], attn_mask=visible)

            x = layer.with_self_attention(x, self_attention, cross_k[i], cross_v[i], memory_mask)
        return dec._logits(x)[:, 0], torch.stack(new_k), torch.stack(new_v)


def export_image_size(cfg: CfgNode, model: Pix2Seq) -> int:
    """The square side images are padded to in the export: ``PAD_TO_SQUARE`` or ``INPUT.MAX_SIZE_TEST``,
    rounded up to the backbone's size divisibility."""
    size = model.pad_to_square or cfg.INPUT.MAX_SIZE_TEST
    div = max(model.backbone.size_divisibility, 1)
    return -(-size // div) * div


def example_inputs(model: Pix2Seq, image_size: int, batch: int = 2, cache_len: int = 10) -> tuple[tuple, tuple]:
    """Inputs to trace/export the encoder and the step with: ``(images, image_sizes)``, and the
    step's inputs (at position 1) built from the encoder's outputs."""
    images = torch.randn(batch, 3, image_size, image_size)
    sizes = torch.tensor([[image_size, image_size]] + [[image_size * 3 // 4, image_size // 2]] * (batch - 1))
    with torch.no_grad():
        _, _, padding, cross_k, cross_v = ExportableEncoder(model).eval()(images, sizes)
    num_layers, _, heads, _, dh = cross_k.shape
    cache = torch.zeros(num_layers, batch, heads, cache_len, dh)
    token = torch.full((batch,), model.tokenizer.START, dtype=torch.long)
    return (images, sizes), (token, torch.tensor(1), cache, cache.clone(), cross_k, cross_v, padding)


@contextlib.contextmanager
def _quiet_exporters():
    """Hide the exporters' warnings that do not apply here: the deprecation of ``torch.jit.trace`` and of
    the legacy ONNX exporter (chosen explicitly), the trace turning the fixed feature width into a
    constant, and dynamo naming two equal axes once."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="`torch.jit.trace", category=FutureWarning)
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning, module=r"pix2seq_d2\.transformer")
        warnings.filterwarnings("ignore", message="# The axis name", category=UserWarning)
        warnings.filterwarnings("ignore", message="You are using the legacy TorchScript-based ONNX export")
        warnings.filterwarnings("ignore", message="The feature will be removed", module=r"torch\.onnx")
        yield


def export_torchscript(model: Pix2Seq, output_dir: str, image_size: int) -> tuple[str, str]:
    """Trace the encoder and the step with ``torch.jit.trace`` -> the two ``.ts`` files' paths."""
    enc_inputs, step_inputs = example_inputs(model.eval(), image_size)
    paths = tuple(os.path.join(output_dir, name) for name in FILES["torchscript"])
    with torch.no_grad(), _quiet_exporters():
        for module, inputs, path in zip((ExportableEncoder, ExportableDecoderStep), (enc_inputs, step_inputs), paths):
            torch.jit.trace(module(model).eval(), inputs, check_trace=False).save(path)
    return paths


def export_onnx(
    model: Pix2Seq, output_dir: str, image_size: int, exporter: str = "dynamo", opset: int = 18
) -> tuple[str, str]:
    """Export the encoder and the step to ONNX with batch and cache length dynamic -> the two files' paths.

    ``exporter``: "dynamo" (``torch.onnx.export(dynamo=True)``, torch.export + onnxscript: the default
    of torch >= 2.9) or "legacy" (the deprecated TorchScript-based exporter: same outputs, exports
    about 20x faster)."""
    if exporter not in ONNX_EXPORTERS:
        raise ValueError(f"unknown ONNX exporter {exporter!r}; known: {ONNX_EXPORTERS}")
    enc_inputs, step_inputs = example_inputs(model.eval(), image_size)
    dims = {"batch": torch.export.Dim("batch", min=1), "cache_len": torch.export.Dim("cache_len", min=2)}
    paths = tuple(os.path.join(output_dir, name) for name in FILES["onnx"])
    specs = [
        (ExportableEncoder, enc_inputs, ENCODER_INPUTS, ENCODER_OUTPUTS),
        (ExportableDecoderStep, step_inputs, STEP_INPUTS, STEP_OUTPUTS),
    ]
    with torch.no_grad(), _quiet_exporters():
        for (module, inputs, input_names, output_names), path in zip(specs, paths):
            if exporter == "dynamo":
                shapes = [{i: dims[d] for i, d in DYNAMIC_AXES[name].items()} or None for name in input_names]
                kwargs = {"dynamic_shapes": tuple(shapes), "external_data": False}
            else:
                kwargs = {"dynamic_axes": {name: DYNAMIC_AXES[name] for name in input_names + output_names}}
            torch.onnx.export(
                module(model).eval(), inputs, path, dynamo=exporter == "dynamo", opset_version=opset,
                input_names=input_names, output_names=output_names, verbose=False, **kwargs,
            )  # fmt: skip
    return paths


# ---- ONNX Runtime --------------------------------------------------------------------------
class _OnnxStepDecoder:
    """The ``start``/``step`` interface of :class:`~pix2seq_d2.modeling.transformer.TokenDecoder` on the step
    session, so that :func:`~pix2seq_d2.modeling.decoding.decode` runs the export with its own loop (grammar,
    stopping rule, finished rows leaving the batch). Holds one batch's cross-attention keys/values."""

    def __init__(self, session, cross_k: torch.Tensor, cross_v: torch.Tensor):
        self.session, self.cross_k, self.cross_v = session, cross_k, cross_v
        self.vocab_size = int(session.get_outputs()[0].shape[-1])

    def start(self, memory: torch.Tensor, memory_pos, memory_padding: torch.Tensor, max_len: int) -> DecoderCache:
        num_layers, b, heads, _, dh = self.cross_k.shape
        shape = (num_layers, b, heads, max_len, dh)  # zeros: slots not written yet are masked, never NaN
        mask = ~memory_padding[:, None, None, :]  # [B, 1, 1, S]
        return DecoderCache(torch.zeros(shape), torch.zeros(shape), self.cross_k, self.cross_v, mask)

    def step(self, tokens: torch.Tensor, cache: DecoderCache) -> torch.Tensor:
        """``tokens [B, 1]`` at position ``cache.length`` -> logits ``[B, 1, V]``; the cache advances."""
        if tokens.shape[1] != 1:
            raise ValueError("the exported step takes one position at a time")
        inputs = (tokens[:, 0], torch.tensor(cache.length), cache.self_k, cache.self_v, cache.cross_k,
                  cache.cross_v, ~cache.memory_mask[:, 0, 0])  # fmt: skip
        feeds = {name: np.ascontiguousarray(x.numpy()) for name, x in zip(STEP_INPUTS, inputs)}
        logits, cache.self_k, cache.self_v = (torch.from_numpy(x) for x in self.session.run(None, feeds))
        cache.length += 1
        return logits[:, None]


def greedy_decoding_options(cfg: CfgNode) -> DecodingOptions:
    """``MODEL.PIX2SEQ.DECODE`` as :class:`DecodingOptions`; a :class:`ConfigError` unless greedy."""
    decoding = DecodingOptions.from_config(cfg)
    if decoding.strategy != "greedy":
        raise ConfigError(
            [f"MODEL.PIX2SEQ.DECODE.STRATEGY={decoding.strategy!r}: the ONNX runner decodes greedily only; "
             "set MODEL.PIX2SEQ.DECODE.STRATEGY greedy"]
        )  # fmt: skip
    return decoding


class OnnxPix2SeqRunner:
    """The exported encoder and step under ONNX Runtime (CPU): detectron2 input dicts in,
    ``[{"instances": Instances}]`` out, decoded greedily as :meth:`Pix2Seq.inference` does.

    Args:
        cfg: the model's config (pixel mean/std, padding, tokenizer, ``MODEL.PIX2SEQ.DECODE``, test
            thresholds). ``MODEL.PIX2SEQ.DECODE.STRATEGY`` must be "greedy".
        encoder_path, step_path: the ONNX files of :func:`export_onnx`.
        num_threads: ONNX Runtime intra-op threads (0: its default).
    """

    def __init__(self, cfg: CfgNode, encoder_path: str, step_path: str, num_threads: int = 0):
        import onnxruntime as ort

        self.decoding = greedy_decoding_options(cfg)
        p = cfg.MODEL.PIX2SEQ
        self.task = build_task(cfg)  # the model's task: prompt, grammar, outputs
        self.tokenizer = self.task.tokenizer
        self.pixel_mean = torch.tensor(cfg.MODEL.PIXEL_MEAN).view(-1, 1, 1)
        self.pixel_std = torch.tensor(cfg.MODEL.PIXEL_STD).view(-1, 1, 1)
        self.pad_value = p.PAD_VALUE
        options = ort.SessionOptions()
        # No spin-waiting after a run: the decoding loop's torch ops run between the steps' runs.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        if num_threads:
            options.intra_op_num_threads = num_threads
        providers = ["CPUExecutionProvider"]
        self.encoder = ort.InferenceSession(encoder_path, options, providers=providers)
        self.step = ort.InferenceSession(step_path, options, providers=providers)
        self.image_size = int(self.encoder.get_inputs()[0].shape[-1])  # the square side fixed at export
        vocab = self.step.get_outputs()[0].shape[-1]
        if vocab != self.tokenizer.vocab_size:
            raise ConfigError(
                [f"the exported step gives {vocab} logits, but the config's vocabulary has "
                 f"{self.tokenizer.vocab_size} tokens: use the config the model was exported with"]
            )  # fmt: skip

    @classmethod
    def from_dir(cls, cfg: CfgNode, directory: str, num_threads: int = 0) -> OnnxPix2SeqRunner:
        """The runner of the files :func:`export_onnx` wrote to ``directory``."""
        return cls(cfg, *(os.path.join(directory, name) for name in FILES["onnx"]), num_threads=num_threads)

    def preprocess(self, batched_inputs: list[dict]) -> ImageList:
        """Normalise like the model and pad every image to the export's square."""
        images = [(x["image"] - self.pixel_mean) / self.pixel_std for x in batched_inputs]
        too_big = [tuple(x.shape[-2:]) for x in images if max(x.shape[-2:]) > self.image_size]
        if too_big:
            raise ValueError(f"images of size {too_big} do not fit the exported size {self.image_size}")
        return ImageList.from_tensors(images, 0, self.pad_value, {"square_size": self.image_size})

    def encode(self, images: ImageList) -> tuple[torch.Tensor, ...]:
        """The encoder session on a preprocessed batch -> the tensors of ``ENCODER_OUTPUTS``."""
        sizes = torch.tensor(images.image_sizes, dtype=torch.long).reshape(-1, 2)  # [B, 2]
        feeds = {"images": images.tensor.numpy(), "image_sizes": sizes.numpy()}
        return tuple(torch.from_numpy(x) for x in self.encoder.run(None, feeds))

    @torch.no_grad()
    def generate(self, batched_inputs: list[dict]) -> tuple[DecodedSequences, ImageList]:
        """Like :meth:`Pix2Seq.generate` (with the model's decoding options)."""
        images = self.preprocess(batched_inputs)
        memory, pos, padding, cross_k, cross_v = self.encode(images)
        decoder = _OnnxStepDecoder(self.step, cross_k, cross_v)
        return decode(decoder, self.task, memory, pos, padding, self.decoding), images

    def outputs(
        self, batched_inputs: list[dict], sequences: DecodedSequences, images: ImageList, do_postprocess: bool = True
    ) -> list[dict]:
        """:meth:`Pix2Seq.outputs` with this runner's task and decoding options."""
        return self.task.outputs(batched_inputs, sequences, images, do_postprocess, self.decoding)

    def __call__(self, batched_inputs: list[dict], do_postprocess: bool = True) -> list[dict]:
        """-> ``[{"instances": Instances}]``, as :meth:`Pix2Seq.inference`."""
        return self.outputs(batched_inputs, *self.generate(batched_inputs), do_postprocess)
