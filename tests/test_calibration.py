"""The anomaly calibration: quantiles from scores, percentiles and decisions, the checks that
refuse malformed calibration, and how a version 1 calibration (MSE only) is read."""

from __future__ import annotations

import copy
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from service.calibration import LEVELS, SUMMARY_LEVELS, Calibration
from service.checkpoint import CheckpointError, load_checkpoint, metadata_path_for, save_checkpoint
from service.model import AutoEncoder, ModelConfig
from service.scoring import assess, is_anomaly

RNG = np.random.default_rng(0)
NORMAL = RNG.lognormal(mean=-6.0, sigma=0.4, size=5000).astype(np.float32)  # like the shipped model's MSEs
NOVELTY = RNG.normal(-9.0, 2.0, size=5000).astype(np.float32)  # log-odds of "not a digit", of either sign
LABELS = RNG.integers(0, 10, size=5000)
CAL = Calibration.from_scores(NORMAL, LABELS, split="validation")  # a model without a novelty head
WITH_NOVELTY = Calibration.from_scores(NORMAL, LABELS, split="validation", novelty=NOVELTY)


def percentiles(scores: np.ndarray, calibration: Calibration = CAL) -> np.ndarray:
    """The percentile of the decision score: the MSE's for CAL."""
    return calibration.assess(np.asarray(scores), None)[0]


def decisions(mse: np.ndarray, quantile: float) -> np.ndarray:
    return is_anomaly(*CAL.assess(mse, None), quantile)


@pytest.mark.parametrize("calibration", [CAL, WITH_NOVELTY], ids=["mse", "novelty"])
def test_quantiles_overall_and_per_digit_round_trip_through_json(calibration: Calibration) -> None:
    data = json.loads(json.dumps(calibration.to_dict()))
    assert data["version"] == 2 and set(data["scores"]) == ({"mse"} if calibration is CAL else {"mse", "novelty"})
    assert Calibration.from_dict(data) == calibration
    assert calibration.images == 5000 and calibration.digits == tuple(range(10)) and calibration.mse.levels == LEVELS
    decision = NORMAL if calibration is CAL else NOVELTY
    assert calibration.decision_score == ("mse" if calibration is CAL else "novelty")
    for level in SUMMARY_LEVELS:
        assert calibration.threshold(level) == pytest.approx(float(np.quantile(decision, level)), rel=1e-6)
        assert calibration.mse.at(level) == pytest.approx(float(np.quantile(NORMAL, level)), rel=1e-6)
    for digit, entry in calibration.mse.per_digit.items():
        mine = NORMAL[int(digit) == LABELS]
        assert calibration.images_per_digit[digit] == len(mine)
        assert entry["0.99"] == pytest.approx(float(np.quantile(mine, 0.99)), rel=1e-6)
    summary = calibration.summary(0.99)
    name = calibration.decision_score
    assert summary["decision_score"] == name and summary["threshold"] == calibration.threshold(0.99)
    assert summary["scores"][name]["p99.9"] == calibration.threshold(0.999)
    assert set(summary["scores"]["mse"]["per_digit"]["3"]) == {"p50", "p90", "p95", "p99", "p99.9"}
    assert summary["normal_mse_range"] == [float(NORMAL.min()), float(NORMAL.max())]


def test_percentiles_are_the_share_of_normal_images_scoring_lower() -> None:
    fresh = RNG.lognormal(mean=-6.0, sigma=0.4, size=20000)  # more normal images, never seen
    got = percentiles(fresh)
    empirical = 100 * np.searchsorted(np.sort(NORMAL), fresh) / len(NORMAL)
    assert np.abs(got - empirical).max() < 1.0  # within a percentage point everywhere
    assert got.dtype == np.float32
    ordered = percentiles(np.sort(fresh))
    assert (np.diff(ordered) >= 0).all(), "monotone in the score"
    assert percentiles(np.array([0.0, NORMAL.max(), 1.0])).tolist() == [0.0, 100.0, 100.0]


@pytest.mark.parametrize("quantile", [0.5, 0.9, 0.99, 0.999])
def test_the_quantile_sets_the_share_of_normal_images_flagged(quantile: float) -> None:
    fresh = RNG.lognormal(mean=-6.0, sigma=0.4, size=200000)
    flagged = decisions(fresh, quantile)
    assert flagged.mean() == pytest.approx(1 - quantile, abs=0.25 * (1 - quantile) + 0.001)
    # the decision is the threshold's: above it flagged, below it (and above every normal score) not
    threshold = CAL.threshold(quantile)
    np.testing.assert_array_equal(flagged & (fresh > NORMAL.min()), fresh > threshold)


def test_lower_than_every_normal_image_is_flagged_too() -> None:
    """A blank image: reconstructed better than any digit, which makes it unlike all of them."""
    assert decisions(np.array([1e-9, NORMAL.min() / 2]), 0.99).all()
    assert not decisions(np.array([np.median(NORMAL)]), 0.99).any()


def test_with_a_novelty_the_decision_is_the_novelty_s_and_the_mse_s_range() -> None:
    """The percentile is the novelty's; an MSE outside every normal image's range is flagged as well,
    whatever the novelty (an inverted digit the head takes for a digit, a blank image)."""
    mse = np.array([np.median(NORMAL), np.median(NORMAL), NORMAL.max() * 40, NORMAL.min() / 2], np.float32)
    novelty = np.array([np.median(NOVELTY), NOVELTY.max() + 1, np.median(NOVELTY), np.median(NOVELTY)], np.float32)
    percentile, outlying = WITH_NOVELTY.assess(mse, novelty)
    assert percentile.tolist() == pytest.approx([50, 100, 50, 50], abs=0.5)
    assert outlying.tolist() == [False, False, True, True]
    assert is_anomaly(percentile, outlying, 0.99).tolist() == [False, True, True, True]
    fresh = RNG.normal(-9.0, 2.0, size=200000)
    flagged = is_anomaly(*WITH_NOVELTY.assess(np.full(len(fresh), np.median(NORMAL)), fresh), 0.99)
    assert flagged.mean() == pytest.approx(0.01, abs=0.0035)
    with pytest.raises(ValueError, match="novelty"):
        WITH_NOVELTY.assess(mse, None)


def test_without_a_calibration_there_is_no_decision() -> None:
    percentile, outlying = assess(np.array([0.1, 0.2], np.float32), None, None)
    assert np.isnan(percentile).all() and not outlying.any()


def version_1(calibration: Calibration) -> dict[str, Any]:
    """The layout a checkpoint calibrated before the novelty head holds: the MSE's quantiles alone."""
    return {
        "score": "mse",
        "split": calibration.split,
        "images": calibration.images,
        "digits": list(calibration.digits),
        "quantiles": calibration.mse.to_dict()["quantiles"],
        "per_digit": {
            digit: {"images": calibration.images_per_digit[digit], "quantiles": dict(quantiles)}
            for digit, quantiles in calibration.mse.per_digit.items()
        },
    }


def test_a_version_1_calibration_reads_as_the_mse_s_quantiles() -> None:
    old = Calibration.from_dict(version_1(CAL))
    assert old.version == 1 and old.novelty is None and old.decision_score == "mse"
    assert old.mse == CAL.mse and old.images_per_digit == CAL.images_per_digit
    fresh = RNG.lognormal(mean=-6.0, sigma=0.4, size=1000)
    np.testing.assert_array_equal(old.assess(fresh, None)[0], CAL.assess(fresh, None)[0])
    assert old.to_dict() == CAL.to_dict(), "rewritten in the current layout"


@pytest.mark.parametrize("novelty_channels", [0, 8])
def test_a_checkpoint_calibrated_the_old_way_is_served_on_the_mse_and_says_so(
    tmp_path: Path, novelty_channels: int, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "old" / "autoencoder.safetensors"
    save_checkpoint(AutoEncoder(ModelConfig(novelty_channels=novelty_channels)), path)
    metadata = json.loads(metadata_path_for(path).read_text())
    metadata_path_for(path).write_text(json.dumps({**metadata, "calibration": version_1(CAL)}))
    with caplog.at_level(logging.WARNING, logger="service.checkpoint"):
        checkpoint = load_checkpoint(path)
    assert checkpoint.calibration is not None and checkpoint.calibration.decision_score == "mse"
    (record,) = caplog.records
    assert "version 1" in record.message and f"python -m training.calibrate {path}" in record.message
    if novelty_channels:
        assert "reconstruction MSE alone, which does not tell letters from digits" in record.message


@pytest.mark.parametrize("novelty_channels", [0, 8])
def test_a_calibration_that_does_not_fit_the_model_s_scores_is_refused(tmp_path: Path, novelty_channels: int) -> None:
    """A head without novelty quantiles, or novelty quantiles without a head: refused, saying how to fix it."""
    path = tmp_path / "mismatch" / "autoencoder.safetensors"
    wrong = CAL if novelty_channels else WITH_NOVELTY
    save_checkpoint(AutoEncoder(ModelConfig(novelty_channels=novelty_channels)), path, calibration=wrong)
    with pytest.raises(CheckpointError, match=r"novelty head.*novelty quantiles.*training\.calibrate"):
        load_checkpoint(path)
    assert load_checkpoint(path, read_calibration=False).calibration is None


def _broken(change: str) -> Any:
    data = copy.deepcopy(WITH_NOVELTY.to_dict())
    quantiles = data["scores"]["mse"]["quantiles"]
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
        data["scores"]["ssim"] = data["scores"].pop("novelty")
    elif change == "no mse":
        del data["scores"]["mse"]
    elif change == "novelty decreasing":
        novelty = data["scores"]["novelty"]["quantiles"]
        novelty["0.99"], novelty["0.5"] = novelty["0.5"], novelty["0.99"]
    elif change == "unknown version":
        data["version"] = 3
    elif change == "unknown split":
        data["split"] = "train"
    elif change == "digit 12":
        data["digits"] = [0, 12]
    elif change == "per-digit missing":
        del data["scores"]["mse"]["per_digit"]["7"]
    elif change == "per-digit decreasing":
        data["scores"]["novelty"]["per_digit"]["3"]["0.5"] = 100.0
    elif change == "counts disagree":
        data["images"] = 4999
    elif change == "missing key":
        del data["images_per_digit"]
    elif change == "version 1 broken":
        data = version_1(CAL)
        del data["per_digit"]["7"]
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
    "no mse",
    "novelty decreasing",
    "unknown version",
    "version 1 broken",
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
    metadata["calibration"] = _broken(change) if change != "nan" else copy.deepcopy(metadata["calibration"])
    if change == "nan":  # NaN is not JSON; a tampered file may hold it anyway
        metadata["calibration"]["scores"]["mse"]["quantiles"]["0.9"] = float("nan")
    meta_path.write_text(json.dumps(metadata))
    with pytest.raises(CheckpointError, match=r"bad calibration in metadata.*training\.calibrate"):
        load_checkpoint(tiny_checkpoint)


def test_a_checkpoint_without_calibration_loads_without_one(
    uncalibrated_checkpoint: Path, tiny_checkpoint: Path
) -> None:
    assert load_checkpoint(uncalibrated_checkpoint).calibration is None
    assert load_checkpoint(tiny_checkpoint).calibration is not None
