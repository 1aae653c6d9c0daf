"""Inputs that are not digits, made as MNIST made its digits: for evaluating the anomaly decision.

MNIST's digits were scanned strokes, fitted into a 20x20 box with their aspect ratio kept, then
placed in a 28x28 image with their centre of mass at the centre (LeCun et al.). :func:`mnist_style`
does the same to any white-on-black drawing, and the families here are drawn that way:

- ``letters``: A-Z and a-z, in every font found (Debian's fonts-dejavu and fonts-liberation, and
  the font Pillow bundles, so the family exists on any machine);
- ``symbols``: punctuation and signs from the same fonts;
- ``scribbles``: random pen strokes (Bezier curves of MNIST's stroke width) that are no character;
- ``noise``, ``blank``, ``white`` and ``inverted`` (test digits, black on white).

These are for evaluation only: nothing here is ever used to train, tune or calibrate a model.
"""

from __future__ import annotations

import string
from collections.abc import Iterable
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

FONT_DIRS = (Path("/usr/share/fonts/truetype/dejavu"), Path("/usr/share/fonts/truetype/liberation"))
LETTERS = string.ascii_uppercase + string.ascii_lowercase
SYMBOLS = "#$%&*+/<=>?@[]{}~!^|\\()"
_RENDER_SIZE = 96  # glyphs are drawn large, then fitted into MNIST's 20x20 box


def font_files(dirs: Iterable[Path] = FONT_DIRS) -> list[Path]:
    """The TrueType fonts installed in ``dirs`` (none where they are absent), sorted."""
    return sorted(path for d in dirs if d.is_dir() for path in d.glob("*.ttf"))


def _fonts(files: Iterable[Path]) -> list[ImageFont.FreeTypeFont]:
    # Pillow's own scalable font first: it needs no system package
    bundled = ImageFont.load_default(_RENDER_SIZE)
    fonts = [bundled] if isinstance(bundled, ImageFont.FreeTypeFont) else []
    return fonts + [ImageFont.truetype(str(path), _RENDER_SIZE) for path in files]


def mnist_style(drawing: np.ndarray) -> np.ndarray:
    """A white-on-black drawing (H,W) uint8 -> (28,28) uint8 as MNIST's digits were made: cropped
    to its ink, scaled to fit 20x20 with its aspect ratio kept, centred by its centre of mass."""
    rows, cols = np.nonzero(drawing)
    if len(rows) == 0:
        return np.zeros((28, 28), np.uint8)
    ink = drawing[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]
    height, width = ink.shape
    scale = 20 / max(height, width)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    fitted = np.asarray(Image.fromarray(ink).resize(size, Image.Resampling.LANCZOS), dtype=np.float64)
    fitted = np.clip(fitted, 0, 255)
    mass = fitted.sum()
    cy = (fitted.sum(axis=1) * np.arange(fitted.shape[0])).sum() / mass
    cx = (fitted.sum(axis=0) * np.arange(fitted.shape[1])).sum() / mass
    top, left = round(14 - 0.5 - cy), round(14 - 0.5 - cx)
    top = min(max(top, 0), 28 - fitted.shape[0])
    left = min(max(left, 0), 28 - fitted.shape[1])
    out = np.zeros((28, 28), np.float64)
    out[top : top + fitted.shape[0], left : left + fitted.shape[1]] = fitted
    return out.round().astype(np.uint8)


def render_characters(characters: str, files: Iterable[Path] | None = None) -> np.ndarray:
    """(N,28,28) uint8: each character in each font, MNIST-style; glyphs a font lacks (no ink) are left out."""
    images = []
    for font in _fonts(font_files() if files is None else files):
        for character in characters:
            canvas = Image.new("L", (2 * _RENDER_SIZE, 2 * _RENDER_SIZE), 0)
            ImageDraw.Draw(canvas).text((_RENDER_SIZE // 2, _RENDER_SIZE // 4), character, fill=255, font=font)
            drawing = np.asarray(canvas)
            if drawing.any():
                images.append(mnist_style(drawing))
    return np.stack(images)


def scribbles(count: int, seed: int = 0) -> np.ndarray:
    """(count,28,28) uint8: one to three random strokes each (cubic Bezier curves), drawn with the
    width MNIST's strokes have once fitted to 20x20 (about 2-3 pixels), MNIST-style."""
    rng = np.random.default_rng(seed)
    images = []
    t = np.linspace(0, 1, 64)[:, None]
    for _ in range(count):
        canvas = Image.new("L", (200, 200), 0)
        draw = ImageDraw.Draw(canvas)
        width = int(rng.integers(14, 22))  # at 200 px, scaled by ~20/150: 2-3 px
        for _ in range(int(rng.integers(1, 4))):
            p0, p1, p2, p3 = rng.uniform(20, 180, (4, 2))
            curve = (1 - t) ** 3 * p0 + 3 * (1 - t) ** 2 * t * p1 + 3 * (1 - t) * t**2 * p2 + t**3 * p3
            draw.line([tuple(p) for p in curve.tolist()], fill=255, width=width, joint="curve")
        images.append(mnist_style(np.asarray(canvas)))
    return np.stack(images)


def families(test_digits: np.ndarray, *, fonts: Iterable[Path] | None = None, seed: int = 0) -> dict[str, np.ndarray]:
    """Every family of non-digits, (N,28,28) uint8 each; ``test_digits`` (N,28,28) uint8 give the inverted ones."""
    rng = np.random.default_rng(seed)
    files = font_files() if fonts is None else list(fonts)
    n = 500
    return {
        "letters": render_characters(LETTERS, files),
        "symbols": render_characters(SYMBOLS, files),
        "scribbles": scribbles(n, seed),
        "noise": rng.integers(0, 256, (n, 28, 28), dtype=np.uint8),
        "blank": np.zeros((1, 28, 28), np.uint8),
        "white": np.full((1, 28, 28), 255, np.uint8),
        "inverted": 255 - test_digits[:n],
    }
