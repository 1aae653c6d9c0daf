"""The anomaly calibration: quantiles from scores, percentiles and decisions, and the checks that
refuse malformed calibration."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from service.calibration import LEVELS, SUMMARY_LEVELS, Calibration
from service.checkpoint import CheckpointError, load_checkpoint, metadata_path_for
from service.scoring import is_anomaly

RNG = np.random.default_rng(0)
NORMAL = RNG.lognormal(mean=-6.0, sigma=0.4, size=5000).astype(np.float32)  # like the shipped model's MSEs
LABELS = RNG.integers(0, 10, size=5000)
CAL = Calibration.from_scores(NORMAL, LABELS, split="validation")


def test_quantiles_overall_and_per_digit_round_trip_through_json() -> None:
    data = json.loads(json.dumps(CAL.to_dict()))
    assert Calibration.from_dict(data) == CAL
    assert CAL.images == 5000 and CAL.digits == tuple(range(10)) and CAL.levels == LEVELS
    for level in SUMMARY_LEVELS:
        assert CAL.threshold(level) == pytest.approx(float(np.quantile(NORMAL, level)), rel=1e-6)
    for digit, entry in CAL.per_digit.items():
        mine = NORMAL[int(digit) == LABELS]
        assert entry["images"] == len(mine)
        assert entry["quantiles"]["0.99"] == pytest.approx(float(np.quantile(mine, 0.99)), rel=1e-6)
    summary = CAL.summary(0.99)
    assert summary["quantiles"]["p99.9"] == CAL.threshold(0.999) and summary["threshold_mse"] == CAL.threshold(0.99)
    assert set(summary["per_digit"]["3"]) == {"images", "p50", "p90", "p95", "p99", "p99.9"}


def test_percentiles_are_the_share_of_normal_images_scoring_lower() -> None:
    fresh = RNG.lognormal(mean=-6.0, sigma=0.4, size=20000)  # more normal images, never seen
    percentiles = CAL.percentiles(fresh)
    empirical = 100 * np.searchsorted(np.sort(NORMAL), fresh) / len(NORMAL)
    assert np.abs(percentiles - empirical).max() < 1.0  # within a percentage point everywhere
    assert percentiles.dtype == np.float32
    ordered = CAL.percentiles(np.sort(fresh))
    assert (np.diff(ordered) >= 0).all(), "monotone in the score"
    assert CAL.percentiles(np.array([0.0, NORMAL.max(), 1.0])).tolist() == [0.0, 100.0, 100.0]


@pytest.mark.parametrize("quantile", [0.5, 0.9, 0.99, 0.999])
def test_the_quantile_sets_the_share_of_normal_images_flagged(quantile: float) -> None:
    fresh = RNG.lognormal(mean=-6.0, sigma=0.4, size=200000)
    flagged = is_anomaly(CAL.percentiles(fresh), quantile)
    assert flagged.mean() == pytest.approx(1 - quantile, abs=0.25 * (1 - quantile) + 0.001)
    # the decision is the threshold's: above it flagged, below it (and above every normal score) not
    threshold = CAL.threshold(quantile)
    np.testing.assert_array_equal(flagged & (fresh > NORMAL.min()), fresh > threshold)


def test_lower_than_every_normal_image_is_flagged_too() -> None:
    """A blank image: reconstructed better than any digit, which makes it unlike all of them."""
    assert is_anomaly(CAL.percentiles(np.array([1e-9, NORMAL.min() / 2])), 0.99).all()
    assert not is_anomaly(CAL.percentiles(np.array([np.median(NORMAL)])), 0.99).any()


def _broken(change: str) -> Any:
    data = copy.deepcopy(CAL.to_dict())
    quantiles = data["quantiles"]
    if change == "decreasing":
        quantiles["0.99"], quantiles["0.5"] = quantiles["0.5"], quantiles["0.99"]
    elif change == "nan":
        quantiles["0.9"] = float("nan")
    elif change == "negative":
        quantiles["0"] = -1.0
    elif change == "level out of range":
        quantiles["1.5"] = 1.0
    elif change == "level not a number":
        quantiles["p99"] = 0.1
    elif change == "no p99.9":
        del quantiles["0.999"]
    elif change == "score is a string":
        quantiles["0.5"] = "0.002"
    elif change == "other score":
        data["score"] = "ssim"
    elif change == "unknown split":
        data["split"] = "train"
    elif change == "digit 12":
        data["digits"] = [0, 12]
    elif change == "per-digit missing":
        del data["per_digit"]["7"]
    elif change == "per-digit decreasing":
        data["per_digit"]["3"]["quantiles"]["0.5"] = 1.0
    elif change == "counts disagree":
        data["images"] = 4999
    elif change == "missing key":
        del data["quantiles"]
    elif change == "not an object":
        return [1, 2, 3]
    return data


BROKEN = [
    "decreasing",
    "nan",
    "negative",
    "level out of range",
    "level not a number",
    "no p99.9",
    "score is a string",
    "other score",
    "unknown split",
    "digit 12",
    "per-digit missing",
    "per-digit decreasing",
    "counts disagree",
    "missing key",
    "not an object",
]


@pytest.mark.parametrize("change", BROKEN)
def test_malformed_calibration_is_refused(change: str) -> None:
    with pytest.raises(ValueError, match="calibration"):
        Calibration.from_dict(_broken(change))


@pytest.mark.parametrize("change", ["decreasing", "nan", "per-digit missing"])
def test_a_checkpoint_with_tampered_calibration_does_not_load(tiny_checkpoint: Path, change: str) -> None:
    meta_path = metadata_path_for(tiny_checkpoint)
    metadata = json.loads(meta_path.read_text())
    metadata["calibration"] = _broken(change) if change != "nan" else {**metadata["calibration"]}
    if change == "nan":  # NaN is not JSON; a tampered file may hold it anyway
        metadata["calibration"]["quantiles"] = {**metadata["calibration"]["quantiles"], "0.9": float("nan")}
    meta_path.write_text(json.dumps(metadata))
    with pytest.raises(CheckpointError, match=r"bad calibration in metadata.*training\.calibrate"):
        load_checkpoint(tiny_checkpoint)


def test_a_checkpoint_without_calibration_loads_without_one(
    uncalibrated_checkpoint: Path, tiny_checkpoint: Path
) -> None:
    assert load_checkpoint(uncalibrated_checkpoint).calibration is None
    assert load_checkpoint(tiny_checkpoint).calibration is not None
