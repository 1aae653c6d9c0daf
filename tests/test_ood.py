"""python -m training.ood: each family of non-digits scored by the service's own predictor."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from service.checkpoint import load_checkpoint, save_checkpoint
from service.inference import Op, Predictor
from service.model import AutoEncoder
from tests.conftest import SHIPPED_WEIGHTS
from training import ood
from training.ood_inputs import families


def shipped_predictor() -> Predictor:
    checkpoint = load_checkpoint(SHIPPED_WEIGHTS)
    return Predictor(checkpoint.model, checkpoint.device, checkpoint.calibration)


def test_scores_are_the_services() -> None:
    predictor = shipped_predictor()
    images = np.random.default_rng(0).integers(0, 256, (5, 28, 28), dtype=np.uint8)
    scored = ood.score(predictor, images, 0.99, batch=2)
    _, mse, novelty, percentile, outlying = predictor.run(Op.RECONSTRUCT, images.astype(np.float32) / 255)
    np.testing.assert_allclose(scored.mse, mse, rtol=1e-5)
    assert scored.novelty is not None
    np.testing.assert_allclose(scored.novelty, novelty, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(scored.flagged, (percentile > 99) | outlying)


def test_the_table_has_a_row_per_family(test_digits: np.ndarray) -> None:
    digits_flagged, rows = ood.evaluate(shipped_predictor(), test_digits, 0.99)
    assert [row.name for row in rows] == list(families(test_digits[:1], fonts=[]))
    by_name = {row.name: row for row in rows}
    assert 0 <= digits_flagged <= 0.1
    # what the reconstruction error already sees: noise, all-white and inverted digits
    assert by_name["noise"].auroc == 1.0 and by_name["noise"].flagged == 1.0
    assert by_name["inverted"].flagged == 1.0 and by_name["white"].flagged == 1.0
    assert by_name["blank"].flagged == 1.0, "flagged by the MSE's range: redrawn better than any digit"
    text = ood.table(digits_flagged, len(test_digits), rows, 0.99)
    assert "| letters |" in text and "| test digits (normal) | 64 |" in text


def test_main_writes_the_table_between_the_markers(
    mnist_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    report = tmp_path / "anomaly.md"
    report.write_text(f"before\n{ood.MARKERS[0]}\nold\n{ood.MARKERS[1]}\nafter\n")
    assert ood.main([str(SHIPPED_WEIGHTS), "--data", str(mnist_dir), "--report", str(report)]) == 0
    written = report.read_text()
    assert written.startswith("before\n") and written.endswith("after\n") and "old" not in written
    assert "| letters |" in written and "Reproduce: `python -m training.ood" in written
    assert "| letters |" in capsys.readouterr().out


def test_main_refuses_an_uncalibrated_checkpoint(mnist_dir: Path, tmp_path: Path, random_model: AutoEncoder) -> None:
    path = tmp_path / "uncalibrated" / "autoencoder.safetensors"
    save_checkpoint(random_model, path)
    assert ood.main([str(path), "--data", str(mnist_dir)]) == 1
