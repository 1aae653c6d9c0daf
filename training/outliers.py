"""Non-digits to train a novelty score on (outlier exposure), none of them a character.

A model that has only seen digits has no reason to score a letter as foreign: it was never shown
what "not a digit" looks like. Outlier exposure (Hendrycks et al. 2019) shows it some. The rule
here: never letters, symbols or any font rendering (those are kept for evaluation,
training/ood_inputs.py), only

- ``strokes``: one to four random cubic Bezier pen strokes, of widths around MNIST's;
- ``blobs``: one to three filled ellipses of random grey;
- ``noise``: uniform random pixels;
- ``chimeras``: two training digits of different classes joined at a random row or column, or
  laid over each other with an offset: digit strokes in arrangements that no digit has.

Half of the strokes and blobs are blurred, as scanned pen strokes are. Everything is made
MNIST-style (training/ood_inputs.py's ``mnist_style``) and seeded, so a training run is repeatable.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from training.ood_inputs import mnist_style

KINDS = ("strokes", "blobs", "noise", "chimeras")
_CANVAS = 200  # drawn at 200x200, then fitted into 20x20: widths 10-34 become ~1-4 pixels


def _drawing(rng: np.random.Generator, kind: str) -> np.ndarray:
    canvas = Image.new("L", (_CANVAS, _CANVAS), 0)
    draw = ImageDraw.Draw(canvas)
    if kind == "strokes":
        t = np.linspace(0, 1, 48)[:, None]
        width = int(rng.integers(10, 34))
        for _ in range(int(rng.integers(1, 5))):
            p0, p1, p2, p3 = rng.uniform(10, _CANVAS - 10, (4, 2))
            curve = (1 - t) ** 3 * p0 + 3 * (1 - t) ** 2 * t * p1 + 3 * (1 - t) * t**2 * p2 + t**3 * p3
            draw.line([tuple(p) for p in curve.tolist()], fill=255, width=width, joint="curve")
    else:  # blobs
        for _ in range(int(rng.integers(1, 4))):
            x0, y0 = rng.uniform(10, 150, 2)
            width, height = rng.uniform(10, 60, 2)
            draw.ellipse((x0, y0, x0 + width, y0 + height), fill=int(rng.integers(128, 256)))
    if rng.random() < 0.5:
        canvas = canvas.filter(ImageFilter.GaussianBlur(float(rng.uniform(1, 6))))
    return np.asarray(canvas)


def _chimera(rng: np.random.Generator, digits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    i = int(rng.integers(len(digits)))
    others = np.flatnonzero(labels != labels[i])
    j = int(others[rng.integers(len(others))])
    a, b = digits[i], digits[j]
    how = rng.random()
    if how < 0.3:  # the top of one, the bottom of the other
        cut = int(rng.integers(9, 19))
        joined = np.concatenate([a[:cut], b[cut:]], axis=0)
    elif how < 0.6:  # the left of one, the right of the other
        cut = int(rng.integers(9, 19))
        joined = np.concatenate([a[:, :cut], b[:, cut:]], axis=1)
    else:  # both, the second shifted
        dy, dx = (int(v) for v in rng.integers(-8, 9, 2))
        joined = np.maximum(a, np.roll(b, (dy, dx), axis=(0, 1)))
    return mnist_style(joined)


def outlier_exposure(
    digits: np.ndarray, labels: np.ndarray, counts: Mapping[str, int], seed: int = 0
) -> dict[str, np.ndarray]:
    """``counts[kind]`` images of each kind in ``KINDS``, (count,28,28) uint8; chimeras from ``digits``
    (N,28,28) uint8 and their ``labels`` (N,), which must hold two classes at least."""
    if set(counts) != set(KINDS):
        raise ValueError(f"need a count for each of {KINDS}, got {sorted(counts)}")
    if counts["chimeras"] and len(np.unique(labels)) < 2:
        raise ValueError("chimeras need digits of two classes at least")
    rng = np.random.default_rng(seed)
    return {
        "strokes": _stack([mnist_style(_drawing(rng, "strokes")) for _ in range(counts["strokes"])]),
        "blobs": _stack([mnist_style(_drawing(rng, "blobs")) for _ in range(counts["blobs"])]),
        "noise": rng.integers(0, 256, (counts["noise"], 28, 28), dtype=np.uint8),
        "chimeras": _stack([_chimera(rng, digits, labels) for _ in range(counts["chimeras"])]),
    }


def _stack(images: list[np.ndarray]) -> np.ndarray:
    return np.stack(images) if images else np.zeros((0, 28, 28), np.uint8)
