"""What "normal" looks like for a checkpoint: quantiles of its scores on normal images.

Training ends by scoring normal images the model did not train on (the validation split it held
out) and storing quantiles of each score in the checkpoint's metadata, overall and per digit
(``python -m training.calibrate`` does the same for an existing checkpoint). The scores are those
of service/scoring.py: the reconstruction ``mse`` always, and the ``novelty`` of a model with a
novelty head. From the quantiles the service gives every reconstructed image

- its ``percentile``: the share of normal images whose decision score was lower, in 0..100,
  interpolated linearly between the stored quantiles. The decision score is the novelty when the
  calibration has it, else the MSE (a model without a head, such as a one-class model);
- whether its MSE lies outside the range of every normal image's (``outlying``), which service/
  scoring.py flags whatever the decision score says.

Version 2 (this layout) stores both scores. Version 1, written before the novelty head, stored the
MSE's quantiles alone; it is still read, as a calibration without novelty, and the checkpoint
loader says so in the log. The metadata is checked as strictly as the weights: malformed calibration
refuses the whole checkpoint (``from_dict`` raises), while a checkpoint without any is served
without decisions.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np

VERSION = 2  # of the layout below; 1: MSE quantiles only, from before the novelty head
SCORES = ("mse", "novelty")  # what a calibration can hold quantiles of (service/scoring.py)
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
class Quantiles:
    """One score's quantiles on the normal images: overall at ``LEVELS``, per digit at ``SUMMARY_LEVELS``."""

    levels: tuple[float, ...]  # strictly increasing, from 0 (the lowest score) to 1 (the highest)
    values: tuple[float, ...]  # the score at each level, non-decreasing
    per_digit: Mapping[str, Mapping[str, float]]  # "3" -> {"0.5": ..., "0.99": ...}

    @classmethod
    def of(cls, scores: np.ndarray, labels: np.ndarray) -> Quantiles:
        overall = _quantiles(scores, LEVELS)
        per_digit = {str(d): _quantiles(scores[labels == d], SUMMARY_LEVELS) for d in np.unique(labels)}
        return cls(tuple(float(k) for k in overall), tuple(overall.values()), per_digit)

    @classmethod
    def from_dict(cls, quantiles: Any, per_digit: Any, digits: Sequence[int], *, what: str, signed: bool) -> Quantiles:
        levels, values = _levels_and_values(quantiles, f"{what} quantiles", signed=signed)
        if levels[0] != 0.0 or levels[-1] != 1.0 or not set(SUMMARY_LEVELS) <= set(levels):
            needed = ", ".join(map(str, SUMMARY_LEVELS))
            raise ValueError(f"{what} quantiles must include the levels 0, {needed} and 1")
        if not isinstance(per_digit, dict) or set(per_digit) != {str(d) for d in digits}:
            raise ValueError(f"{what} per_digit must have one entry per digit in {sorted(digits)}")
        for digit, entry in per_digit.items():
            _levels_and_values(entry, f"{what} per_digit[{digit}] quantiles", signed=signed)
        return cls(levels, values, per_digit)

    def to_dict(self) -> dict[str, Any]:
        overall = {level_key(lv): v for lv, v in zip(self.levels, self.values, strict=True)}
        return {"quantiles": overall, "per_digit": dict(self.per_digit)}

    def summary(self) -> dict[str, Any]:
        """For /model: p50 ... p99.9 overall and per digit."""
        return {
            **{summary_name(lv): self.at(lv) for lv in SUMMARY_LEVELS},
            "per_digit": {
                digit: {summary_name(float(lv)): v for lv, v in entry.items()}
                for digit, entry in self.per_digit.items()
            },
        }

    def at(self, level: float) -> float:
        """The score at quantile ``level``: a share ``level`` of normal images score lower."""
        return float(np.interp(level, self.levels, self.values))

    @cached_property
    def _points(self) -> tuple[np.ndarray, np.ndarray]:
        """The (score, level) points with strictly increasing scores: of equal scores, the highest level."""
        values, levels = np.asarray(self.values), np.asarray(self.levels)
        last_of_run = np.append(values[1:] != values[:-1], True)
        return values[last_of_run], levels[last_of_run]

    def percentiles(self, scores: np.ndarray) -> np.ndarray:
        """(N,) scores -> (N,) float32 percentile among normal images, in [0, 100].

        Piecewise linear through the stored (score, level) points; below the lowest normal score
        it is 0, at or above the highest 100.
        """
        values, levels = self._points
        fraction: np.ndarray = np.interp(scores, values, levels, left=0.0, right=1.0)
        return (100.0 * fraction).astype(np.float32)

    def outside(self, scores: np.ndarray) -> np.ndarray:
        """(N,) scores -> (N,) bool: at or below the lowest normal score, or at or above the highest."""
        return (scores <= self.values[0]) | (scores >= self.values[-1])


@dataclass(frozen=True)
class Calibration:
    """Quantiles of the scores of ``images`` normal images of ``digits``."""

    version: int  # VERSION, or 1 when read from a checkpoint calibrated before the novelty head
    split: str  # "validation": held out from training; "test": the MNIST test set
    images: int
    digits: tuple[int, ...]  # the classes that count as normal (one-class models: one digit)
    images_per_digit: Mapping[str, int]
    mse: Quantiles
    novelty: Quantiles | None  # None: the model has no novelty head, or a version 1 calibration

    @property
    def decision_score(self) -> str:
        """The score behind ``percentile`` and the decision: the novelty when there is one."""
        return "mse" if self.novelty is None else "novelty"

    @property
    def _decision(self) -> Quantiles:
        return self.mse if self.novelty is None else self.novelty

    @property
    def _scores(self) -> dict[str, Quantiles]:
        return {"mse": self.mse} | ({} if self.novelty is None else {"novelty": self.novelty})

    # --- building, reading and writing ---------------------------------------------------------

    @classmethod
    def from_scores(
        cls, mse: np.ndarray, labels: np.ndarray, *, split: str, novelty: np.ndarray | None = None
    ) -> Calibration:
        """From each normal image's MSE (and novelty, for a model with a head) and its digit."""
        if len(mse) == 0 or len(mse) != len(labels) or (novelty is not None and len(novelty) != len(mse)):
            raise ValueError(f"need one score of each kind per image, got {len(mse)} scores for {len(labels)} labels")
        calibration = cls(
            version=VERSION,
            split=split,
            images=len(mse),
            digits=tuple(int(d) for d in np.unique(labels)),
            images_per_digit={str(d): int((labels == d).sum()) for d in np.unique(labels)},
            mse=Quantiles.of(mse, labels),
            novelty=None if novelty is None else Quantiles.of(novelty, labels),
        )
        return cls.from_dict(calibration.to_dict())  # the same checks as a loaded one

    @classmethod
    def from_dict(cls, data: Any) -> Calibration:
        """The metadata's ``calibration`` object, checked; ``ValueError`` saying what is wrong."""
        if not isinstance(data, dict):
            raise ValueError("calibration must be an object")
        if "version" not in data and data.get("score") == "mse":
            return cls._from_version_1(data)
        if data.get("version") != VERSION:
            raise ValueError(f"calibration version {data.get('version')!r} is not supported (this code reads 1 and 2)")
        missing = sorted({"split", "images", "digits", "images_per_digit", "scores"} - set(data))
        if missing:
            raise ValueError(f"calibration lacks {missing}")
        split, images, digits = _split_images_digits(data)
        counts = data["images_per_digit"]
        if not isinstance(counts, dict) or set(counts) != {str(d) for d in digits}:
            raise ValueError(f"calibration images_per_digit must have one entry per digit in {list(digits)}")
        for digit, count in counts.items():
            _count(count, f"calibration images_per_digit[{digit}]")
        if sum(counts.values()) != images:
            raise ValueError("calibration images_per_digit do not add up to its images")
        scores = data["scores"]
        if not isinstance(scores, dict) or "mse" not in scores or not set(scores) <= set(SCORES):
            raise ValueError(f"calibration scores must hold mse, and may hold novelty; got {sorted(scores)!r}")
        parsed = {}
        for name, entry in scores.items():
            if not isinstance(entry, dict) or set(entry) != {"quantiles", "per_digit"}:
                raise ValueError(f"calibration scores.{name} must hold quantiles and per_digit")
            what = f"calibration {name}"
            # the MSE is a mean of squares; the novelty is a log-odds, of either sign
            parsed[name] = Quantiles.from_dict(
                entry["quantiles"], entry["per_digit"], digits, what=what, signed=name == "novelty"
            )
        return cls(VERSION, split, images, digits, counts, parsed["mse"], parsed.get("novelty"))

    @classmethod
    def _from_version_1(cls, data: dict[str, Any]) -> Calibration:
        """{"score": "mse", "quantiles": ..., "per_digit": {"3": {"images", "quantiles"}}}: the MSE alone."""
        missing = sorted({"split", "images", "digits", "quantiles", "per_digit"} - set(data))
        if missing:
            raise ValueError(f"calibration lacks {missing}")
        split, images, digits = _split_images_digits(data)
        per_digit = data["per_digit"]
        if not isinstance(per_digit, dict) or set(per_digit) != {str(d) for d in digits}:
            raise ValueError(f"calibration per_digit must have one entry per digit in {list(digits)}")
        for digit, entry in per_digit.items():
            if not isinstance(entry, dict) or set(entry) != {"images", "quantiles"}:
                raise ValueError(f"calibration per_digit[{digit}] must hold images and quantiles")
            _count(entry["images"], f"calibration per_digit[{digit}] images")
        counts = {digit: entry["images"] for digit, entry in per_digit.items()}
        if sum(counts.values()) != images:
            raise ValueError("calibration per_digit images do not add up to its images")
        quantiles = {digit: entry["quantiles"] for digit, entry in per_digit.items()}
        mse = Quantiles.from_dict(data["quantiles"], quantiles, digits, what="calibration", signed=False)
        return cls(1, split, images, digits, counts, mse, None)

    def to_dict(self) -> dict[str, Any]:
        """What the checkpoint's metadata stores (always the current version); :meth:`from_dict` reads it back."""
        return {
            "version": VERSION,
            "split": self.split,
            "images": self.images,
            "digits": list(self.digits),
            "images_per_digit": dict(self.images_per_digit),
            "scores": {name: quantiles.to_dict() for name, quantiles in self._scores.items()},
        }

    def summary(self, quantile: float) -> dict[str, Any]:
        """For /model: where the normal scores lie, per digit too, and the thresholds in force at ``quantile``."""
        return {
            "version": self.version,
            "split": self.split,
            "images": self.images,
            "normal_digits": list(self.digits),
            "images_per_digit": dict(self.images_per_digit),
            "decision_score": self.decision_score,
            "scores": {name: quantiles.summary() for name, quantiles in self._scores.items()},
            "anomaly_quantile": quantile,
            "threshold": self.threshold(quantile),
            "normal_mse_range": [self.mse.values[0], self.mse.values[-1]],
        }

    # --- decisions ---------------------------------------------------------------------------------

    def threshold(self, quantile: float) -> float:
        """The decision score above which an image scores higher than ``quantile`` of normal images."""
        return self._decision.at(quantile)

    def assess(self, mse: np.ndarray, novelty: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        """(N,) MSE and (N,) novelty (None: no head) -> ((N,) float32 percentile of the decision score
        among normal images, (N,) bool: the MSE is outside the normal images' range)."""
        if self.novelty is None:
            return self.mse.percentiles(mse), self.mse.outside(mse)
        if novelty is None:
            raise ValueError("this calibration decides on the novelty, which the model did not compute")
        return self.novelty.percentiles(novelty), self.mse.outside(mse)


def _split_images_digits(data: dict[str, Any]) -> tuple[str, int, tuple[int, ...]]:
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
    return data["split"], images, tuple(sorted(digits))


def _count(value: Any, what: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{what} must be a positive integer, got {value!r}")
    return value


def _levels_and_values(quantiles: Any, what: str, *, signed: bool) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """{"0.5": 0.0021, ...} -> (levels, values), sorted by level; refuses anything odd."""
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
        if (
            not isinstance(value, (int, float))
            or isinstance(value, bool)
            or not math.isfinite(value)
            or (value < 0 and not signed)
        ):
            least = "" if signed else " >= 0"
            raise ValueError(f"{what}: score at {key} must be a finite number{least}, got {value!r}")
        points.append((level, float(value)))
    points.sort()
    levels = tuple(p[0] for p in points)
    values = tuple(p[1] for p in points)
    if len(set(levels)) != len(levels):
        raise ValueError(f"{what}: a level appears twice")
    if any(b < a for a, b in itertools.pairwise(values)):
        raise ValueError(f"{what}: scores must not decrease as the level rises")
    return levels, values
