"""The shipped model's anomaly decisions, as a user gets them: a real uvicorn process, the Python
client, the real MNIST test set, and inputs that are obviously not digits."""

from __future__ import annotations

import json
import re
from pathlib import Path

import httpx
import numpy as np
import pytest

from service.client import AutoencoderClient
from tests.harness import REPO, LiveServer
from training.data import MnistSplit
from training.ood_inputs import LETTERS, SYMBOLS, render_characters
from training.quality import auroc

pytestmark = pytest.mark.integration

RNG = np.random.default_rng(2017)


def scored(server: LiveServer, images: np.ndarray, **kwargs: float) -> tuple[np.ndarray, np.ndarray]:
    """(anomaly, percentile) for every image, in requests of up to 1,000."""
    flags, percentiles = [], []
    with AutoencoderClient(server.url, timeout=120) as client:
        for start in range(0, len(images), 1000):
            result = client.reconstruct(images[start : start + 1000], **kwargs)
            assert result.anomaly is not None and result.percentile is not None
            flags.append(result.anomaly)
            percentiles.append(result.percentile)
    return np.concatenate(flags), np.concatenate(percentiles)


def test_about_one_percent_of_the_test_digits_are_flagged(live_server: LiveServer, mnist_test: MnistSplit) -> None:
    """Calibrated on held-out training digits, the default 0.99 flags 1% ± 0.5% of the 10,000 test
    digits; ?anomaly_quantile= moves that as documented."""
    images = mnist_test.images.numpy()
    flagged, percentiles = scored(live_server, images)
    assert len(flagged) == 10_000
    assert 0.005 <= flagged.mean() <= 0.015, flagged.mean()
    assert 40 <= np.median(percentiles) <= 60, "the test digits look like the held-out ones"
    loose, _ = scored(live_server, images, anomaly_quantile=0.9)
    strict, _ = scored(live_server, images, anomaly_quantile=0.999)
    assert 0.07 <= loose.mean() <= 0.13, loose.mean()
    assert strict.mean() <= 0.004 and strict.sum() <= flagged.sum() <= loose.sum()
    assert not (strict & ~flagged).any() and not (flagged & ~loose).any(), "a higher quantile flags a subset"


def foreign_inputs(digits: np.ndarray) -> dict[str, np.ndarray]:
    return {
        "uniform noise": RNG.integers(0, 256, (200, 28, 28), dtype=np.uint8),
        "blank": np.zeros((1, 28, 28), np.uint8),
        "all white": np.full((1, 28, 28), 255, np.uint8),
        "inverted digits": 255 - digits[:200],
    }


def test_obviously_foreign_inputs_are_flagged(live_server: LiveServer, mnist_test: MnistSplit) -> None:
    cases = foreign_inputs(mnist_test.images.numpy())
    everything = np.concatenate(list(cases.values()))
    flagged, _ = scored(live_server, everything)
    assert flagged.mean() >= 0.95, flagged.mean()
    start = 0
    for name, images in cases.items():  # each kind on its own too
        share = flagged[start : start + len(images)].mean()
        assert share >= 0.95, (name, share)
        start += len(images)


def test_the_metrics_count_the_flags_and_the_alert_rule_names_real_metrics(live_server: LiveServer) -> None:
    def value(text: str, name: str) -> float:
        match = re.search(rf"^{re.escape(name)} ([0-9.e+]+)$", text, re.M)
        assert match, name
        return float(match.group(1))

    before = httpx.get(f"{live_server.url}/metrics").text
    flagged, _ = scored(live_server, np.full((3, 28, 28), 255, np.uint8))
    after = httpx.get(f"{live_server.url}/metrics").text
    assert flagged.all()
    flags = "mnist_ae_anomalies_flagged_total"
    assert value(after, flags) - value(before, flags) == 3
    scored_images = 'mnist_ae_images_processed_total{op="reconstruct"}'
    assert value(after, scored_images) - value(before, scored_images) == 3
    # the histogram of the decision score only: the novelty, not the MSE as well (one Python call per image)
    assert value(after, "mnist_ae_novelty_count") - value(before, "mnist_ae_novelty_count") == 3
    assert "mnist_ae_reconstruction_mse_count 0.0" in after
    # the example alert rule in docs/reference.md uses metrics the service really exports
    rule = Path(__file__).resolve().parent.parent.joinpath("docs", "reference.md").read_text()
    used = set(re.findall(r"rate\((mnist_ae_\w+)[\[{]", rule))
    assert used == {flags, "mnist_ae_images_processed_total"}


def test_letters_and_symbols_score_above_digits_and_most_are_flagged(
    live_server: LiveServer, mnist_test: MnistSplit
) -> None:
    """Characters rendered MNIST-style in Pillow's own font (always there, whatever fonts are
    installed), which nothing trained on: the novelty ranks them above the test digits and the
    decision flags most of them, while the MSE alone cannot tell them apart."""
    digits = mnist_test.images[:1000].numpy()  # one request's worth
    characters = {"letters": render_characters(LETTERS, files=[]), "symbols": render_characters(SYMBOLS, files=[])}
    with AutoencoderClient(live_server.url, timeout=120) as client:
        normal = client.reconstruct(digits)
        assert normal.novelty is not None and normal.anomaly is not None
        assert normal.anomaly.mean() <= 0.02
        for name, images in characters.items():
            foreign = client.reconstruct(images)
            assert foreign.novelty is not None and foreign.anomaly is not None
            positive = np.r_[np.zeros(len(digits), bool), np.ones(len(images), bool)]
            novelty = auroc(np.r_[normal.novelty, foreign.novelty], positive)
            mse = auroc(np.r_[normal.mse, foreign.mse], positive)
            assert novelty >= 0.9 and foreign.anomaly.mean() >= 0.5, (name, novelty, foreign.anomaly.mean())
            assert mse < 0.7, (name, mse)


def test_the_readme_claims_what_the_ood_table_measured() -> None:
    """The README's figures are the ones python -m training.ood wrote into docs/anomaly.md, for the
    weights that are shipped."""
    readme = (REPO / "README.md").read_text()
    report = (REPO / "docs" / "anomaly.md").read_text()
    table = report[report.index("<!-- ood-table:start -->") : report.index("<!-- ood-table:end -->")]
    shipped = json.loads((REPO / "weights" / "autoencoder.json").read_text())["weights_sha256"]
    assert f"sha256 {shipped[:12]}" in table, "the table was measured on the shipped weights"
    rows = {
        row.split("|")[1].strip(): [cell.strip() for cell in row.split("|")[2:-1]]
        for row in table.splitlines()
        if row.startswith("| ")
    }
    letters, symbols, digits = rows["letters"], rows["symbols"], rows["test digits (normal)"]

    def percent(cell: str, decimals: int) -> str:
        return f"{float(cell.removesuffix('%')):.{decimals}f}%"

    claim = (
        f"{percent(letters[2], 0)} of letters and {percent(symbols[2], 0)} of symbols flagged "
        f"(AUROC {letters[1]} and {symbols[1]})"
    )
    flowing = " ".join(readme.split())
    assert claim in flowing, claim
    assert f"{percent(digits[2], 1)} of the 10,000 MNIST test digits" in flowing
