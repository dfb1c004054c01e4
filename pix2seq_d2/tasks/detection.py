"""Object detection, the first Pix2Seq task: every object is five tokens, four coordinates then its class.

The prompt is the detection prompt token (START in this project's layout, 10 in the official one).
The response lists the objects, each ``ymin xmin ymax xmax class`` (``xmin ymin xmax ymax`` in the
Pretrained-Pix2Seq layout: the tokenizer's ``slot_axes``), then EOS. A grammar restricts every position
to the tokens that may stand there: an object's first slot takes a coordinate (or EOS when decoding
stops at EOS), the next three only coordinates, the class slot only dataset classes (and the noise
class when allowed). A training example is three aligned 1-D tensors of length ``5 * n + 1``::

    input   START y x y x c  y x y x c ...            (teacher forcing)
    target  y x y x c  y x y x c ...  EOS
    weight  1 1 1 1 1  1 1 1 1 1 ...  eos_weight

Training sequences are made from ground-truth objects by :class:`~.training_sequences.TrainingSequenceBuilder`
(object order, ``MAX_OBJECTS`` cap, the noise objects of sequence augmentation), one image in the dataset
mapper or a whole batch in the model; decoded sequences become ``Instances`` with ``pred_boxes``,
``scores`` and ``pred_classes`` in each image's original size (:meth:`DetectionTask.outputs`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from detectron2.config import CfgNode
from detectron2.modeling.postprocessing import detector_postprocess
from detectron2.structures import Boxes, ImageList, Instances

from pix2seq_d2.tasks.tokenizer import Pix2SeqTokenizer, TokenSequences
from pix2seq_d2.utils.structures import image_sizes_tensor

from .base import TASK_REGISTRY, Task
from .decoding_options import DecodingOptions
from .sequence_augmentation import SequenceAugmentation
from .training_sequences import ObjectBatch, SequenceDraws, TrainingSequenceBuilder

__all__ = ["CLASS_SLOT", "SCORE_MODES", "TOKENS_PER_OBJECT", "DecodedObjects", "DetectionTask", "ObjectSlotRecorder"]

TOKENS_PER_OBJECT = 5
CLASS_SLOT = 4  # positions inside an object: 0..3 are coordinates, 4 the class
SCORE_MODES = ("class", "class_x_coords")


@dataclass(frozen=True)
class DecodedObjects:
    """Objects read back from token sequences, one row per object slot.

    ``valid`` marks slots that hold a detection of a dataset class (see :meth:`DetectionTask.decode_objects`).
    """

    boxes: torch.Tensor  # float [N, K, 4] x0 y0 x1 y1 in pixels (corners sorted)
    classes: torch.Tensor  # int64 [N, K] contiguous dataset class ids (-1 where not valid)
    scores: torch.Tensor  # float [N, K] detection scores (0 where not valid)
    valid: torch.Tensor  # bool [N, K]


class ObjectSlotRecorder:
    """What detection decoding keeps per object slot besides the tokens: the class range's
    log-probabilities at class slots and, for ``box_from="argmax"`` only, the most likely coordinate
    token at coordinate slots (nothing otherwise: no extra work per step)."""

    def __init__(self, tokenizer: Pix2SeqTokenizer, rows: int, max_objects: int, device, coord_argmax: bool):
        self.tokenizer = tokenizer
        lo, hi = tokenizer.class_token_range()
        self.class_logprobs = torch.zeros(rows, max_objects, hi - lo, device=device)
        self.coord_argmax = None
        if coord_argmax:
            self.coord_argmax = torch.zeros(rows, max_objects, CLASS_SLOT, dtype=torch.long, device=device)

    def record(self, rows: torch.Tensor | slice, t: int, logprobs: torch.Tensor) -> None:
        """``logprobs [N, V]`` of response position ``t`` for batch ``rows``."""
        obj, slot = divmod(t, TOKENS_PER_OBJECT)
        if slot == CLASS_SLOT:
            lo, hi = self.tokenizer.class_token_range()
            self.class_logprobs[rows, obj] = logprobs[:, lo:hi]
        elif self.coord_argmax is not None:
            lo, hi = self.tokenizer.coord_token_range()
            self.coord_argmax[rows, obj, slot] = logprobs[:, lo:hi].argmax(-1) + lo

    def select(self, rows: torch.Tensor) -> None:
        self.class_logprobs = self.class_logprobs[rows]
        if self.coord_argmax is not None:
            self.coord_argmax = self.coord_argmax[rows]

    def tensors(self) -> dict[str, torch.Tensor]:
        """``class_logprobs [N, K, R]`` and, for ``box_from="argmax"``, ``coord_argmax [N, K, 4]``."""
        out = {"class_logprobs": self.class_logprobs}
        if self.coord_argmax is not None:
            out["coord_argmax"] = self.coord_argmax
        return out


@TASK_REGISTRY.register()
class DetectionTask(Task):
    """Object detection as a token sequence (see the module docstring)."""

    name = "detection"
    tokens_per_object = TOKENS_PER_OBJECT
    class_slot = CLASS_SLOT

    def __init__(
        self,
        tokenizer: Pix2SeqTokenizer,
        decoding: DecodingOptions,
        *,
        max_objects: int = 100,
        object_order: str = "random",
        sequence_augmentation: SequenceAugmentation | None = None,
        score_mode: str = "class",
        score_thresh_test: float = 0.0,
        detections_per_image: int = 100,
    ):
        """
        Args:
            tokenizer, decoding: the shared token space and how detections are decoded.
            max_objects, object_order, sequence_augmentation: how training sequences are made
                (``MAX_OBJECTS``, ``OBJECT_ORDER``, ``SEQ_AUG``; see :class:`TrainingSequenceBuilder`).
            score_mode: ``DECODE.SCORE``, one of :data:`SCORE_MODES`.
            score_thresh_test, detections_per_image: detections scoring below the threshold are dropped,
                and at most this many are returned per image.
        """
        super().__init__(tokenizer, decoding)
        if score_mode not in SCORE_MODES:
            raise ValueError(f"unknown score mode {score_mode!r}; known: {SCORE_MODES}")
        self.prompt_token = tokenizer.prompt_token(self.name)
        self.score_mode = score_mode
        self.score_thresh_test = score_thresh_test
        self.detections_per_image = detections_per_image
        self.train_builder = TrainingSequenceBuilder(self, max_objects, object_order, sequence_augmentation)
        test_order = "none" if object_order == "random" else object_order  # the dataset's order at test time
        self.test_builder = TrainingSequenceBuilder(self, max_objects, test_order, None)

    @classmethod
    def from_config(cls, cfg: CfgNode, tokenizer: Pix2SeqTokenizer | None = None) -> DetectionTask:
        """``MODEL.PIX2SEQ``'s tokenizer (``tokenizer``: one already built from it), ``DECODE``,
        ``MAX_OBJECTS``, ``OBJECT_ORDER``, ``SEQ_AUG``, ``SCORE_THRESH_TEST`` and ``TEST.DETECTIONS_PER_IMAGE``."""
        p = cfg.MODEL.PIX2SEQ
        seq_aug = None
        if p.SEQ_AUG.ENABLED:
            seq_aug = SequenceAugmentation(
                max_objects=p.MAX_OBJECTS,
                noise_class_weight=p.SEQ_AUG.NOISE_CLASS_WEIGHT,
                class_corruption=p.SEQ_AUG.CLASS_CORRUPTION,
                jitter=p.SEQ_AUG.JITTER,
                duplicate_jitter=p.SEQ_AUG.DUPLICATE_JITTER,
            )
        return cls(
            tokenizer or Pix2SeqTokenizer.from_config(cfg),
            DecodingOptions.from_config(cfg),
            max_objects=p.MAX_OBJECTS,
            object_order=p.OBJECT_ORDER,
            sequence_augmentation=seq_aug,
            score_mode=p.DECODE.SCORE,
            score_thresh_test=p.SCORE_THRESH_TEST,
            detections_per_image=cfg.TEST.DETECTIONS_PER_IMAGE,
        )

    def __repr__(self) -> str:
        return f"DetectionTask({self.tokenizer}, train={self.train_builder}, decoding={self.decoding})"

    # ---- grammar and lengths ----------------------------------------------------------------
    def grammar(
        self, device: torch.device | str = "cpu", allow_eos: bool = True, allow_noise_class: bool = False
    ) -> torch.Tensor:
        """bool ``[5, V]``: the tokens that may be generated at each slot of an object."""
        tok = self.tokenizer
        masks = torch.zeros(TOKENS_PER_OBJECT, tok.vocab_size, dtype=torch.bool, device=device)
        lo, hi = tok.coord_token_range()
        masks[:CLASS_SLOT, lo:hi] = True
        masks[0, tok.EOS] = allow_eos
        masks[CLASS_SLOT, tok.class_tokens.to(device)] = True
        masks[CLASS_SLOT, tok.NOISE] = allow_noise_class
        return masks

    def forbidden_tokens(self, options: DecodingOptions, device: torch.device | str = "cpu") -> torch.Tensor:
        """bool ``[5, V]``: the grammar's forbidden tokens per slot; without a grammar, whatever the layout
        does not let the model emit (as the official release and Pretrained-Pix2Seq decode)."""
        if not options.grammar:
            return ~self.tokenizer.generatable(device).expand(TOKENS_PER_OBJECT, -1)
        return ~self.grammar(device, allow_eos=options.stop_at_eos, allow_noise_class=options.allow_noise_class)

    def max_response_length(self, options: DecodingOptions) -> int:
        return options.max_objects * TOKENS_PER_OBJECT

    def sequence_length(self, num_objects: int | torch.Tensor) -> int | torch.Tensor:
        """Decoder positions ``num_objects`` objects take (START included)."""
        return TOKENS_PER_OBJECT * num_objects + 1

    def max_sequence_length(self, max_items: int) -> int:
        return self.sequence_length(max_items)

    def token_kinds(self, tokens: torch.Tensor) -> dict[str, torch.Tensor]:
        """Boolean masks over ``tokens``: "coord", "class" (dataset classes and NOISE), "eos" (PAD in none)."""
        tok = self.tokenizer
        lo, hi = tok.coord_token_range()
        is_class = torch.isin(tokens, tok.class_tokens.to(tokens.device)) | (tokens == tok.NOISE)
        return {"coord": (tokens >= lo) & (tokens < hi), "class": is_class, "eos": tokens == tok.EOS}

    # ---- encoding ---------------------------------------------------------------------------------
    def object_tokens(
        self, boxes_xyxy: torch.Tensor, classes: torch.Tensor, image_hw: tuple[int, int] | torch.Tensor
    ) -> torch.Tensor:
        """Boxes ``[n, 4]`` (x0 y0 x1 y1, pixels) and classes ``[n]`` of one image -> tokens ``[n, 5]``;
        or a batch: boxes ``[B, n, 4]``, classes ``[B, n]``, sizes ``[B, 2]`` -> ``[B, n, 5]``."""
        tok = self.tokenizer
        boxes = boxes_xyxy.float()
        if boxes.dim() == 1:
            boxes = boxes.reshape(-1, 4)
        normalized = boxes / tok.coordinate_scale(image_hw, boxes)  # [..., n, 4] x0 y0 x1 y1
        coord_tokens = tok.quantize(normalized[..., list(tok.slot_axes)]) + tok.layout.coord_base
        class_tokens = tok.class_tokens.to(boxes.device)[classes.long().reshape(boxes.shape[:-1])]
        return torch.cat([coord_tokens, class_tokens[..., None]], dim=-1)

    def encode(self, boxes_xyxy: torch.Tensor, classes: torch.Tensor, image_hw: tuple[int, int]) -> TokenSequences:
        """One image's objects (in the order given) -> teacher-forcing input, target and weights."""
        self.tokenizer.check_classes(classes)
        body = self.object_tokens(boxes_xyxy, classes, image_hw).reshape(-1)  # [5n]
        return self.wrap(body, torch.ones(body.numel()))

    def encode_batch(
        self, boxes_xyxy: torch.Tensor, classes: torch.Tensor, num_objects: torch.Tensor, image_hw: torch.Tensor
    ) -> TokenSequences:
        """A batch: boxes ``[B, K, 4]``, classes ``[B, K]`` of which the first ``num_objects [B]`` of
        each row are objects (in order), image sizes ``[B, 2]`` -> ``[B, 5K+1]`` tensors, each row
        its image's sequence followed by PAD (target and input) with weight 0."""
        real = torch.arange(classes.shape[1], device=classes.device) < num_objects[:, None]  # [B, K]
        self.tokenizer.check_classes(classes[real])
        classes = classes.clamp(0, self.tokenizer.num_classes - 1)
        body = self.object_tokens(boxes_xyxy, classes, image_hw)  # [B, K, 5]
        body = body.flatten(1)  # [B, 5K]
        return self.wrap_batch(body, torch.ones(body.shape, device=body.device), num_objects)

    def wrap(self, objects: torch.Tensor, weights: torch.Tensor, inputs: torch.Tensor | None = None) -> TokenSequences:
        """Object tokens ``[5n]`` (targets), their weights ``[5n]`` and optionally other input tokens
        ``[5n]`` -> ``START inputs`` / ``objects EOS`` / ``weights eos_weight``."""
        num_objects = torch.tensor([objects.numel() // TOKENS_PER_OBJECT], device=objects.device)
        inputs = None if inputs is None else inputs[None]
        out = self.wrap_batch(objects[None], weights[None], num_objects, inputs)
        return TokenSequences(input=out.input[0], target=out.target[0], weight=out.weight[0])

    def wrap_batch(
        self,
        objects: torch.Tensor,
        weights: torch.Tensor,
        num_objects: torch.Tensor,
        inputs: torch.Tensor | None = None,
    ) -> TokenSequences:
        """Per row of ``[B, 5K]`` object tokens (targets), weights and optional other input tokens,
        the first ``5 * num_objects`` are the image's -> ``[B, 5K+1]``: ``START inputs PAD..`` /
        ``objects EOS PAD..`` / ``weights eos_weight 0..``."""
        tok = self.tokenizer
        inputs = objects if inputs is None else inputs
        b = objects.shape[0]
        length = (TOKENS_PER_OBJECT * num_objects.to(objects.device))[:, None]  # [B, 1] EOS position
        position = torch.arange(objects.shape[1] + 1, device=objects.device)[None]  # [1, 5K+1]
        after, at_end = position > length, position == length
        pad = objects.new_full((b, 1), tok.PAD)
        target = torch.cat([objects, pad], 1).masked_fill(at_end, tok.EOS).masked_fill(after, tok.PAD)
        seq_input = torch.cat([objects.new_full((b, 1), self.prompt_token), inputs], 1).masked_fill(after, tok.PAD)
        weight = torch.cat([weights.float().to(objects.device), weights.new_zeros(b, 1).float()], 1)
        weight = weight.masked_fill(at_end, tok.eos_weight).masked_fill(after, 0.0)
        return TokenSequences(input=seq_input, target=target, weight=weight)

    def example(self, instances: Instances, is_train: bool = True) -> tuple[Instances, TokenSequences]:
        """One image's ground truth -> its objects in sequence order and its sequence (the training
        builder's random order and noise, or at test time the dataset's order and no noise)."""
        sequences = (self.train_builder if is_train else self.test_builder)(ObjectBatch.from_instances([instances]))
        return instances[sequences.objects[0, : int(sequences.num_objects[0])]], sequences.row(0)

    def batch_sequences(
        self,
        instances: Sequence[Instances],
        names: Sequence[str],
        device: torch.device | str,
        generator: torch.Generator | None = None,
        draws: SequenceDraws | None = None,
    ) -> TokenSequences:
        """A batch's ``gt_boxes``/``gt_classes`` -> its training sequences (``draws``: replay given random draws)."""
        objects = ObjectBatch.from_instances(instances, device, self.tokenizer.num_classes, names)
        return self.train_builder(objects, draws, generator).tokens

    # ---- decoding and outputs --------------------------------------------------------------------
    def response_recorder(self, rows: int, options: DecodingOptions, device: torch.device | str) -> ObjectSlotRecorder:
        return ObjectSlotRecorder(self.tokenizer, rows, options.max_objects, device, options.box_from == "argmax")

    def decode_objects(
        self,
        tokens: torch.Tensor,
        token_logprobs: torch.Tensor,
        class_logprobs: torch.Tensor,
        image_sizes: torch.Tensor,
        score: str = "class",
        constrained: bool = True,
        coord_tokens: torch.Tensor | None = None,
    ) -> DecodedObjects:
        """Generated tokens -> boxes, classes and scores, for a batch, without per-object loops.

        Args:
            tokens: int64 ``[N, 5K]`` generated tokens (START not included).
            token_logprobs: float ``[N, 5K]`` log-probability of each generated token.
            class_logprobs: float ``[N, >=K, R]`` log-probabilities (full-vocabulary softmax) of the
                class range's tokens at each class slot.
            image_sizes: ``[N, 2]`` (height, width) of the images the boxes are in pixels of.
            score: "class" (probability of the reported class) or "class_x_coords" (times the
                probabilities of the object's four coordinate tokens).
            constrained: True (grammar-constrained decoding): an object is valid when its slots hold
                coordinates and a dataset (or noise) class before any EOS, and the reported class
                is the most likely dataset class. False (decoding as the peers do, no grammar):
                every object slot counts, coordinate tokens are clamped into the bin range, and the
                class is the argmax over the whole class range: valid only if that is a dataset class.
            coord_tokens: int64 ``[N, K, 4]`` coordinate tokens to read boxes from instead of the
                generated ones (e.g. the per-slot most likely coordinate).
        """
        tok = self.tokenizer
        if score not in SCORE_MODES:
            raise ValueError(f"unknown score mode {score!r}; known: {SCORE_MODES}")
        tpo, cs = TOKENS_PER_OBJECT, CLASS_SLOT
        n, length = tokens.shape
        k = length // tpo
        objs = tokens[:, : k * tpo].reshape(n, k, tpo)
        logprobs = token_logprobs[:, : k * tpo].reshape(n, k, tpo)
        coords = objs[..., :cs] if coord_tokens is None else coord_tokens[:, :k]

        range_logprobs = class_logprobs[:, :k]  # [N, K, R]
        lookup = tok.class_of_range_index.to(tokens.device)
        if constrained:
            lo, hi = tok.coord_token_range()
            coords_ok = ((coords >= lo) & (coords < hi)).all(-1)
            class_ok = torch.isin(objs[..., cs], tok.class_tokens.to(tokens.device)) | (objs[..., cs] == tok.NOISE)
            # An object counts only if no EOS appeared at or before any of its tokens.
            eos_seen = (tokens[:, : k * tpo] == tok.EOS).cumsum(-1).reshape(n, k, tpo)[..., -1] > 0
            in_dataset = (lookup >= 0).nonzero()[:, 0]  # range indices of the dataset classes
            class_logprob, best = range_logprobs[..., in_dataset].max(-1)
            classes = lookup[in_dataset][best]
            valid = coords_ok & class_ok & ~eos_seen
        else:
            class_logprob, range_index = range_logprobs.max(-1)
            classes = lookup[range_index]
            valid = classes >= 0

        bins = (coords - tok.layout.coord_base).clamp(0, tok.num_bins - 1)
        values = tok.dequantize(bins)  # [N, K, 4] in slot order
        xyxy = values[..., list(tok.slot_axes)]  # slot_axes is its own inverse for both orders
        xyxy = xyxy * tok.coordinate_scale(image_sizes.reshape(n, 2), values)  # pixels
        x0, y0, x1, y1 = xyxy.unbind(-1)
        corners = [torch.minimum(x0, x1), torch.minimum(y0, y1), torch.maximum(x0, x1), torch.maximum(y0, y1)]
        boxes = torch.stack(corners, -1)
        if score == "class_x_coords":
            class_logprob = class_logprob + logprobs[..., :cs].sum(-1)
        classes = torch.where(valid, classes, torch.full_like(classes, -1))
        scores = torch.where(valid, class_logprob.exp(), torch.zeros_like(class_logprob))
        return DecodedObjects(boxes=boxes, classes=classes, scores=scores, valid=valid)

    def outputs(
        self,
        batched_inputs: list[dict],
        sequences: Any,
        images: ImageList,
        do_postprocess: bool = True,
        options: DecodingOptions | None = None,
    ) -> list[dict]:
        """Decoded sequences -> ``[{"instances": Instances}]`` (scored, thresholded, capped, and
        rescaled to each input's ``height``/``width`` when ``do_postprocess``); ``options``: what they
        were decoded with (grammar, box source; default: the task's)."""
        options = options or self.decoding
        sizes = image_sizes_tensor(images, sequences.tokens.device)  # [B, 2] (h, w)
        coord_tokens = None
        if options.box_from == "argmax":
            if "coord_argmax" not in sequences.records:
                raise ValueError("DECODE.BOX_FROM 'argmax' needs sequences decoded with box_from='argmax'")
            coord_tokens = sequences.records["coord_argmax"]
        objects = self.decode_objects(
            sequences.tokens,
            sequences.token_logprobs,
            sequences.records["class_logprobs"],
            sizes,
            self.score_mode,
            constrained=options.grammar,
            coord_tokens=coord_tokens,
        )
        results = []
        for i, image_size in enumerate(images.image_sizes):
            keep = (objects.valid[i] & (objects.scores[i] > self.score_thresh_test)).nonzero()[:, 0]
            keep = keep[objects.scores[i][keep].argsort(descending=True)[: self.detections_per_image]]
            inst = Instances(image_size)
            inst.pred_boxes = Boxes(objects.boxes[i][keep])
            inst.scores = objects.scores[i][keep]
            inst.pred_classes = objects.classes[i][keep]
            if do_postprocess:
                height = batched_inputs[i].get("height", image_size[0])
                width = batched_inputs[i].get("width", image_size[1])
                inst = detector_postprocess(inst, height, width)
            results.append({"instances": inst})
        return results
