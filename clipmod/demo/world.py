"""A procedurally generated image-caption world for the bundled demo CLIP.

Real CLIP weights live on a model hub we cannot reach, so the demo model is trained here on
images we can draw ourselves. The world is built so that the properties the service relies on
can be *measured*: some (object, colour) pairs never appear in training (``HELD_OUT_PAIRS``), so
zero-shot accuracy on them tests generalisation rather than memorisation, and a subset of the
objects are "violations" so a moderation policy has something to find.

Everything is a pure function of ``(seed, split)``: the generator is seeded from a string (which
:class:`random.Random` hashes with SHA-512, stable across processes, unlike ``hash()``).
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFont

SIZE = 64
"""Side of every rendered image, in pixels (the demo model's input size)."""

_SS = 4
"""Objects are drawn this many times larger and downsampled, which anti-aliases their edges."""

VIOLATIONS: dict[str, tuple[str, ...]] = {
    "weapons": ("knife", "gun"),
    "drugs": ("pill", "syringe"),
    "gore": ("skull", "splatter"),
}
"""Violation objects by the demo policy category they belong to."""

BENIGN: tuple[str, ...] = (
    "flower",
    "cat",
    "car",
    "house",
    "tree",
    "cup",
    "star",
    "heart",
)
OBJECTS: tuple[str, ...] = tuple(o for group in VIOLATIONS.values() for o in group) + BENIGN
VIOLATION_OBJECTS: frozenset[str] = frozenset(o for g in VIOLATIONS.values() for o in g)

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (215, 30, 35),
    "orange": (245, 135, 20),
    "yellow": (245, 220, 40),
    "green": (40, 165, 60),
    "blue": (35, 85, 225),
    "purple": (135, 50, 185),
    "pink": (250, 135, 200),
    "brown": (125, 75, 35),
    "white": (245, 245, 245),
    "black": (25, 25, 25),
}
COLOUR_NAMES: tuple[str, ...] = tuple(COLOURS)


def _held_out() -> tuple[tuple[str, str], ...]:
    # One colour per object, walked so that every colour is held out for some object and every
    # object is still trained in all the others: the model must generalise along both axes.
    return tuple((obj, COLOUR_NAMES[(3 * i) % len(COLOUR_NAMES)]) for i, obj in enumerate(OBJECTS))


HELD_OUT_PAIRS: tuple[tuple[str, str], ...] = _held_out()
"""(object, colour) pairs that never appear in the ``train`` or ``val`` splits."""
_HELD_OUT_SET = frozenset(HELD_OUT_PAIRS)

BACKGROUNDS: tuple[str, ...] = ("plain", "gradient", "stripes", "noise")
_BG_PHRASE = {
    "plain": "a plain background",
    "gradient": "a gradient background",
    "stripes": "a striped background",
    "noise": "a noisy background",
}
# Muted mid-to-light tones: every object, black ones included, stands out by its outline.
_BG_TONES: tuple[tuple[int, int, int], ...] = (
    (200, 200, 200),
    (225, 215, 190),
    (185, 205, 225),
    (200, 225, 200),
    (225, 200, 205),
    (130, 130, 135),
    (150, 160, 140),
    (140, 150, 175),
    (165, 145, 120),
    (160, 150, 170),
)
WORDS: tuple[str, ...] = (
    "hello",
    "sale",
    "open",
    "love",
    "peace",
    "yes",
    "cool",
    "wow",
    "fun",
    "zoo",
    "hi",
    "news",
)
"""Rendered words are deliberately unrelated to any object so they act as distractors."""

SPLITS: tuple[str, ...] = ("train", "val", "heldout")

# Geometry. The ranges are wide enough that position, size and pose vary, and narrow enough that
# a small ViT learns the shapes within a CPU-sized training budget.
ROTATION = 20.0
SINGLE_SIZE = (34, 56)
PAIR_SIZE = (30, 38)
PAIR_JITTER = 3.0
"""Pixels each of a pair may move from the centre of its half."""
PAIRS = 0.4
"""Share of images that hold two objects."""
PAIR_NAMES_ONE = 0.35
"""Share of two-object images whose caption names only one of them, as real alt text names the
salient thing. Without these, contrastive training pushes a two-object image *away* from
"a photo of a knife" (a single-object caption in the batch fits that prompt better), and the
zero-shot prompts a policy uses stop finding a knife that shares the frame."""
JITTER = 0.6
"""Fraction of the free room an object may move from the centre of its area."""
NOISE = 15.0
"""Standard deviation of the ``noise`` background."""
COLOUR_JITTER = 40
"""Per-channel spread around each named colour, so each name covers a region, not a point."""
OUTLINE = 0.07
"""Outline width as a fraction of object size: the colour-independent part of a shape."""
MONOCHROME = 0.35
"""Share of train/val images shown in black and white."""
_MONO_TEMPLATES = (
    "a black and white photo of {}",
    "a grayscale image of {}",
    "a black and white drawing of {}",
)


@dataclass(frozen=True)
class Sample:
    """One rendered image with its caption and the ground truth behind both."""

    image: Image.Image
    caption: str
    objects: tuple[str, ...]
    colours: tuple[str, ...]
    background: str
    word: str | None
    monochrome: bool = False
    """Drawn in colour, shown in grey: the colours are ground truth the caption cannot name."""


def category_of(obj: str) -> str | None:
    """The demo policy category an object violates, or ``None`` when it is benign."""
    for cat, objs in VIOLATIONS.items():
        if obj in objs:
            return cat
    return None


def article(phrase: str) -> str:
    return ("an " if phrase[0] in "aeiou" else "a ") + phrase


# ---------------------------------------------------------------------------------------------
# Object shapes. Each is drawn in a square of side n (at supersampled scale) with a fill colour,
# a darker shade for details and an outline colour that contrasts with the fill.

_Draw = Callable[
    [ImageDraw.ImageDraw, int, tuple[int, ...], tuple[int, ...], tuple[int, ...]], None
]


def _width(n: int) -> int:
    return max(2, round(n * OUTLINE))


def _pts(n: int, *xy: float) -> list[tuple[float, float]]:
    return [(xy[i] * n, xy[i + 1] * n) for i in range(0, len(xy), 2)]


def _box(n: int, x0: float, y0: float, x1: float, y1: float) -> tuple[float, ...]:
    return (x0 * n, y0 * n, x1 * n, y1 * n)


def _knife(
    d: ImageDraw.ImageDraw, n: int, c: tuple[int, ...], dk: tuple[int, ...], ol: tuple[int, ...]
) -> None:
    w = _width(n)
    d.polygon(_pts(n, 0.03, 0.42, 0.6, 0.3, 0.6, 0.62, 0.2, 0.62), fill=c, outline=ol, width=w)
    d.rounded_rectangle(
        _box(n, 0.6, 0.36, 0.97, 0.64), radius=n * 0.06, fill=dk, outline=ol, width=w
    )
    d.line(_pts(n, 0.12, 0.5, 0.56, 0.42), fill=ol, width=w)


def _gun(
    d: ImageDraw.ImageDraw, n: int, c: tuple[int, ...], dk: tuple[int, ...], ol: tuple[int, ...]
) -> None:
    w = _width(n)
    d.rectangle(_box(n, 0.08, 0.25, 0.92, 0.45), fill=c, outline=ol, width=w)
    d.polygon(_pts(n, 0.62, 0.45, 0.88, 0.45, 0.95, 0.9, 0.7, 0.9), fill=c, outline=ol, width=w)
    d.arc(_box(n, 0.45, 0.35, 0.68, 0.68), 0, 180, fill=ol, width=2 * w)
    d.rectangle(_box(n, 0.08, 0.2, 0.14, 0.25), fill=dk, outline=ol, width=w)


def _pill(
    d: ImageDraw.ImageDraw, n: int, c: tuple[int, ...], dk: tuple[int, ...], ol: tuple[int, ...]
) -> None:
    w = _width(n)
    d.rounded_rectangle(_box(n, 0.1, 0.32, 0.9, 0.68), radius=n * 0.18, fill=c, outline=ol, width=w)
    d.rounded_rectangle(
        _box(n, 0.5, 0.32, 0.9, 0.68), radius=n * 0.18, fill=dk, outline=ol, width=w
    )
    d.rectangle(_box(n, 0.5, 0.32 + 0.02, 0.6, 0.68 - 0.02), fill=dk)
    d.line(_pts(n, 0.5, 0.32, 0.5, 0.68), fill=ol, width=w)


def _syringe(
    d: ImageDraw.ImageDraw, n: int, c: tuple[int, ...], dk: tuple[int, ...], ol: tuple[int, ...]
) -> None:
    w = _width(n)
    d.line(_pts(n, 0.02, 0.5, 0.25, 0.5), fill=ol, width=2 * w)
    d.rectangle(_box(n, 0.25, 0.33, 0.7, 0.67), fill=c, outline=ol, width=w)
    for x in (0.35, 0.45, 0.55):
        d.line(_pts(n, x, 0.33, x, 0.5), fill=ol, width=w)
    d.rectangle(_box(n, 0.7, 0.45, 0.88, 0.55), fill=dk, outline=ol, width=w)
    d.rectangle(_box(n, 0.88, 0.3, 0.95, 0.7), fill=dk, outline=ol, width=w)
    d.rectangle(_box(n, 0.66, 0.27, 0.71, 0.73), fill=dk, outline=ol, width=w)


def _skull(
    d: ImageDraw.ImageDraw, n: int, c: tuple[int, ...], dk: tuple[int, ...], ol: tuple[int, ...]
) -> None:
    w = _width(n)
    d.rounded_rectangle(_box(n, 0.3, 0.55, 0.7, 0.9), radius=n * 0.06, fill=c, outline=ol, width=w)
    d.ellipse(_box(n, 0.12, 0.08, 0.88, 0.72), fill=c, outline=ol, width=w)
    d.ellipse(_box(n, 0.25, 0.35, 0.45, 0.55), fill=ol)
    d.ellipse(_box(n, 0.55, 0.35, 0.75, 0.55), fill=ol)
    d.polygon(_pts(n, 0.5, 0.58, 0.44, 0.68, 0.56, 0.68), fill=ol)
    for x in (0.38, 0.46, 0.54, 0.62):
        d.line(_pts(n, x, 0.78, x, 0.9), fill=ol, width=w)


def _splatter(
    d: ImageDraw.ImageDraw, n: int, c: tuple[int, ...], dk: tuple[int, ...], ol: tuple[int, ...]
) -> None:
    # A fixed blob-and-droplets pattern: irregular, but the same shape every time so that the
    # tiny model can learn it as a kind rather than as noise.
    d.ellipse(_box(n, 0.28, 0.28, 0.72, 0.72), fill=c)
    for ang, r, rad in (
        (0, 0.28, 0.1),
        (50, 0.3, 0.08),
        (110, 0.27, 0.11),
        (170, 0.3, 0.07),
        (220, 0.29, 0.1),
        (290, 0.3, 0.08),
    ):
        x = 0.5 + r * math.cos(math.radians(ang))
        y = 0.5 + r * math.sin(math.radians(ang))
        d.ellipse(_box(n, x - rad, y - rad, x + rad, y + rad), fill=c)
    for ang, r, rad in (
        (20, 0.44, 0.04),
        (80, 0.45, 0.035),
        (140, 0.43, 0.045),
        (200, 0.46, 0.03),
        (260, 0.44, 0.04),
        (330, 0.45, 0.035),
    ):
        x = 0.5 + r * math.cos(math.radians(ang))
        y = 0.5 + r * math.sin(math.radians(ang))
        d.ellipse(_box(n, x - rad, y - rad, x + rad, y + rad), fill=dk)


def _flower(
    d: ImageDraw.ImageDraw, n: int, c: tuple[int, ...], dk: tuple[int, ...], ol: tuple[int, ...]
) -> None:
    w = _width(n)
    for k in range(6):
        a = math.radians(60 * k)
        x, y = 0.5 + 0.26 * math.cos(a), 0.5 + 0.26 * math.sin(a)
        d.ellipse(_box(n, x - 0.17, y - 0.17, x + 0.17, y + 0.17), fill=c, outline=ol, width=w)
    d.ellipse(_box(n, 0.37, 0.37, 0.63, 0.63), fill=dk, outline=ol, width=w)


def _cat(
    d: ImageDraw.ImageDraw, n: int, c: tuple[int, ...], dk: tuple[int, ...], ol: tuple[int, ...]
) -> None:
    w = _width(n)
    d.polygon(_pts(n, 0.15, 0.45, 0.2, 0.08, 0.45, 0.3), fill=c, outline=ol, width=w)
    d.polygon(_pts(n, 0.85, 0.45, 0.8, 0.08, 0.55, 0.3), fill=c, outline=ol, width=w)
    d.ellipse(_box(n, 0.13, 0.22, 0.87, 0.9), fill=c, outline=ol, width=w)
    d.ellipse(_box(n, 0.3, 0.42, 0.42, 0.56), fill=ol)
    d.ellipse(_box(n, 0.58, 0.42, 0.7, 0.56), fill=ol)
    d.polygon(_pts(n, 0.45, 0.64, 0.55, 0.64, 0.5, 0.7), fill=dk)
    for dy in (-0.04, 0.04):
        d.line(_pts(n, 0.05, 0.68 + dy, 0.36, 0.68), fill=ol, width=w)
        d.line(_pts(n, 0.95, 0.68 + dy, 0.64, 0.68), fill=ol, width=w)


def _car(
    d: ImageDraw.ImageDraw, n: int, c: tuple[int, ...], dk: tuple[int, ...], ol: tuple[int, ...]
) -> None:
    w = _width(n)
    d.polygon(_pts(n, 0.25, 0.45, 0.35, 0.22, 0.68, 0.22, 0.78, 0.45), fill=c, outline=ol, width=w)
    d.polygon(_pts(n, 0.33, 0.44, 0.4, 0.28, 0.5, 0.28, 0.5, 0.44), fill=(200, 225, 240))
    d.polygon(_pts(n, 0.54, 0.44, 0.54, 0.28, 0.64, 0.28, 0.7, 0.44), fill=(200, 225, 240))
    d.rounded_rectangle(
        _box(n, 0.04, 0.42, 0.96, 0.7), radius=n * 0.06, fill=c, outline=ol, width=w
    )
    for x in (0.24, 0.76):
        d.ellipse(_box(n, x - 0.12, 0.58, x + 0.12, 0.82), fill=(30, 30, 30), outline=ol, width=w)
        d.ellipse(_box(n, x - 0.05, 0.65, x + 0.05, 0.75), fill=(170, 170, 170))


def _house(
    d: ImageDraw.ImageDraw, n: int, c: tuple[int, ...], dk: tuple[int, ...], ol: tuple[int, ...]
) -> None:
    w = _width(n)
    d.rectangle(_box(n, 0.18, 0.45, 0.82, 0.92), fill=c, outline=ol, width=w)
    d.polygon(_pts(n, 0.08, 0.47, 0.5, 0.08, 0.92, 0.47), fill=dk, outline=ol, width=w)
    d.rectangle(_box(n, 0.42, 0.64, 0.58, 0.92), fill=ol)
    d.rectangle(_box(n, 0.25, 0.55, 0.37, 0.67), fill=(200, 225, 240), outline=ol, width=w)
    d.rectangle(_box(n, 0.63, 0.55, 0.75, 0.67), fill=(200, 225, 240), outline=ol, width=w)


def _tree(
    d: ImageDraw.ImageDraw, n: int, c: tuple[int, ...], dk: tuple[int, ...], ol: tuple[int, ...]
) -> None:
    w = _width(n)
    d.rectangle(_box(n, 0.42, 0.55, 0.58, 0.95), fill=dk, outline=ol, width=w)
    d.ellipse(_box(n, 0.12, 0.05, 0.88, 0.68), fill=c, outline=ol, width=w)
    d.ellipse(_box(n, 0.3, 0.2, 0.45, 0.35), fill=dk)
    d.ellipse(_box(n, 0.55, 0.38, 0.68, 0.5), fill=dk)


def _cup(
    d: ImageDraw.ImageDraw, n: int, c: tuple[int, ...], dk: tuple[int, ...], ol: tuple[int, ...]
) -> None:
    w = _width(n)
    ring = round(0.09 * n)
    d.ellipse(_box(n, 0.5, 0.32, 0.94, 0.76), outline=ol, width=ring + 2 * w)
    x0, y0, x1, y1 = _box(n, 0.5, 0.32, 0.94, 0.76)
    d.ellipse((x0 + w, y0 + w, x1 - w, y1 - w), outline=c, width=ring)
    d.polygon(_pts(n, 0.15, 0.25, 0.7, 0.25, 0.64, 0.85, 0.21, 0.85), fill=c, outline=ol, width=w)
    d.ellipse(_box(n, 0.15, 0.19, 0.7, 0.31), fill=dk, outline=ol, width=w)


def _star(
    d: ImageDraw.ImageDraw, n: int, c: tuple[int, ...], dk: tuple[int, ...], ol: tuple[int, ...]
) -> None:
    w = _width(n)
    pts = []
    for k in range(10):
        r = 0.47 if k % 2 == 0 else 0.19
        a = math.radians(-90 + 36 * k)
        pts.append((n * (0.5 + r * math.cos(a)), n * (0.53 + r * math.sin(a))))
    d.polygon(pts, fill=c, outline=ol, width=w)


def _heart(
    d: ImageDraw.ImageDraw, n: int, c: tuple[int, ...], dk: tuple[int, ...], ol: tuple[int, ...]
) -> None:
    w = _width(n)
    d.ellipse(_box(n, 0.08, 0.15, 0.52, 0.58), fill=c, outline=ol, width=w)
    d.ellipse(_box(n, 0.48, 0.15, 0.92, 0.58), fill=c, outline=ol, width=w)
    d.polygon(_pts(n, 0.1, 0.45, 0.9, 0.45, 0.5, 0.9), fill=c, outline=ol, width=w)
    d.polygon(_pts(n, 0.14, 0.42, 0.86, 0.42, 0.5, 0.84), fill=c)


_SHAPES: dict[str, _Draw] = {
    "knife": _knife,
    "gun": _gun,
    "pill": _pill,
    "syringe": _syringe,
    "skull": _skull,
    "splatter": _splatter,
    "flower": _flower,
    "cat": _cat,
    "car": _car,
    "house": _house,
    "tree": _tree,
    "cup": _cup,
    "star": _star,
    "heart": _heart,
}
assert set(_SHAPES) == set(OBJECTS)


# ---------------------------------------------------------------------------------------------
# Rendering.


def _jitter(rng: random.Random, rgb: tuple[int, int, int], amount: int) -> tuple[int, int, int]:
    r, g, b = (min(255, max(0, v + rng.randint(-amount, amount))) for v in rgb)
    return (r, g, b)


def _background(rng: random.Random, kind: str) -> Image.Image:
    c1 = np.array(_jitter(rng, rng.choice(_BG_TONES), 12), dtype=np.float32)
    c2 = np.array(_jitter(rng, rng.choice(_BG_TONES), 12), dtype=np.float32)
    yy, xx = np.mgrid[0:SIZE, 0:SIZE].astype(np.float32) / (SIZE - 1)
    angle = rng.choice((0.0, 0.5, 1.0, -1.0))  # horizontal, diagonal, vertical, anti-diagonal
    axis = xx * (1 - abs(angle)) + (yy if angle >= 0 else 1 - yy) * abs(angle)
    axis = axis / max(float(axis.max()), 1e-6)
    if kind == "plain":
        arr = np.broadcast_to(c1, (SIZE, SIZE, 3)).copy()
    elif kind == "gradient":
        arr = c1 + (c2 - c1) * axis[..., None]
    elif kind == "stripes":
        if np.abs(c1 - c2).sum() < 90:  # stripes must be visible to be worth a caption
            c2 = np.where(c1 > 128, c1 - 70, c1 + 70)
        period = rng.randint(6, 14)
        on = (np.floor(axis * SIZE / (period / 2)) % 2)[..., None]
        arr = c1 * (1 - on) + c2 * on
    else:
        noise = np.random.default_rng(rng.getrandbits(64)).normal(0, NOISE, (SIZE, SIZE, 3))
        arr = c1 + noise.astype(np.float32)
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), "RGB")


def _shades(rgb: tuple[int, int, int]) -> tuple[tuple[int, ...], tuple[int, ...]]:
    lum = 0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2]
    # The outline is the same near-black for every colour, so a shape looks the same whatever
    # its fill; a dark fill gets lighter details instead of darker ones so they stay visible.
    details = tuple(min(255, v + 60) for v in rgb) if lum < 70 else tuple(int(v * 0.6) for v in rgb)
    return details, (15, 15, 15)


def _draw_object(
    canvas: Image.Image,
    rng: random.Random,
    obj: str,
    colour: str,
    size: int,
    centre: tuple[float, float],
) -> None:
    rgb = _jitter(rng, COLOURS[colour], COLOUR_JITTER)
    dark, outline = _shades(rgb)
    n = size * _SS
    layer = Image.new("RGBA", (n, n), (0, 0, 0, 0))
    fill = (*rgb, 255)
    _SHAPES[obj](ImageDraw.Draw(layer), n, fill, (*dark, 255), (*outline, 255))
    layer = layer.rotate(
        rng.uniform(-ROTATION, ROTATION), resample=Image.Resampling.BILINEAR, expand=True
    )
    m = max(1, round(layer.width / _SS))
    layer = layer.resize((m, m), Image.Resampling.BOX)
    canvas.alpha_composite(layer, (round(centre[0] - m / 2), round(centre[1] - m / 2)))


def _caption(
    rng: random.Random,
    objs: list[str],
    cols: list[str],
    sizes: list[int],
    bg: str,
    word: str | None,
) -> str:
    bgp = _BG_PHRASE[bg]
    # Colour is named in most captions but not all: the colour-less ones tie an object's name to
    # its shape alone, which is what zero-shot prompts such as "a photo of a knife" rely on.
    named = [f"{c} {o}" if rng.random() < 0.6 else o for o, c in zip(objs, cols, strict=True)]
    if len(objs) == 2 and rng.random() < PAIR_NAMES_ONE:  # see PAIR_NAMES_ONE
        keep = rng.randrange(2)
        named, sizes = [named[keep]], [sizes[keep]]
    if len(named) == 1:
        x = named[0]
        size = "small" if sizes[0] < 40 else "large" if sizes[0] > 48 else "medium-sized"
        templates: tuple[str, ...] = (
            f"a photo of {article(x)}",
            f"a photo of {article(x)} on {bgp}",
            f"{article(x)} on {bgp}",
            f"a drawing of {article(size + ' ' + x)}",
            f"an image of {article(x)}",
            x,
        )
    else:
        a, b = (article(x) for x in named)
        templates = (
            f"two objects: {a} and {b}",
            f"a photo of {a} and {b}",
            f"{a} next to {b} on {bgp}",
            f"{a} and {b}",
        )
    text = rng.choice(templates)
    if word is not None and rng.random() < 0.7:
        text += f' with the word "{word}"'
    return text


def _choose_pair(rng: random.Random, split: str, exclude: str | None) -> tuple[str, str]:
    while True:
        obj = rng.choice(OBJECTS)
        if obj == exclude:
            continue
        if split == "heldout":
            return obj, rng.choice([c for o, c in HELD_OUT_PAIRS if o == obj])
        colour = rng.choice(COLOUR_NAMES)
        if (obj, colour) not in _HELD_OUT_SET:
            return obj, colour


def _place(rng: random.Random, lo: float, hi: float, size: int) -> float:
    """A centre coordinate keeping an object of ``size`` inside [lo, hi]."""
    room = max(0.0, (hi - lo - size) / 2) * JITTER
    return (lo + hi) / 2 + rng.uniform(-room, room)


def render(seed: int, split: str = "train", n_objects: int | None = None) -> Sample:
    """Render sample ``seed`` of ``split``; the same arguments always give the same sample.

    ``n_objects`` forces one or two objects (evaluation wants single-object images for
    zero-shot classification); by default a share ``PAIRS`` of images hold two.
    """
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")
    rng = random.Random(f"clipmod-demo-world:{split}:{seed}:{n_objects}")
    count = n_objects if n_objects is not None else (2 if rng.random() < PAIRS else 1)
    if count not in (1, 2):
        raise ValueError("n_objects must be 1 or 2")
    bg = rng.choice(BACKGROUNDS)
    word = rng.choice(WORDS) if rng.random() < 0.25 else None
    canvas = _background(rng, bg).convert("RGBA")

    # A word takes a 14 px band at the top or bottom; the objects share what is left.
    band_top = rng.random() < 0.5
    y0, y1 = (14, SIZE) if word and band_top else (0, SIZE - 14) if word else (0, SIZE)
    objs: list[str] = []
    cols: list[str] = []
    sizes: list[int] = []
    for k in range(count):
        obj, colour = _choose_pair(rng, split, objs[0] if objs else None)
        if count == 1:
            size = rng.randint(SINGLE_SIZE[0], min(SINGLE_SIZE[1], y1 - y0))
            cx = _place(rng, 0, SIZE, size)
            cy = _place(rng, y0, y1, size)
        else:
            # Each of a pair is centred in its own half; big enough to recognise, they may touch.
            size = rng.randint(*PAIR_SIZE)
            half = SIZE // 2
            cx = k * half + half / 2 + rng.uniform(-PAIR_JITTER, PAIR_JITTER)
            cy = (y0 + y1) / 2 + rng.uniform(-PAIR_JITTER, PAIR_JITTER)
        _draw_object(canvas, rng, obj, colour, size, (cx, cy))
        objs.append(obj)
        cols.append(colour)
        sizes.append(size)
    if rng.random() < 0.5:  # the caption lists objects in either order
        objs.reverse()
        cols.reverse()
        sizes.reverse()

    if word is not None:
        draw = ImageDraw.Draw(canvas)
        font = ImageFont.load_default(size=12)
        ink = rng.choice(((255, 255, 255, 255), (15, 15, 15, 255), (200, 20, 20, 255)))
        width = draw.textlength(word, font=font)
        x = rng.uniform(1, max(1.0, SIZE - width - 1))
        y = 0 if band_top else SIZE - 14
        draw.text((x, y), word, font=font, fill=ink)

    # Some black-and-white photos (never in ``heldout``, which tests colour generalisation): with
    # the colour gone, only shape can match the caption, which teaches the image tower the
    # colour-independent features that unseen (object, colour) pairs depend on.
    if split != "heldout" and rng.random() < MONOCHROME:
        named = " and ".join(article(o) for o in objs)
        caption = rng.choice(_MONO_TEMPLATES).format(named)
        image = canvas.convert("L").convert("RGB")
        return Sample(image, caption, tuple(objs), tuple(cols), bg, word, monochrome=True)
    caption = _caption(rng, objs, cols, sizes, bg, word)
    return Sample(canvas.convert("RGB"), caption, tuple(objs), tuple(cols), bg, word)
