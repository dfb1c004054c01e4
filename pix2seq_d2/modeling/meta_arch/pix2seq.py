"""The ``Pix2Seq`` meta-architecture: backbone -> transformer encoder -> token decoder.

Training returns ``{"loss_seq": ...}``, the token-weighted cross-entropy of the target
sequences. Inputs from :class:`~pix2seq_d2.data.dataset_mapper.Pix2SeqDatasetMapper` carry them
(``seq_input``/``seq_target``/``seq_weight``); inputs from any other detectron2 mapper carry
``instances``, from which the model makes them itself, on its device, with the same code
(:mod:`pix2seq_d2.tasks.training_sequences`), seeded by (``SEED``, worker, trainer iteration) so that
a resumed run draws what the uninterrupted run drew. Inference
decodes object sequences and returns ``[{"instances": Instances}]`` in each image's
original size, like every detectron2 model.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from detectron2.config import CfgNode, configurable
from detectron2.layers import ShapeSpec
from detectron2.modeling import META_ARCH_REGISTRY, Backbone, build_backbone
from detectron2.structures import ImageList
from detectron2.utils import comm
from torch import nn

from pix2seq_d2.data.dataset_mapper import expand_views
from pix2seq_d2.modeling.decoding import DecodedSequences, decode
from pix2seq_d2.modeling.losses import check_finite_loss, sequence_loss
from pix2seq_d2.modeling.transformer import (
    MemoryProjection,
    TokenDecoder,
    TransformerEncoder,
    sincos_position_table,
    sine_position_encoding,
)
from pix2seq_d2.tasks import DecodingOptions, Pix2SeqTokenizer, Task, TokenSequences, build_task
from pix2seq_d2.utils.events import current_training_iteration
from pix2seq_d2.utils.seeding import process_seed, sequence_seed
from pix2seq_d2.utils.structures import image_sizes_tensor

POSITION_ENCODINGS = ("sine", "sine_unnormalized", "sincos", "none")
INPUT_PROJECTIONS = ("conv", "conv_gn", "linear_ln", "identity")
PROJECTIONS_ON_POSITIONS = ("linear_ln", "identity")  # the others act on the feature map

__all__ = ["Pix2Seq", "build_input_projection", "pad_sequences", "token_decoder"]


def pad_sequences(seqs: list[torch.Tensor], pad_value: float) -> torch.Tensor:
    """Right-pad 1-D tensors to the longest one in the batch -> ``[B, T_max]``."""
    return torch.nn.utils.rnn.pad_sequence(seqs, batch_first=True, padding_value=pad_value)


def build_input_projection(kind: str, in_channels: int, dim: int, norm_eps: float = 1e-5) -> nn.Module:
    """The layer from backbone channels to the encoder width (``MODEL.PIX2SEQ.INPUT_PROJ``).

    ``PROJECTIONS_ON_POSITIONS`` act on the flattened positions ``[B, h*w, C]``, the others on the
    feature map ``[B, C, h, w]`` (see :meth:`Pix2Seq.encoder_input`).
    """
    if kind == "conv":
        return nn.Conv2d(in_channels, dim, kernel_size=1)
    if kind == "conv_gn":
        return nn.Sequential(nn.Conv2d(in_channels, dim, kernel_size=1), nn.GroupNorm(32, dim))
    if kind == "linear_ln":
        return nn.Sequential(nn.Linear(in_channels, dim), nn.LayerNorm(dim, eps=norm_eps))
    if kind == "identity":
        if in_channels != dim:
            raise ValueError(f"INPUT_PROJ 'identity' needs backbone channels ({in_channels}) = HIDDEN_DIM ({dim})")
        return nn.Identity()
    raise ValueError(f"unknown MODEL.PIX2SEQ.INPUT_PROJ {kind!r}; known: {INPUT_PROJECTIONS}")


def token_decoder(
    *,
    task: Task,
    max_objects: int,
    num_layers: int,
    dim: int,
    num_heads: int,
    ffn_dim: int,
    dropout: float = 0.1,
    pre_norm: bool = False,
    share_embedding: bool = True,
    drop_path: float = 0.0,
    activation: str = "relu",
    norm_eps: float = 1e-5,
    learned_positions: bool = True,
    max_len: int = 0,
) -> TokenDecoder:
    """A ``TokenDecoder`` with the (output and input) vocabulary of ``task``'s tokenizer and positions for
    its sequences of up to ``max_objects`` items (``max_len`` positions instead when > 0: ``MAX_SEQ_LEN``)."""
    tokenizer = task.tokenizer
    return TokenDecoder(
        tokenizer.vocab_size,
        max_len or task.max_sequence_length(max_objects),
        num_layers,
        dim,
        num_heads,
        ffn_dim,
        dropout=dropout,
        pre_norm=pre_norm,
        share_embedding=share_embedding,
        drop_path=drop_path,
        activation=activation,
        norm_eps=norm_eps,
        input_vocab_size=tokenizer.input_vocab_size,
        learned_positions=learned_positions,
    )


@META_ARCH_REGISTRY.register()
class Pix2Seq(nn.Module):
    """Pix2Seq (Chen et al., ICLR 2022 and NeurIPS 2022) as a detectron2 meta-architecture: an image
    encoder and a token decoder that writes the sequences of a task (:class:`~pix2seq_d2.tasks.Task`;
    object detection by default), which also turns them into the model's outputs."""

    @configurable
    def __init__(
        self,
        *,
        backbone: Backbone,
        in_feature: str,
        encoder: TransformerEncoder,
        decoder: TokenDecoder,
        task: Task,
        pixel_mean: tuple[float, ...],
        pixel_std: tuple[float, ...],
        input_proj: str = "conv",
        position_encoding: str = "sine",
        use_padding_mask: bool = True,
        pad_to_square: int = 0,
        pad_value: float = 0.0,
        memory_projection: MemoryProjection | None = None,
        norm_eps: float = 1e-5,
        sequence_seed: int = 0,
    ):
        """
        Args:
            encoder: the transformer encoder; its width is that of its first layer (or the
                decoder's when it has none and no memory projection).
            task: the task the decoder writes (prompt, grammar, training sequences from ``instances``,
                decoding options, outputs); its tokenizer is the decoder's vocabulary.
            input_proj, position_encoding, use_padding_mask, pad_to_square, pad_value,
            memory_projection: see ``MODEL.PIX2SEQ`` in pix2seq_d2/config/defaults.py.
            sequence_seed: base seed of the randomness of training sequences the model makes itself
                (inputs from any detectron2 mapper) inside a detectron2 trainer.
        """
        super().__init__()
        if position_encoding not in POSITION_ENCODINGS:
            raise ValueError(
                f"unknown MODEL.PIX2SEQ.POSITION_ENCODING {position_encoding!r}; known: {POSITION_ENCODINGS}"
            )
        self.backbone = backbone
        self.in_feature = in_feature
        enc_dim = (
            memory_projection.proj.in_features if memory_projection is not None else decoder.token_embed.embedding_dim
        )
        self.input_proj = build_input_projection(
            input_proj, backbone.output_shape()[in_feature].channels, enc_dim, norm_eps
        )
        self.input_proj_on_positions = input_proj in PROJECTIONS_ON_POSITIONS
        self.position_encoding = position_encoding
        self.use_padding_mask = use_padding_mask
        self.pad_to_square = pad_to_square
        self.pad_value = pad_value
        self.memory_projection = memory_projection
        self.encoder = encoder
        self.decoder = decoder
        self.task = task
        self.sequence_seed = sequence_seed
        self._sequence_calls = (-1, 0)  # (trainer iteration, forwards in it) of the last sequences made
        self.register_buffer("pixel_mean", torch.tensor(pixel_mean).view(-1, 1, 1), False)
        self.register_buffer("pixel_std", torch.tensor(pixel_std).view(-1, 1, 1), False)

    @classmethod
    def from_config(cls, cfg: CfgNode) -> dict:
        p = cfg.MODEL.PIX2SEQ
        backbone = build_backbone(cfg, ShapeSpec(channels=len(cfg.MODEL.PIXEL_MEAN)))
        if p.IN_FEATURE not in backbone.output_shape():
            raise ValueError(
                f"MODEL.PIX2SEQ.IN_FEATURE={p.IN_FEATURE!r} is not an output of the backbone "
                f"(it gives {sorted(backbone.output_shape())})"
            )
        tokenizer = Pix2SeqTokenizer.from_config(cfg)
        task = build_task(cfg, tokenizer)  # MODEL.PIX2SEQ.TASKS
        common = dict(
            dropout=p.DROPOUT,
            pre_norm=p.PRE_NORM,
            drop_path=p.DROP_PATH,
            activation=p.ACTIVATION,
            norm_eps=p.LAYER_NORM_EPS,
        )
        dec_dim = p.DEC_HIDDEN_DIM or p.HIDDEN_DIM
        if p.DECODER_POSITIONS not in ("learned", "none"):
            raise ValueError(
                f"MODEL.PIX2SEQ.DECODER_POSITIONS must be 'learned' or 'none', got {p.DECODER_POSITIONS!r}"
            )
        if not p.MEMORY_PROJECTION and dec_dim != p.HIDDEN_DIM:
            raise ValueError(
                f"MODEL.PIX2SEQ.DEC_HIDDEN_DIM ({dec_dim}) differs from HIDDEN_DIM ({p.HIDDEN_DIM}): "
                "set MEMORY_PROJECTION True to project the encoder output to the decoder width"
            )
        memory_projection = None
        if p.MEMORY_PROJECTION:
            ratio = p.DIM_FEEDFORWARD // p.HIDDEN_DIM
            memory_projection = MemoryProjection(p.HIDDEN_DIM, dec_dim, dec_dim * ratio, p.ACTIVATION, p.LAYER_NORM_EPS)
        return {
            "backbone": backbone,
            "in_feature": p.IN_FEATURE,
            "encoder": TransformerEncoder(p.ENC_LAYERS, p.HIDDEN_DIM, p.NUM_HEADS, p.DIM_FEEDFORWARD, **common),
            "decoder": token_decoder(
                task=task,
                max_objects=max(p.MAX_OBJECTS, p.MAX_OBJECTS_TEST),
                max_len=p.MAX_SEQ_LEN,
                num_layers=p.DEC_LAYERS,
                dim=dec_dim,
                num_heads=p.DEC_NUM_HEADS or p.NUM_HEADS,
                ffn_dim=p.DEC_DIM_FEEDFORWARD or p.DIM_FEEDFORWARD,
                share_embedding=p.SHARE_EMBEDDING,
                learned_positions=p.DECODER_POSITIONS == "learned",
                **common,
            ),
            "task": task,
            "pixel_mean": cfg.MODEL.PIXEL_MEAN,
            "pixel_std": cfg.MODEL.PIXEL_STD,
            "input_proj": p.INPUT_PROJ,
            "position_encoding": p.POSITION_ENCODING,
            "use_padding_mask": p.USE_PADDING_MASK,
            "pad_to_square": p.PAD_TO_SQUARE,
            "pad_value": p.PAD_VALUE,
            "memory_projection": memory_projection,
            "norm_eps": p.LAYER_NORM_EPS,
            "sequence_seed": process_seed(cfg.SEED),  # SEED, or one drawn per process
        }

    @property
    def device(self) -> torch.device:
        return self.pixel_mean.device

    @property
    def tokenizer(self) -> Pix2SeqTokenizer:
        """The task's tokenizer: the decoder's vocabulary."""
        return self.task.tokenizer

    @property
    def decoding(self) -> DecodingOptions:
        """How the model decodes (the task's options; assign to change them)."""
        return self.task.decoding

    @decoding.setter
    def decoding(self, options: DecodingOptions) -> None:
        self.task.decoding = options

    def checkpoint_mismatch(self, state: Mapping[str, Any]) -> str | None:
        """Why a checkpoint's state dict does not fit this model, beyond missing or extra keys (the
        checkpointer asks, see :class:`~pix2seq_d2.checkpoint.Pix2SeqCheckpointer`): a token vocabulary or
        a number of decoder positions other than the model's, which detectron2's loader would skip with
        a warning, leaving the embedding random. None: it fits."""
        own = self.state_dict()
        sizes = {  # parameters whose first dimension is the vocabulary / the decoder's positions
            "decoder.token_embed.weight": "vocabulary of {} tokens",
            "decoder.output_bias": "vocabulary of {} tokens",
            "decoder.output_proj.weight": "vocabulary of {} tokens",
            "decoder.pos_embed.weight": "{} sequence positions",
        }
        problems = []
        for key, value in state.items():
            name = key[len("module.") :] if key.startswith("module.") and key not in own else key
            if name not in sizes or name not in own or not hasattr(value, "shape"):
                continue
            got, want = tuple(value.shape)[:1], tuple(own[name].shape)[:1]
            if got != want:
                what = sizes[name]
                problems.append(f"{name}: {what.format(got[0])} in the checkpoint, {want[0]} in the model")
        if not problems:
            return None
        tok = self.tokenizer
        return (
            "The checkpoint was trained with another token vocabulary or sequence length: "
            + "; ".join(problems)
            + ". Set MODEL.PIX2SEQ.TOKENIZER.LAYOUT, NUM_CLASSES and NUM_BINS (the vocabulary size follows from "
            f"them; this model: TOKENIZER.LAYOUT={tok.layout.name!r}, NUM_CLASSES={tok.num_classes}, "
            f"NUM_BINS={tok.num_bins}, vocabulary {tok.vocab_size}), and MODEL.PIX2SEQ.MAX_SEQ_LEN or MAX_OBJECTS / "
            "MAX_OBJECTS_TEST (sequence positions = the task's sequence length for max(MAX_OBJECTS, "
            "MAX_OBJECTS_TEST) items) to the values it was trained with. A converted checkpoint's own OUTPUT.yaml "
            "has them."
        )

    # ---- image -> encoder memory ---------------------------------------------------------
    def preprocess_image(self, batched_inputs: list[dict]) -> ImageList:
        """Normalise and batch the images (padded at the bottom/right with ``PAD_VALUE``, to a
        ``PAD_TO_SQUARE`` square when set)."""
        images = [(x["image"].to(self.device) - self.pixel_mean) / self.pixel_std for x in batched_inputs]
        if self.pad_to_square:
            too_big = [tuple(x.shape[-2:]) for x in images if max(x.shape[-2:]) > self.pad_to_square]
            if too_big:
                raise ValueError(
                    f"images of size {too_big} do not fit MODEL.PIX2SEQ.PAD_TO_SQUARE={self.pad_to_square}: "
                    "resize them to at most that (INPUT.RESIZE_TEST 'longest_side', INPUT.MAX_SIZE_TEST)"
                )
        constraints = {"square_size": self.pad_to_square} if self.pad_to_square else None
        return ImageList.from_tensors(images, self.backbone.size_divisibility, self.pad_value, constraints)

    def encoder_input(
        self, feature: torch.Tensor, image_sizes: torch.Tensor, padded_hw: tuple[int, int]
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """Backbone feature ``[B, C, h, w]`` of images padded to ``padded_hw`` whose own sizes are
        ``image_sizes`` int64 ``[B, 2]`` -> encoder input ``[B, h*w, D]`` (positions added when
        they enter once), positions for every attention layer ``[B, h*w, D]`` (None: none) and
        padding ``[B, h*w]`` (None: nothing masked). Tensor ops only: it traces and exports."""
        grid_hw = tuple(feature.shape[-2:])
        rows = torch.arange(padded_hw[0], device=feature.device)[None, :, None]  # [1, H, 1]
        cols = torch.arange(padded_hw[1], device=feature.device)[None, None, :]  # [1, 1, W]
        sizes = image_sizes.to(feature.device)
        padding = (rows >= sizes[:, :1, None]) | (cols >= sizes[:, 1:, None])  # [B, H, W]
        if not self.use_padding_mask:
            padding = torch.zeros_like(padding)
        padding = F.interpolate(padding[None].float(), size=grid_hw)[0].bool()  # [B, h, w]
        if self.input_proj_on_positions:
            src = self.input_proj(feature.flatten(2).transpose(1, 2))  # [B, S, D]
        else:
            src = self.input_proj(feature).flatten(2).transpose(1, 2)  # [B, S, D]
        pos = None
        if self.position_encoding.startswith("sine"):
            normalize = self.position_encoding == "sine"
            pos = sine_position_encoding(padding, src.shape[-1], normalize=normalize).to(src.dtype)
        elif self.position_encoding == "sincos":
            src = src + sincos_position_table(*grid_hw, src.shape[-1], device=src.device).to(src.dtype)
        return src, pos, padding.flatten(1) if self.use_padding_mask else None

    def encode(self, images: ImageList) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """-> memory ``[B, S, D]`` for the decoder, the positions its cross-attention keys get
        ``[B, S, D]`` (None: none), and its padding ``[B, S]`` (None: nothing masked)."""
        return self.encode_padded(images.tensor, image_sizes_tensor(images, self.device))

    def encode_padded(
        self, images: torch.Tensor, image_sizes: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """:meth:`encode` of a normalised, padded batch ``[B, 3, H, W]`` whose images' own sizes are
        ``image_sizes`` int64 ``[B, 2]`` (h, w): the tensor form that export traces."""
        feature = self.backbone(images)[self.in_feature]  # [B, C, h, w]
        src, pos, padding = self.encoder_input(feature, image_sizes, tuple(images.shape[-2:]))
        memory = self.encoder(src, pos, padding)
        if self.memory_projection is not None:
            return self.memory_projection(memory, tuple(feature.shape[-2:])), None, padding
        return memory, pos, padding

    # ---- training ------------------------------------------------------------------------
    def forward(self, batched_inputs: list[dict]):
        if not self.training:
            return self.inference(batched_inputs)
        batched_inputs = expand_views(batched_inputs)  # multi-crop: one entry per augmented view
        sequences = self.training_sequences(batched_inputs)
        memory, pos, padding = self.encode(self.preprocess_image(batched_inputs))
        logits = self.decoder(sequences.input, memory, pos, padding)  # [B, T, V]
        loss = sequence_loss(logits, sequences.target, sequences.weight)
        check_finite_loss(loss, batched_inputs)  # FloatingPointError naming the iteration and the files
        return {"loss_seq": loss}

    def training_sequences(self, batched_inputs: list[dict], draws: Any = None) -> TokenSequences:
        """The batch's teacher-forcing input, target and weight ``[B, T]`` on the model's device.

        Inputs with ``seq_input``/``seq_target``/``seq_weight`` (our mapper) give their own,
        padded. Inputs with only ``instances`` (e.g. ``gt_boxes``/``gt_classes`` in the image's
        pixels, from any detectron2 mapper) get them made here by the task with ``draws`` (the task's
        random draws), by default drawn from a generator seeded by (``sequence_seed``, worker, trainer
        iteration).
        """
        carried = ["seq_input" in x for x in batched_inputs]
        if all(carried):
            return TokenSequences(
                input=pad_sequences([x["seq_input"] for x in batched_inputs], self.tokenizer.PAD).to(self.device),
                target=pad_sequences([x["seq_target"] for x in batched_inputs], self.tokenizer.PAD).to(self.device),
                weight=pad_sequences([x["seq_weight"] for x in batched_inputs], 0.0).to(self.device),
            )
        names = [x.get("file_name", f"batch item {i}") for i, x in enumerate(batched_inputs)]
        unusable = [name for name, x, c in zip(names, batched_inputs, carried) if c or "instances" not in x]
        if unusable:
            raise ValueError(
                "Pix2Seq training inputs need either 'seq_input'/'seq_target'/'seq_weight' (Pix2SeqDatasetMapper) "
                "on every item, or 'instances' (any detectron2 mapper) on every item; "
                f"these do not fit the rest of the batch: {unusable}"
            )
        instances = [x["instances"] for x in batched_inputs]
        generator = self._sequence_generator() if draws is None else None
        return self.task.batch_sequences(instances, names, self.device, generator, draws=draws)

    def _sequence_generator(self) -> torch.Generator | None:
        """A generator on the model's device seeded by (``sequence_seed``, rank, trainer iteration,
        forward within it); None outside a detectron2 trainer (the global RNG is used)."""
        iteration = current_training_iteration()
        if iteration is None:
            return None
        last_iteration, calls = self._sequence_calls
        call = calls if iteration == last_iteration else 0
        self._sequence_calls = (iteration, call + 1)
        seed = sequence_seed(self.sequence_seed, comm.get_rank(), iteration, call)
        return torch.Generator(device=self.device).manual_seed(seed)

    # ---- inference ------------------------------------------------------------------------
    @torch.no_grad()
    def generate(
        self, batched_inputs: list[dict], options: DecodingOptions | None = None
    ) -> tuple[DecodedSequences, ImageList]:
        """Decode the task's token sequences for images, outside of its output format.

        Args:
            batched_inputs: dicts with an ``"image"`` tensor (CHW, ``INPUT.FORMAT``), as for ``forward``.
            options: decoding options; default: the model's (``MODEL.PIX2SEQ.DECODE``).
        Returns:
            The generated tokens with their per-token log-probabilities (and what the task records per
            position), and the batched images (their ``image_sizes`` normalise boxes).
        """
        sequences, images, _ = self._encode_and_decode(batched_inputs, options or self.decoding)
        return sequences, images

    def _encode_and_decode(
        self, batched_inputs: list[dict], options: DecodingOptions
    ) -> tuple[DecodedSequences, ImageList, tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """-> decoded sequences, the batched images, and the encoder output (memory, pos, padding)."""
        images = self.preprocess_image(batched_inputs)
        encoded = self.encode(images)
        return decode(self.decoder, self.task, *encoded, options), images, encoded

    @torch.no_grad()
    def inference(self, batched_inputs: list[dict], do_postprocess: bool = True) -> list[dict]:
        """-> the task's outputs (detection: ``[{"instances": Instances}]``); inputs that carry ground-truth
        sequences (the test mapper with annotations) also get ``"sequence_likelihood"`` (see
        :meth:`sequence_likelihood`)."""
        sequences, images, encoded = self._encode_and_decode(batched_inputs, self.decoding)
        results = self.outputs(batched_inputs, sequences, images, do_postprocess)
        if all("seq_target" in x for x in batched_inputs):
            for result, likelihood in zip(results, self.sequence_likelihood(batched_inputs, *encoded)):
                result["sequence_likelihood"] = likelihood
        return results

    @torch.no_grad()
    def sequence_likelihood(
        self, batched_inputs: list[dict], memory: torch.Tensor, pos: torch.Tensor, padding: torch.Tensor
    ) -> list[dict[str, torch.Tensor]]:
        """Per image, how likely the model finds its ground-truth sequence (teacher forcing).

        Returns one dict per image over its target tokens (PAD excluded): ``target`` [T],
        ``logprob`` [T] (log-softmax over the full vocabulary at the target) and ``argmax`` [T]
        (the most likely token). :class:`~pix2seq_d2.evaluation.sequence_likelihood.SequenceLikelihoodEvaluator`
        turns them into NLL/perplexity per token kind and class accuracy.
        """
        sequences = self.training_sequences(batched_inputs)
        logits, target = self.decoder(sequences.input, memory, pos, padding), sequences.target
        logprobs = logits.float().log_softmax(-1)  # [B, T, V]
        target_logprob = logprobs.gather(-1, target[..., None])[..., 0]  # [B, T]
        argmax = logprobs.argmax(-1)  # [B, T]
        out = []
        for i, x in enumerate(batched_inputs):
            n = len(x["seq_target"])
            out.append({"target": target[i, :n], "logprob": target_logprob[i, :n], "argmax": argmax[i, :n]})
        return out

    def outputs(
        self,
        batched_inputs: list[dict],
        sequences: DecodedSequences,
        images: ImageList,
        do_postprocess: bool = True,
        options: DecodingOptions | None = None,
    ) -> list[dict]:
        """Decoded sequences -> one output dict per input, as the task makes them (detection:
        ``{"instances": Instances}``); ``options``: what they were decoded with (default: the model's)."""
        return self.task.outputs(batched_inputs, sequences, images, do_postprocess, options)
