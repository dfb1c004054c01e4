"""What the model believes: per-coordinate bin distributions and per-token probabilities, as a picture.

Pix2Seq predicts every box coordinate as a token, so each coordinate comes with a whole
probability distribution over the quantisation bins, not only a value. :func:`read_beliefs`
decodes images greedily and keeps the decoder's logits at every generated position;
:func:`draw_beliefs` draws, for each predicted object, the distributions of ``ymin``/``ymax``
as curves along the vertical axis (standing on the box's left/right side) and of
``xmin``/``xmax`` along the horizontal axis (on its top/bottom side) on the image, next to a
bar chart of the generated token sequence and the probability of every token.

Probabilities are softmaxes restricted to the tokens that could stand at that place: the
coordinate bins for a coordinate, the class tokens the grammar allows for a class, and
every token allowed at an object's first slot (the coordinates and EOS) for EOS.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from pix2seq_d2.modeling.decoding import decode
from pix2seq_d2.modeling.meta_arch.pix2seq import Pix2Seq
from pix2seq_d2.tasks import DecodingOptions, DetectionTask

__all__ = [
    "COORDINATE_NAMES",
    "ImageBeliefs",
    "ObjectBelief",
    "TokenBelief",
    "coordinate_distributions",
    "draw_beliefs",
    "read_beliefs",
]

COORDINATE_NAMES = ("ymin", "xmin", "ymax", "xmax")  # the order of ObjectBelief.bins and coord_probs
_AXIS_NAMES = ("xmin", "ymin", "xmax", "ymax")  # the tokenizer's slot_axes index into this
_COLORS = ("tab:red", "tab:blue", "tab:green", "tab:orange", "tab:purple", "tab:cyan", "tab:pink", "tab:olive")


@dataclass
class TokenBelief:
    """One generated token: its text, its probability, and the object it belongs to (-1: EOS)."""

    token: int
    text: str  # e.g. "ymin=34" (pixels of the original image), "class=circle", "EOS"
    prob: float
    object_index: int


@dataclass
class ObjectBelief:
    """One decoded object and the distributions behind its tokens."""

    index: int  # its place in the generated sequence (0: the first object)
    box: np.ndarray  # float [4] x0 y0 x1 y1, pixels of the original image (bin centres)
    class_id: int
    class_name: str
    score: float  # the detection score (MODEL.PIX2SEQ.DECODE.SCORE), as in the model's predictions
    bins: np.ndarray  # int [4] generated bins of ymin xmin ymax xmax
    coord_probs: np.ndarray  # float [4, num_bins] softmax over the coordinate bins, per coordinate


@dataclass
class ImageBeliefs:
    """Everything the picture of one image needs."""

    height: int
    width: int
    num_bins: int
    bin_positions: dict[str, np.ndarray]  # "y"/"x": [num_bins] pixel position of each bin in the image
    objects: list[ObjectBelief]
    tokens: list[TokenBelief]  # the generated sequence, EOS included when generated


def coordinate_distributions(logits: torch.Tensor, task: DetectionTask) -> torch.Tensor:
    """Logits ``[..., T, V]`` of generated positions -> ``[..., T // 5, 4, num_bins]``: for each
    object, the distribution of each coordinate (ymin xmin ymax xmax) over the coordinate bins."""
    tokenizer = task.tokenizer
    tpo = task.tokens_per_object
    k = logits.shape[-2] // tpo
    lo, hi = tokenizer.coord_token_range()
    objects = logits[..., : k * tpo, :].unflatten(-2, (k, tpo))
    slots = [tokenizer.slot_axes.index(_AXIS_NAMES.index(name)) for name in COORDINATE_NAMES]
    return objects[..., slots, lo:hi].float().softmax(-1)


def _restricted_prob(logits: torch.Tensor, allowed: torch.Tensor, token: int) -> float:
    """Probability of ``token`` under the softmax of ``logits [V]`` over the ``allowed [V]`` tokens."""
    return float(logits.float().masked_fill(~allowed, float("-inf")).softmax(-1)[token])


@torch.no_grad()
def read_beliefs(
    model: Pix2Seq,
    batched_inputs: list[dict],
    class_names: Sequence[str] | None = None,
    options: DecodingOptions | None = None,
) -> list[ImageBeliefs]:
    """Greedy-decode images and read the model's distributions at every generated token.

    Args:
        model: a Pix2Seq model (eval mode).
        batched_inputs: model input dicts (``image``, optionally ``height``/``width`` of the
            original image, e.g. from :meth:`Pix2SeqPredictor.preprocess`).
        class_names: names of the contiguous class ids (default: the ids as text).
        options: decoding options (default: the model's); the strategy is always greedy.
    """
    task, tokenizer = model.task, model.tokenizer
    if not isinstance(task, DetectionTask):
        raise ValueError(f"the beliefs picture draws boxes: it needs a detection model, not {task.name!r}")
    options = dataclasses.replace(options or model.decoding, strategy="greedy")
    images = model.preprocess_image(batched_inputs)
    memory, pos, padding = model.encode(images)
    seqs = decode(model.decoder, task, memory, pos, padding, options, return_logits=True)
    resized = torch.tensor(images.image_sizes, dtype=torch.float)  # [B, 2]
    sizes = torch.tensor(
        [(x.get("height", h), x.get("width", w)) for x, (h, w) in zip(batched_inputs, images.image_sizes)]
    )
    objects = task.decode_objects(
        seqs.tokens, seqs.token_logprobs, seqs.records["class_logprobs"], resized, task.score_mode, options.grammar
    )
    to_original = (sizes / resized).flip(-1).repeat(1, 2)  # [B, 4] w h w h
    coord_probs = coordinate_distributions(seqs.logits, task).cpu()  # [B, K, 4, num_bins]
    masks = task.grammar(seqs.logits.device, options.stop_at_eos, options.allow_noise_class)
    coord_lo, _ = tokenizer.coord_token_range()
    tpo, class_slot = task.tokens_per_object, task.class_slot
    token_names = tokenizer.class_names(class_names)
    name_order = [tokenizer.slot_axes.index(_AXIS_NAMES.index(name)) for name in COORDINATE_NAMES]
    bin_values = tokenizer.bin_values().numpy()

    def name(class_id: int) -> str:
        return class_names[class_id] if class_names is not None and 0 <= class_id < len(class_names) else str(class_id)

    results = []
    for i, (height, width) in enumerate(sizes.tolist()):
        # pixels (original image) of normalised coordinate 1 along y and x
        norm_h, norm_w = tokenizer.normalizer_hw(tuple(images.image_sizes[i]))
        span = {"y": norm_h * height / float(resized[i, 0]), "x": norm_w * width / float(resized[i, 1])}
        obj_list, tokens = [], []
        for t, token in enumerate(seqs.tokens[i].tolist()):
            if token == tokenizer.PAD and token != tokenizer.EOS:
                break
            k, slot = divmod(t, tpo)
            logits = seqs.logits[i, t]
            if token == tokenizer.EOS and (slot == 0 or options.grammar):
                tokens.append(TokenBelief(token, "EOS", _restricted_prob(logits, masks[0], token), -1))
                break
            if slot < class_slot:
                axis_name = _AXIS_NAMES[tokenizer.slot_axes[slot]]
                bin_index = min(max(token - coord_lo, 0), tokenizer.num_bins - 1)
                value = bin_values[bin_index] * span[axis_name[0]]
                prob = float(coord_probs[i, k, COORDINATE_NAMES.index(axis_name), bin_index])
                tokens.append(TokenBelief(token, f"{axis_name}={value:.0f}", prob, k))
                continue
            text = f"class={token_names.get(token, token)}"
            tokens.append(TokenBelief(token, text, _restricted_prob(logits, masks[class_slot], token), k))
            if bool(objects.valid[i, k]):
                class_id = int(objects.classes[i, k])
                bins = seqs.tokens[i, k * tpo : k * tpo + class_slot][name_order] - coord_lo
                obj_list.append(
                    ObjectBelief(
                        index=k,
                        box=(objects.boxes[i, k].cpu() * to_original[i]).numpy(),
                        class_id=class_id,
                        class_name=name(class_id),
                        score=float(objects.scores[i, k]),
                        bins=bins.cpu().numpy(),
                        coord_probs=coord_probs[i, k].numpy(),
                    )
                )
        positions = {axis: bin_values * span[axis] for axis in ("y", "x")}
        results.append(ImageBeliefs(int(height), int(width), tokenizer.num_bins, positions, obj_list, tokens))
    return results


def _draw_distributions(ax, beliefs: ImageBeliefs, objects: list[ObjectBelief], reach: float) -> None:
    """Bin distributions on the image, each scaled to its own peak (``reach`` pixels high): ymin
    along the box's left side (bulging left), ymax along its right side, xmin along its top side
    (bulging up), xmax along its bottom side. A sure coordinate is one spike at its box corner."""
    centres = beliefs.bin_positions
    for index, obj in enumerate(objects):
        color = _COLORS[index % len(_COLORS)]
        x0, y0, x1, y1 = obj.box
        ax.add_patch(Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, edgecolor=color, linewidth=1.0))
        ax.text(x0, y1, f" {index + 1} {obj.class_name} {obj.score:.2f}", color="white", fontsize=7, va="bottom",
                bbox=dict(facecolor=color, alpha=0.8, pad=1, edgecolor="none"))  # fmt: skip
        # (axis the coordinate lies on, the box side the curve stands on, the direction it bulges)
        sides = {"ymin": ("y", x0, -1), "xmin": ("x", y0, -1), "ymax": ("y", x1, 1), "xmax": ("x", y1, 1)}
        for name, probs in zip(COORDINATE_NAMES, obj.coord_probs):
            axis, base, direction = sides[name]
            peak = float(probs.max())
            bump = np.where(probs >= 0.01 * peak, probs / peak * reach, np.nan)  # the bumps, not the flat tails
            along = centres[axis]
            if axis == "y":  # a curve along the vertical axis
                ax.plot(base + direction * bump, along, color=color, lw=1.2)
                ax.fill_betweenx(along, base, base + direction * bump, color=color, alpha=0.25, lw=0)
            else:
                ax.plot(along, base + direction * bump, color=color, lw=1.2)
                ax.fill_between(along, base, base + direction * bump, color=color, alpha=0.25, lw=0)


def _draw_tokens(ax, tokens: list[TokenBelief], hidden: int) -> None:
    """Horizontal bars: the generated sequence top to bottom, each token's probability."""
    rows = np.arange(len(tokens))
    colors = [_COLORS[t.object_index % len(_COLORS)] if t.object_index >= 0 else "gray" for t in tokens]
    ax.barh(rows, [t.prob for t in tokens], color=colors, alpha=0.8)
    ax.set_yticks(rows, [f"{t.object_index + 1 if t.object_index >= 0 else ''} {t.text}" for t in tokens])
    ax.tick_params(axis="y", labelsize=7)
    for row, t in zip(rows, tokens):
        ax.text(min(t.prob, 1.0) + 0.01, row, f"{t.prob:.2f}", va="center", fontsize=6)
    ax.set_xlim(0, 1.15)
    ax.set_ylim(len(tokens) - 0.5, -0.5)
    ax.set_xlabel("probability of the generated token")
    title = "generated tokens (greedy)"
    if hidden:
        title += f", {hidden} more object(s) not shown"
    ax.set_title(title, fontsize=9)


def draw_beliefs(
    image_rgb: np.ndarray,
    beliefs: ImageBeliefs,
    max_objects: int = 10,
    score_threshold: float = 0.0,
    title: str = "",
) -> Figure:
    """A two-panel figure: the bin distributions of each object's coordinates on the image, and
    the generated tokens with their probabilities.

    Args:
        image_rgb: the original image, ``HxWx3`` RGB (the beliefs' coordinates are in its pixels).
        max_objects: draw at most this many objects (the first ones in the sequence).
        score_threshold: draw only objects scoring at least this (their tokens too).
    """
    shown = [obj for obj in beliefs.objects if obj.score >= score_threshold][:max_objects]
    number = {obj.index: n for n, obj in enumerate(shown)}  # sequence index -> colour / label number
    tokens = [
        dataclasses.replace(t, object_index=number.get(t.object_index, -1))
        for t in beliefs.tokens
        if t.object_index < 0 or t.object_index in number
    ]
    hidden = len(beliefs.objects) - len(shown)
    rows = max(len(tokens), 1)
    fig = Figure(figsize=(12, max(5.5, 0.16 * rows + 1.2)), dpi=100)
    FigureCanvasAgg(fig)  # render with Agg, without pyplot's global state
    image_ax, token_ax = fig.subplots(1, 2, gridspec_kw={"width_ratios": [1.5, 1]})
    reach = 0.15 * max(beliefs.height, beliefs.width)
    image_ax.imshow(image_rgb, extent=(0, beliefs.width, beliefs.height, 0), interpolation="nearest")
    _draw_distributions(image_ax, beliefs, shown, reach)
    image_ax.set_xlim(-reach * 1.05, beliefs.width + reach * 1.05)
    image_ax.set_ylim(beliefs.height + reach * 1.05, -reach * 1.05)
    image_ax.set_title(
        "p(bin) of each coordinate, along its axis (each curve scaled to its peak):\n"
        "ymin left of the box, ymax right of it, xmin above it, xmax below it",
        fontsize=9,
    )
    image_ax.tick_params(labelsize=7)
    if tokens:
        _draw_tokens(token_ax, tokens, hidden)
    else:
        token_ax.set_axis_off()
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig
