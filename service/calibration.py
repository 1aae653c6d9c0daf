"""What "normal" looks like for a checkpoint: quantiles of the anomaly score on normal images.

Training ends by scoring normal images the model did not train on (the validation split it held
out) and storing quantiles of their per-image reconstruction MSE in the checkpoint's metadata,
overall and per digit (``python -m training.calibrate`` does the same for an existing checkpoint).
From those quantiles the service gives every reconstructed image

- its ``percentile``: the share of normal images that scored lower, in 0..100, interpolated
  linearly between the stored quantiles;
- ``anomaly``: decided from that percentile by service/scoring.py.

The metadata is checked as strictly as the weights: malformed calibration refuses the whole
checkpoint (``from_dict`` raises), while a checkpoint without any is served without decisions.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np

from service.scoring import SCORE

# the quantile levels stored overall: every percent, and the tails the thresholds live in
LEVELS = tuple(sorted({0.0, 0.001, 0.005, *(i / 100 for i in range(1, 100)), 0.995, 0.999, 1.0}))
SUMMARY_LEVELS = (0.5, 0.9, 0.95, 0.99, 0.999)  # p50 ... p99.9, also stored per digit
MIN_QUANTILE, MAX_QUANTILE = 0.5, 0.999  # thresholds a request may ask for: within the stored tail
DEFAULT_QUANTILE = 0.99
SPLITS = ("validation", "test")  # where the normal images came from


def level_key(level: float) -> str:
    """0.99 -> "0.99", 1.0 -> "1": the JSON key of a quantile level."""
    return f"{level:g}"


def summary_name(level: float) -> str:
    """0.999 -> "p99.9"."""
    return f"p{100 * level:g}"


def _quantiles(scores: np.ndarray, levels: Sequence[float]) -> dict[str, float]:
    values = np.quantile(scores.astype(np.float64), levels)  # linear interpolation between order statistics
    return {level_key(level): float(value) for level, value in zip(levels, values, strict=True)}


@dataclass(frozen=True)
class Calibration:
    """Quantiles of the anomaly score on ``images`` normal images of ``digits``."""

    levels: tuple[float, ...]  # strictly increasing, from 0 (the lowest score) to 1 (the highest)
    scores: tuple[float, ...]  # the MSE at each level, non-decreasing
    images: int
    split: str  # "validation": held out from training; "test": the MNIST test set
    digits: tuple[int, ...]  # the classes that count as normal (one-class models: one digit)
    per_digit: Mapping[str, Mapping[str, Any]]  # "3" -> {"images": 501, "quantiles": {"0.5": ..., ...}}

    # --- building, reading and writing ---------------------------------------------------------

    @classmethod
    def from_scores(cls, scores: np.ndarray, labels: np.ndarray, *, split: str) -> Calibration:
        """From the MSE of each normal image and its digit."""
        if len(scores) == 0 or len(scores) != len(labels):
            raise ValueError(f"need one score per image, got {len(scores)} scores for {len(labels)} labels")
        digits = tuple(int(d) for d in np.unique(labels))
        per_digit = {
            str(d): {"images": int((labels == d).sum()), "quantiles": _quantiles(scores[labels == d], SUMMARY_LEVELS)}
            for d in digits
        }
        overall = _quantiles(scores, LEVELS)
        return cls.from_dict(
            {
                "score": SCORE,
                "split": split,
                "images": len(scores),
                "digits": list(digits),
                "quantiles": overall,
                "per_digit": per_digit,
            }
        )

    @classmethod
    def from_dict(cls, data: Any) -> Calibration:
        """The metadata's ``calibration`` object, checked; ``ValueError`` saying what is wrong."""
        if not isinstance(data, dict):
            raise ValueError("calibration must be an object")
        missing = sorted({"score", "split", "images", "digits", "quantiles", "per_digit"} - set(data))
        if missing:
            raise ValueError(f"calibration lacks {missing}")
        if data["score"] != SCORE:
            raise ValueError(f"calibration scores {data['score']!r}; this service scores {SCORE!r}")
        if data["split"] not in SPLITS:
            raise ValueError(f"calibration split must be one of {SPLITS}, got {data['split']!r}")
        images = _count(data["images"], "calibration images")
        digits = data["digits"]
        if (
            not isinstance(digits, list)
            or not digits
            or not all(isinstance(d, int) and not isinstance(d, bool) and 0 <= d <= 9 for d in digits)
            or len(set(digits)) != len(digits)
        ):
            raise ValueError(f"calibration digits must be distinct digits 0-9, got {digits!r}")
        levels, scores = _levels_and_scores(data["quantiles"], "calibration quantiles")
        if levels[0] != 0.0 or levels[-1] != 1.0 or not set(SUMMARY_LEVELS) <= set(levels):
            needed = ", ".join(map(str, SUMMARY_LEVELS))
            raise ValueError(f"calibration quantiles must include the levels 0, {needed} and 1")
        per_digit = data["per_digit"]
        if not isinstance(per_digit, dict) or set(per_digit) != {str(d) for d in digits}:
            raise ValueError(f"calibration per_digit must have one entry per digit in {sorted(digits)}")
        for digit, entry in per_digit.items():
            if not isinstance(entry, dict) or set(entry) != {"images", "quantiles"}:
                raise ValueError(f"calibration per_digit[{digit}] must hold images and quantiles")
            _count(entry["images"], f"calibration per_digit[{digit}] images")
            _levels_and_scores(entry["quantiles"], f"calibration per_digit[{digit}] quantiles")
        if sum(entry["images"] for entry in per_digit.values()) != images:
            raise ValueError("calibration per_digit images do not add up to its images")
        return cls(
            levels=levels,
            scores=scores,
            images=images,
            split=data["split"],
            digits=tuple(sorted(digits)),
            per_digit=per_digit,
        )

    def to_dict(self) -> dict[str, Any]:
        """What the checkpoint's metadata stores; :meth:`from_dict` reads it back."""
        return {
            "score": SCORE,
            "split": self.split,
            "images": self.images,
            "digits": list(self.digits),
            "quantiles": {level_key(lv): s for lv, s in zip(self.levels, self.scores, strict=True)},
            "per_digit": dict(self.per_digit),
        }

    def summary(self, quantile: float) -> dict[str, Any]:
        """For /model: where the normal scores lie, per digit too, and the threshold at ``quantile``."""
        return {
            "score": SCORE,
            "split": self.split,
            "images": self.images,
            "normal_digits": list(self.digits),
            "quantiles": {summary_name(lv): self.threshold(lv) for lv in SUMMARY_LEVELS},
            "per_digit": {
                digit: {
                    "images": entry["images"],
                    **{summary_name(float(lv)): v for lv, v in entry["quantiles"].items()},
                }
                for digit, entry in self.per_digit.items()
            },
            "anomaly_quantile": quantile,
            "threshold_mse": self.threshold(quantile),
        }

    # --- decisions ---------------------------------------------------------------------------------

    def threshold(self, quantile: float) -> float:
        """The MSE above which an image scores higher than ``quantile`` of normal images."""
        return float(np.interp(quantile, self.levels, self.scores))

    @cached_property
    def _points(self) -> tuple[np.ndarray, np.ndarray]:
        """The (score, level) points with strictly increasing scores: of equal scores, the highest level."""
        scores, levels = np.asarray(self.scores), np.asarray(self.levels)
        last_of_run = np.append(scores[1:] != scores[:-1], True)
        return scores[last_of_run], levels[last_of_run]

    def percentiles(self, mse: np.ndarray) -> np.ndarray:
        """(N,) MSE -> (N,) float32 percentile among normal images, in [0, 100].

        Piecewise linear through the stored (score, level) points; below the lowest normal score
        it is 0, at or above the highest 100.
        """
        scores, levels = self._points
        fraction: np.ndarray = np.interp(mse, scores, levels, left=0.0, right=1.0)
        return (100.0 * fraction).astype(np.float32)


def _count(value: Any, what: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{what} must be a positive integer, got {value!r}")
    return value


def _levels_and_scores(quantiles: Any, what: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """{"0.5": 0.0021, ...} -> (levels, scores), sorted by level; refuses anything odd."""
    if not isinstance(quantiles, dict) or not quantiles:
        raise ValueError(f"{what} must be a non-empty object of level -> score")
    points = []
    for key, value in quantiles.items():
        try:
            level = float(key)
        except (TypeError, ValueError):
            raise ValueError(f"{what}: level {key!r} is not a number") from None
        if not 0.0 <= level <= 1.0:
            raise ValueError(f"{what}: level {key} is outside [0, 1]")
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value) or value < 0:
            raise ValueError(f"{what}: score at {key} must be a finite number >= 0, got {value!r}")
        points.append((level, float(value)))
    points.sort()
    levels = tuple(p[0] for p in points)
    scores = tuple(p[1] for p in points)
    if len(set(levels)) != len(levels):
        raise ValueError(f"{what}: a level appears twice")
    if any(b < a for a, b in itertools.pairwise(scores)):
        raise ValueError(f"{what}: scores must not decrease as the level rises")
    return levels, scores
