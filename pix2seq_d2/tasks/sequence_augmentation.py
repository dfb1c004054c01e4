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
from typing import TYPE_CHECKING

import torch

from pix2seq_d2.tasks.tokenizer import Pix2SeqTokenizer, TokenSequences, box_scale

if TYPE_CHECKING:
    from .detection import DetectionTask

CLASS_CORRUPTIONS = ("none", "rand_cls", "real_n_fake_cls", "rand_n_fake_cls", "real_n_rand_n_fake_cls")
NOISE_BOX_KINDS = ("random", "jitter", "duplicate")


# The columns of NoiseDraws.uniform, one row per noise object slot.
KIND, CENTRE, SIZE, SOURCE, RANDOM_CLASS, CORRUPTION = 0, slice(1, 3), slice(3, 5), 5, 6, 7
NUM_UNIFORM, NUM_NORMAL = 8, 4


@dataclass(frozen=True)
class NoiseDraws:
    """The random numbers behind the noise objects and class corruption of a batch.

    Everything random about an object slot is drawn here, once, so that the same draws give the
    same sequences whichever way they are assembled (one image at a time or a whole batch).
    """

    uniform: torch.Tensor  # [B, M, 8] in [0, 1): kind, centre x y, size w h, source, random class, corruption
    normal: torch.Tensor  # [B, M, 4] standard normal: the jitter of each box edge

    def rows(self, index: int | slice | torch.Tensor) -> NoiseDraws:
        """The draws of some images (``index`` into the batch dimension; an int keeps it)."""
        index = slice(index, index + 1) if isinstance(index, int) else index
        return NoiseDraws(self.uniform[index], self.normal[index])


def _pick(u: torch.Tensor, count: torch.Tensor | int) -> torch.Tensor:
    """Uniform ``u`` in [0, 1) -> an index in ``[0, count)`` (``count`` broadcast against ``u``; 0 if empty)."""
    last = (torch.as_tensor(count, device=u.device) - 1).clamp(min=0)
    return torch.minimum((u * count).long(), last)


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

    def draw(
        self,
        num_images: int,
        device: torch.device | str = "cpu",
        generator: torch.Generator | None = None,
        num_slots: int | None = None,
    ) -> NoiseDraws:
        """Random numbers for ``num_images`` images of ``num_slots`` (default ``max_objects``) slots."""
        m = self.max_objects if num_slots is None else num_slots
        return NoiseDraws(
            uniform=torch.rand(num_images, m, NUM_UNIFORM, device=device, generator=generator),
            normal=torch.randn(num_images, m, NUM_NORMAL, device=device, generator=generator),
        )

    def noise_boxes_batch(
        self, real_boxes: torch.Tensor, num_real: torch.Tensor, image_hw: torch.Tensor, draws: NoiseDraws
    ) -> torch.Tensor:
        """A noise box for every slot of ``draws``: ``[B, M, 4]`` (x0 y0 x1 y1, pixels), inside the
        image, at least 1 px wide and high. ``real_boxes [B, K, 4]`` of which the first ``num_real [B]``
        are each image's real objects; ``image_hw [B, 2]``."""
        u, normal = draws.uniform, draws.normal
        scale = box_scale(image_hw).to(u)  # [B, 1, 4] w h w h
        w, h = scale[..., 0], scale[..., 1]  # [B, 1]
        num_real = num_real.to(u.device)[:, None]  # [B, 1]
        kinds = _pick(u[..., KIND], len(NOISE_BOX_KINDS)).masked_fill(num_real == 0, 0)  # [B, M]
        # random: centre uniform in the image, sides 5%..50% of the image
        centre, size = u[..., CENTRE], 0.05 + 0.45 * u[..., SIZE]  # [B, M, 2]
        boxes = torch.cat([centre - size / 2, centre + size / 2], -1) * scale  # [B, M, 4]
        if real_boxes.shape[1]:
            source_index = _pick(u[..., SOURCE], num_real)  # [B, M]
            source = real_boxes.to(u).gather(1, source_index[..., None].expand(-1, -1, 4))  # [B, M, 4]
            wh = (source[..., 2:] - source[..., :2]).repeat(1, 1, 2)  # [B, M, 4] w h w h
            for kind, sigma in ((1, self.jitter), (2, self.duplicate_jitter)):
                moved = source + normal * sigma * wh
                boxes = torch.where((kinds == kind)[..., None], moved, boxes)
        boxes = torch.minimum(boxes.clamp(min=0), scale)
        x0, y0 = torch.minimum(boxes[..., 0], boxes[..., 2]), torch.minimum(boxes[..., 1], boxes[..., 3])
        x1, y1 = torch.maximum(boxes[..., 0], boxes[..., 2]), torch.maximum(boxes[..., 1], boxes[..., 3])
        # at least 1 px wide and high, still inside the image
        x0, y0 = torch.minimum(x0, w - 1.0), torch.minimum(y0, h - 1.0)
        x1, y1 = torch.maximum(x1, x0 + 1), torch.maximum(y1, y0 + 1)
        return torch.stack([x0, y0, x1, y1], -1)

    def corrupt_classes_batch(
        self, target_classes: torch.Tensor, tokenizer: Pix2SeqTokenizer, draws: NoiseDraws
    ) -> torch.Tensor:
        """Input class tokens ``[B, M]`` from target class tokens ``[B, M]`` (class or NOISE tokens)."""
        u = draws.uniform
        class_tokens = tokenizer.class_tokens.to(target_classes.device)
        random_real = class_tokens[_pick(u[..., RANDOM_CLASS], tokenizer.num_classes)]
        noise = torch.full_like(target_classes, tokenizer.NOISE)
        c = u[..., CORRUPTION]
        choices = {
            "none": lambda: target_classes,
            "rand_cls": lambda: random_real,
            "real_n_fake_cls": lambda: torch.where(c < 0.5, target_classes, noise),
            "rand_n_fake_cls": lambda: torch.where(c < 0.5, random_real, noise),
            "real_n_rand_n_fake_cls": lambda: torch.where(
                c < 1 / 3, target_classes, torch.where(c < 2 / 3, random_real, noise)
            ),
        }
        return choices[self.class_corruption]()

    def encode_batch(
        self,
        task: DetectionTask,
        boxes_xyxy: torch.Tensor,
        classes: torch.Tensor,
        num_real: torch.Tensor,
        image_hw: torch.Tensor,
        draws: NoiseDraws,
    ) -> TokenSequences:
        """A batch of images' real objects (boxes ``[B, K, 4]``, classes ``[B, K]``, the first
        ``num_real [B]`` of each row, in order; at most ``max_objects`` used) + noise objects up to
        ``max_objects`` -> input, target and weight ``[B, 5 * max_objects + 1]``.

        Targets: real objects as usual; noise objects' class target is NOISE with weight
        ``noise_class_weight`` and their coordinate targets have weight 0; EOS last with the
        tokenizer's ``eos_weight``. Inputs: START, then every object with its class token
        corrupted according to ``class_corruption``.
        """
        tokenizer = task.tokenizer
        m, cs = self.max_objects, task.class_slot
        b, k = classes.shape
        if k < m:  # room for every slot
            boxes_xyxy = torch.cat([boxes_xyxy, boxes_xyxy.new_zeros(b, m - k, 4)], 1)
            classes = torch.cat([classes, classes.new_zeros(b, m - k)], 1)
        boxes_xyxy, classes = boxes_xyxy[:, :m], classes[:, :m]
        num_real = num_real.to(classes.device).clamp(max=m)
        is_noise = torch.arange(m, device=classes.device)[None] >= num_real[:, None]  # [B, M]
        tokenizer.check_classes(classes[~is_noise])
        noise = self.noise_boxes_batch(boxes_xyxy, num_real, image_hw, draws)  # [B, M, 4]
        boxes = torch.where(is_noise[..., None], noise, boxes_xyxy.float())
        objects = task.object_tokens(boxes, classes.masked_fill(is_noise, 0), image_hw)  # [B, M, 5]
        objects[..., cs] = objects[..., cs].masked_fill(is_noise, tokenizer.NOISE)
        weights = torch.ones(objects.shape, device=objects.device)  # [B, M, 5]
        coordinate_slots = torch.arange(task.tokens_per_object, device=objects.device) != cs  # [5]
        weights[is_noise[..., None] & coordinate_slots] = 0.0
        weights[..., cs] = weights[..., cs].masked_fill(is_noise, self.noise_class_weight)
        inputs = objects.clone()
        inputs[..., cs] = self.corrupt_classes_batch(objects[..., cs], tokenizer, draws)
        all_slots = torch.full_like(num_real, m)
        return task.wrap_batch(objects.flatten(1), weights.flatten(1), all_slots, inputs.flatten(1))

    # ---- one image (the same code, a batch of one) ----------------------------------------
    def noise_boxes(
        self, real_boxes: torch.Tensor, image_hw: tuple[int, int], num: int, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """``num`` noise boxes ``[num, 4]`` for one image (x0 y0 x1 y1, pixels)."""
        draws = self.draw(1, real_boxes.device, generator, num_slots=num)
        sizes = torch.tensor([image_hw], device=real_boxes.device)
        return self.noise_boxes_batch(real_boxes[None], torch.tensor([len(real_boxes)]), sizes, draws)[0]

    def corrupt_input_classes(
        self, target_classes: torch.Tensor, tokenizer: Pix2SeqTokenizer, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """Input class tokens ``[n]`` from target class tokens ``[n]`` (class or NOISE tokens)."""
        draws = self.draw(1, target_classes.device, generator, num_slots=target_classes.numel())
        return self.corrupt_classes_batch(target_classes.reshape(1, -1), tokenizer, draws)[0]

    def encode(
        self,
        task: DetectionTask,
        boxes_xyxy: torch.Tensor,
        classes: torch.Tensor,
        image_hw: tuple[int, int],
        generator: torch.Generator | None = None,
    ) -> TokenSequences:
        """One image's objects (in the order given) -> tensors of length ``5 * max_objects + 1``
        (see :meth:`encode_batch`)."""
        draws = self.draw(1, boxes_xyxy.device, generator)
        sizes = torch.tensor([image_hw], device=boxes_xyxy.device)
        num_real = torch.tensor([len(classes)], device=boxes_xyxy.device)
        out = self.encode_batch(task, boxes_xyxy.reshape(1, -1, 4), classes.reshape(1, -1), num_real, sizes, draws)
        return TokenSequences(input=out.input[0], target=out.target[0], weight=out.weight[0])
