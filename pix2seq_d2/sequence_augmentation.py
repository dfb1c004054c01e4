"""Sequence augmentation (Pix2Seq, section 3.3): noise objects after the real ones, corrupted input classes.

Without it a Pix2Seq model learns to end sequences early (high precision, low recall). With
it, every training sequence is filled up to ``max_objects`` objects: the real ones, then
synthetic noise objects whose class target is the NOISE token and whose coordinate targets
carry no loss. A model trained this way is decoded for a fixed number of objects
(``MODEL.PIX2SEQ.DECODE.STOP_AT_EOS: False``) and its detections ranked by score; noise
predictions score low because their class slot puts its mass on NOISE.

Noise boxes are of three kinds, drawn with equal probability (only "random" when the image
has no real object):

* ``random``: a box of random centre and size (sides 5%..50% of the image);
* ``jitter``: a real box with each edge moved by a Gaussian of ``jitter`` x its size (a poor
  localisation of a real object);
* ``duplicate``: a real box with each edge moved by ``duplicate_jitter`` x its size (a near
  duplicate of a real object).

Input-side class corruption (the teacher-forcing input only; targets never change), per object:

* ``none``: the target class (NOISE for noise objects);
* ``rand_cls``: a uniformly random real class;
* ``real_n_fake_cls``: the target class or NOISE, 1/2 each;
* ``rand_n_fake_cls``: a random real class or NOISE, 1/2 each (the official default);
* ``real_n_rand_n_fake_cls``: the target class, a random real class or NOISE, 1/3 each.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .tokenizer import Pix2SeqTokenizer, TokenizedObjects

CLASS_CORRUPTIONS = ("none", "rand_cls", "real_n_fake_cls", "rand_n_fake_cls", "real_n_rand_n_fake_cls")
NOISE_BOX_KINDS = ("random", "jitter", "duplicate")


@dataclass(frozen=True)
class SequenceAugmentation:
    """Fills training sequences with noise objects and corrupts their input class tokens."""

    max_objects: int
    noise_class_weight: float = 1.0
    class_corruption: str = "rand_n_fake_cls"
    jitter: float = 0.2
    duplicate_jitter: float = 0.05

    def __post_init__(self):
        if self.class_corruption not in CLASS_CORRUPTIONS:
            raise ValueError(f"class corruption must be one of {CLASS_CORRUPTIONS}, got {self.class_corruption!r}")
        if self.max_objects < 1:
            raise ValueError(f"max_objects must be >= 1, got {self.max_objects}")

    def noise_boxes(
        self, real_boxes: torch.Tensor, image_hw: tuple[int, int], num: int, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """``num`` noise boxes ``[num, 4]`` (x0 y0 x1 y1, pixels), inside the image, at least 1 px wide/high."""
        h, w = image_hw
        scale = torch.tensor([w, h, w, h], dtype=torch.float32)
        kinds = torch.randint(len(NOISE_BOX_KINDS), (num,), generator=generator)
        if len(real_boxes) == 0:
            kinds.zero_()
        # random: centre uniform in the image, sides 5%..50% of the image
        centre = torch.rand(num, 2, generator=generator)
        size = 0.05 + 0.45 * torch.rand(num, 2, generator=generator)
        boxes = torch.cat([centre - size / 2, centre + size / 2], 1) * scale  # [num, 4]
        if len(real_boxes):
            source = real_boxes.float()[torch.randint(len(real_boxes), (num,), generator=generator)]
            wh = (source[:, 2:] - source[:, :2]).repeat(1, 2)  # [num, 4] w h w h
            for kind, sigma in ((1, self.jitter), (2, self.duplicate_jitter)):
                moved = source + torch.randn(num, 4, generator=generator) * sigma * wh
                boxes = torch.where((kinds == kind)[:, None], moved, boxes)
        boxes = torch.minimum(boxes.clamp(min=0), scale)
        x0, y0 = torch.minimum(boxes[:, 0], boxes[:, 2]), torch.minimum(boxes[:, 1], boxes[:, 3])
        x1, y1 = torch.maximum(boxes[:, 0], boxes[:, 2]), torch.maximum(boxes[:, 1], boxes[:, 3])
        # at least 1 px wide and high, still inside the image
        x0, y0 = torch.minimum(x0, torch.tensor(w - 1.0)), torch.minimum(y0, torch.tensor(h - 1.0))
        x1, y1 = torch.maximum(x1, x0 + 1), torch.maximum(y1, y0 + 1)
        return torch.stack([x0, y0, x1, y1], 1)

    def corrupt_input_classes(
        self, target_classes: torch.Tensor, tokenizer: Pix2SeqTokenizer, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """Input class tokens ``[n]`` from target class tokens ``[n]`` (class or NOISE tokens)."""
        n = target_classes.numel()
        random_real = tokenizer.class_tokens[torch.randint(tokenizer.num_classes, (n,), generator=generator)]
        noise = torch.full_like(target_classes, tokenizer.NOISE)
        u = torch.rand(n, generator=generator)
        choices = {
            "none": target_classes,
            "rand_cls": random_real,
            "real_n_fake_cls": torch.where(u < 0.5, target_classes, noise),
            "rand_n_fake_cls": torch.where(u < 0.5, random_real, noise),
            "real_n_rand_n_fake_cls": torch.where(
                u < 1 / 3, target_classes, torch.where(u < 2 / 3, random_real, noise)
            ),
        }
        return choices[self.class_corruption]

    def encode(
        self,
        tokenizer: Pix2SeqTokenizer,
        boxes_xyxy: torch.Tensor,
        classes: torch.Tensor,
        image_hw: tuple[int, int],
        generator: torch.Generator | None = None,
    ) -> TokenizedObjects:
        """Real objects (at most ``max_objects``, in the order given) + noise objects up to
        ``max_objects`` -> input, target and weight tensors of length ``5 * max_objects + 1``.

        Targets: real objects as usual; noise objects' class target is NOISE with weight
        ``noise_class_weight`` and their coordinate targets have weight 0; EOS last with the
        tokenizer's ``eos_weight``. Inputs: START, then every object with its class token
        corrupted according to ``class_corruption``.
        """
        boxes_xyxy, classes = boxes_xyxy[: self.max_objects], classes[: self.max_objects]
        num_real = len(classes)
        plain = tokenizer.encode(boxes_xyxy, classes, image_hw)
        noise = self.noise_boxes(boxes_xyxy, image_hw, self.max_objects - num_real, generator)
        noise_tokens = tokenizer.object_tokens(noise, torch.zeros(len(noise), dtype=torch.long), image_hw)
        tpo, cs = tokenizer.tokens_per_object, tokenizer.class_slot
        noise_tokens[:, cs] = tokenizer.NOISE
        objects = torch.cat([plain.target[:-1].reshape(-1, tpo), noise_tokens])  # [M, 5]
        weights = torch.ones(self.max_objects, tpo)
        weights[num_real:, :cs] = 0.0
        weights[num_real:, cs] = self.noise_class_weight
        inputs = objects.clone()
        inputs[:, cs] = self.corrupt_input_classes(objects[:, cs], tokenizer, generator)
        return tokenizer.wrap(objects.reshape(-1), weights.reshape(-1), inputs.reshape(-1))
