"""How one image of the embedded shapes dataset is drawn (see :mod:`pix2seq_d2.data.datasets.shapes` for
the scene rules): objects placed without hiding each other, a textured background, distractor lines,
supersampled rendering and noise. Deterministic for a given random generator and :class:`ShapesSplitSpec`."""

from __future__ import annotations

import colorsys
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

__all__ = [
    "DEFAULT_OBJECTS",
    "DEFAULT_REL_SIZE",
    "GENERATOR_VERSION",
    "JPEG_QUALITY",
    "SHAPE_CLASSES",
    "SUPERSAMPLE",
    "ShapesSplitSpec",
    "generate_image",
]

SHAPE_CLASSES: tuple[str, ...] = ("circle", "square", "triangle")
"""Class names; COCO category ids are ``1 + index``."""

GENERATOR_VERSION: int = 1
"""Bump whenever the drawing code changes what a given seed produces."""


DEFAULT_OBJECTS = (1, 4)
DEFAULT_REL_SIZE = (0.1, 0.5)


@dataclass(frozen=True)
class ShapesSplitSpec:
    """Everything that defines the content of one split."""

    num_images: int
    seed: int
    image_size: int
    objects: tuple[int, int] = DEFAULT_OBJECTS  # attempted objects per image, inclusive range
    rel_size: tuple[float, float] = DEFAULT_REL_SIZE  # box side / image side


# --- scene parameters -------------------------------------------------------
SUPERSAMPLE = 4  # shapes are drawn at this many times the final resolution
JPEG_QUALITY = 95
_TRIANGLE_ASPECT = (0.8, 1.25)  # height / width
_MAX_OCCLUDED_FRACTION = 0.5  # of an earlier object's area, hidden by later ones
_MAX_EXTENT_LOSS_PX = 0.5  # an earlier object's visible extent may shrink by this
_PLACEMENT_TRIES = 25
_COLOUR_TRIES = 20
_MIN_COLOUR_DISTANCE = 90.0  # RGB euclidean, object vs local background / neighbours
_NOISE_SIGMA = (8.0, 15.0)
_MAX_LINES = 3  # distractor lines per image (not annotated)
_LINE_WIDTH_PX = (1, 2)


# --- drawing ------------------------------------------------------------------
@dataclass(frozen=True)
class _Shape:
    """One object, in supersampled pixels: it covers ``[x0, x1) x [y0, y1)``."""

    category: int  # index into SHAPE_CLASSES
    x0: int
    y0: int
    x1: int
    y1: int
    color: tuple[int, int, int]

    def mask(self) -> np.ndarray:
        """Boolean ``(y1 - y0, x1 - x0)`` mask of the filled shape inside its box."""
        w, h = self.x1 - self.x0, self.y1 - self.y0
        canvas = Image.new("L", (w, h), 0)
        draw = ImageDraw.Draw(canvas)
        # PIL boxes and polygon vertices are inclusive pixel coordinates.
        name = SHAPE_CLASSES[self.category]
        if name == "circle":
            draw.ellipse([0, 0, w - 1, h - 1], fill=255)
        elif name == "square":
            draw.rectangle([0, 0, w - 1, h - 1], fill=255)
        elif name == "triangle":
            draw.polygon([(0, h - 1), (w - 1, h - 1), ((w - 1) / 2, 0)], fill=255)
        else:  # pragma: no cover - SHAPE_CLASSES and this function go together
            raise ValueError(f"no drawing code for shape {name!r}")
        return np.asarray(canvas) > 0

    def bbox_xywh(self, supersample: int = SUPERSAMPLE) -> list[float]:
        """The tight box ``[x, y, w, h]`` in pixels of the final image."""
        s = float(supersample)
        return [
            self.x0 / s,
            self.y0 / s,
            (self.x1 - self.x0) / s,
            (self.y1 - self.y0) / s,
        ]


@dataclass(frozen=True)
class _Line:
    """A thin distractor line (supersampled pixels)."""

    xy: tuple[float, float, float, float]
    width: int
    color: tuple[int, int, int]


def _hsv_color(h: float, s: float, v: float) -> tuple[int, int, int]:
    r, g, b = colorsys.hsv_to_rgb(h, s, v)
    return (round(r * 255), round(g * 255), round(b * 255))


def _sample_background(rng: np.random.Generator, image_size: int) -> np.ndarray:
    """A smooth random colour gradient plus a low-frequency texture, uint8 ``(S, S, 3)``.

    Returned at supersampled resolution ``S = image_size * SUPERSAMPLE``; its colours
    are muted (low saturation) so that the saturated objects stand out.
    """
    c0 = np.array(_hsv_color(rng.random(), rng.uniform(0.0, 0.5), rng.uniform(0.2, 0.9)), float)
    c1 = np.array(_hsv_color(rng.random(), rng.uniform(0.0, 0.5), rng.uniform(0.2, 0.9)), float)
    angle = rng.uniform(0.0, 2.0 * math.pi)
    coords = (np.arange(image_size, dtype=np.float64) + 0.5) / image_size
    ramp = math.cos(angle) * coords[None, :] + math.sin(angle) * coords[:, None]
    ramp = (ramp - ramp.min()) / max(float(ramp.max() - ramp.min()), 1e-6)
    background = c0 + (c1 - c0) * ramp[..., None]
    for _ in range(3):  # a few soft plane waves, 0.5 to 2.5 periods per image
        freq = rng.uniform(0.5, 2.5)
        theta = rng.uniform(0.0, 2.0 * math.pi)
        phase = rng.uniform(0.0, 2.0 * math.pi)
        amplitude = rng.uniform(-12.0, 12.0, size=3)
        u = 2.0 * math.pi * freq * coords
        wave = np.sin(math.cos(theta) * u[None, :] + math.sin(theta) * u[:, None] + phase)
        background += wave[..., None] * amplitude
    small = Image.fromarray(np.clip(np.rint(background), 0, 255).astype(np.uint8), "RGB")
    size = image_size * SUPERSAMPLE
    return np.asarray(small.resize((size, size), Image.Resampling.BILINEAR)).copy()


def _sample_lines(rng: np.random.Generator, image_size: int) -> list[_Line]:
    """0 to ``_MAX_LINES`` long thin lines of any colour, drawn under the objects."""
    lines = []
    for _ in range(int(rng.integers(0, _MAX_LINES + 1))):
        cx, cy = rng.uniform(0.0, image_size, size=2)
        theta = rng.uniform(0.0, math.pi)
        half = 0.5 * rng.uniform(0.5, 1.5) * image_size
        dx, dy = half * math.cos(theta), half * math.sin(theta)
        width = int(rng.integers(_LINE_WIDTH_PX[0], _LINE_WIDTH_PX[1] + 1))
        color = _hsv_color(rng.random(), rng.random(), rng.uniform(0.2, 1.0))
        s = SUPERSAMPLE
        lines.append(
            _Line(
                ((cx - dx) * s, (cy - dy) * s, (cx + dx) * s, (cy + dy) * s),
                width * s,
                color,
            )
        )
    return lines


def _pick_color(rng: np.random.Generator, references: Sequence[np.ndarray]) -> tuple[int, int, int]:
    """A saturated colour far from every reference colour (best of a few draws)."""
    best, best_distance = (255, 0, 0), -1.0
    for _ in range(_COLOUR_TRIES):
        color = _hsv_color(rng.random(), rng.uniform(0.6, 1.0), rng.uniform(0.55, 1.0))
        rgb = np.array(color, float)
        distance = min((float(np.linalg.norm(rgb - ref)) for ref in references), default=1e9)
        if distance > best_distance:
            best, best_distance = color, distance
        if distance >= _MIN_COLOUR_DISTANCE:
            break
    return best


def _visible_extent_ok(visible: np.ndarray, tolerance: int) -> bool:
    """Whether a visible mask still reaches (within ``tolerance``) all four box sides."""
    cols, rows = visible.any(axis=0), visible.any(axis=1)
    if not cols.any():
        return False
    return (
        int(np.argmax(cols)) <= tolerance
        and int(np.argmax(cols[::-1])) <= tolerance
        and int(np.argmax(rows)) <= tolerance
        and int(np.argmax(rows[::-1])) <= tolerance
    )


def _place_shapes(
    rng: np.random.Generator, background: np.ndarray, spec: ShapesSplitSpec
) -> tuple[list[_Shape], list[int]]:
    """Draw the objects of one image; return them and their visible areas (supersampled px)."""
    image_size = spec.image_size
    min_rel_size, max_rel_size = spec.rel_size
    s = SUPERSAMPLE
    size = image_size * s
    tolerance = round(_MAX_EXTENT_LOSS_PX * s)
    # index of the object on top at each supersampled pixel (-1: background)
    owner = np.full((size, size), -1, dtype=np.int16)
    shapes: list[_Shape] = []
    visible: list[int] = []
    full: list[int] = []
    for _ in range(int(rng.integers(spec.objects[0], spec.objects[1] + 1))):
        category = int(rng.integers(len(SHAPE_CLASSES)))
        for _try in range(_PLACEMENT_TRIES):
            # Draws happen in the same order whatever the class, so the stream stays aligned.
            side = rng.uniform(min_rel_size, max_rel_size) * image_size
            aspect = math.exp(rng.uniform(math.log(_TRIANGLE_ASPECT[0]), math.log(_TRIANGLE_ASPECT[1])))
            fx, fy = rng.random(), rng.random()
            w_px = side
            h_px = side
            if SHAPE_CLASSES[category] == "triangle":
                h_px = min(
                    max(side * aspect, min_rel_size * image_size),
                    max_rel_size * image_size,
                )
            w, h = max(1, round(w_px * s)), max(1, round(h_px * s))
            x0 = min(round(fx * (image_size - w_px) * s), size - w)
            y0 = min(round(fy * (image_size - h_px) * s), size - h)
            candidate = _Shape(category, x0, y0, x0 + w, y0 + h, (0, 0, 0))
            mask = candidate.mask()
            region = owner[y0 : y0 + h, x0 : x0 + w]
            hidden = region[mask]
            lost = np.bincount(hidden[hidden >= 0], minlength=len(shapes))
            if _occlusion_ok(shapes, visible, full, lost, owner, candidate, mask, tolerance):
                break
        else:
            continue  # no valid placement: this object is not drawn
        references = [background[y0 : y0 + h, x0 : x0 + w].reshape(-1, 3).mean(axis=0)]
        margin = 2 * s
        for other in shapes:  # earlier objects touching this one
            if (
                other.x0 < candidate.x1 + margin
                and candidate.x0 < other.x1 + margin
                and other.y0 < candidate.y1 + margin
                and candidate.y0 < other.y1 + margin
            ):
                references.append(np.array(other.color, float))
        shape = _Shape(category, x0, y0, x0 + w, y0 + h, _pick_color(rng, references))
        for index in np.nonzero(lost)[0]:
            visible[index] -= int(lost[index])
        region[mask] = len(shapes)
        area = int(mask.sum())
        shapes.append(shape)
        visible.append(area)
        full.append(area)
    return shapes, visible


def _occlusion_ok(
    shapes: Sequence[_Shape],
    visible: Sequence[int],
    full: Sequence[int],
    lost: np.ndarray,
    owner: np.ndarray,
    candidate: _Shape,
    mask: np.ndarray,
    tolerance: int,
) -> bool:
    """Whether drawing ``candidate`` keeps every earlier object clearly visible."""
    for index in np.nonzero(lost)[0]:
        if visible[index] - lost[index] < (1.0 - _MAX_OCCLUDED_FRACTION) * full[index]:
            return False
        other = shapes[index]
        still = owner[other.y0 : other.y1, other.x0 : other.x1] == index
        # Remove what the candidate would cover, in the other object's box coordinates.
        ix0, ix1 = max(other.x0, candidate.x0), min(other.x1, candidate.x1)
        iy0, iy1 = max(other.y0, candidate.y0), min(other.y1, candidate.y1)
        covered = mask[
            iy0 - candidate.y0 : iy1 - candidate.y0,
            ix0 - candidate.x0 : ix1 - candidate.x0,
        ]
        still[iy0 - other.y0 : iy1 - other.y0, ix0 - other.x0 : ix1 - other.x0] &= ~covered
        if not _visible_extent_ok(still, tolerance):
            return False
    return True


def _render(
    background: np.ndarray,
    lines: Sequence[_Line],
    shapes: Sequence[_Shape],
    image_size: int,
    noise_sigma: float,
    rng: np.random.Generator | None,
) -> np.ndarray:
    """Compose a scene (supersampled background, lines, objects) into a uint8 ``(S, S, 3)`` image.

    Objects are painted in order (later ones on top), the canvas is downsampled with
    a Lanczos filter, then Gaussian noise of ``noise_sigma`` is added (none if 0).
    """
    canvas = Image.fromarray(np.ascontiguousarray(background, dtype=np.uint8), "RGB")
    draw = ImageDraw.Draw(canvas)
    for line in lines:
        draw.line(line.xy, fill=line.color, width=line.width)
    pixels = np.array(canvas)
    for shape in shapes:
        pixels[shape.y0 : shape.y1, shape.x0 : shape.x1][shape.mask()] = shape.color
    small = Image.fromarray(pixels, "RGB").resize((image_size, image_size), Image.Resampling.LANCZOS)
    out = np.asarray(small, dtype=np.float32)
    if noise_sigma > 0:
        if rng is None:
            raise ValueError("noise needs a random generator")
        out = out + rng.normal(0.0, noise_sigma, size=out.shape).astype(np.float32)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def generate_image(rng: np.random.Generator, spec: ShapesSplitSpec) -> tuple[np.ndarray, list[_Shape], list[int]]:
    """One random image: pixels, objects and their visible areas (supersampled px)."""
    image_size = spec.image_size
    background = _sample_background(rng, image_size)
    lines = _sample_lines(rng, image_size)
    shapes, visible = _place_shapes(rng, background, spec)
    sigma = rng.uniform(*_NOISE_SIGMA)
    return _render(background, lines, shapes, image_size, sigma, rng), shapes, visible
