"""The model in weights/ is what its metadata says, and a fresh evaluation reproduces its record."""

from __future__ import annotations

import json

import pytest
import torch

from service.checkpoint import load_checkpoint, metadata_path_for
from service.model import ModelConfig
from tests.conftest import SHIPPED_WEIGHTS
from training.data import MnistSplit
from training.evaluate import evaluate


def test_shipped_checkpoint_loads_verified_with_its_pictures() -> None:
    ckpt = load_checkpoint(SHIPPED_WEIGHTS, expected_config=ModelConfig(novelty_channels=32))
    # 7,121 weights of the seed's autoencoder and 38,187 of the novelty head, float32
    assert SHIPPED_WEIGHTS.stat().st_size < 200_000
    meta = json.loads(metadata_path_for(SHIPPED_WEIGHTS).read_text())
    assert meta["weights_sha256"] == ckpt.sha256
    assert meta["metrics"]["test_mse"] <= 0.0030
    for picture in ("loss_curves.png", "reconstructions.png", "latents.png"):
        assert (SHIPPED_WEIGHTS.parent / picture).is_file()


@pytest.mark.integration
def test_shipped_weights_reproduce_their_recorded_test_metrics(mnist_test: MnistSplit) -> None:
    ckpt = load_checkpoint(SHIPPED_WEIGHTS)
    recorded = ckpt.metrics
    ev = evaluate(ckpt.model, mnist_test, device=torch.device("cpu"))
    assert ev.images == recorded["test_images"] == 10_000
    assert ev.mse == pytest.approx(recorded["test_mse"], rel=0.01)
    assert ev.ssim == pytest.approx(recorded["test_ssim"], rel=0.01)
    for digit, mse in recorded["per_digit_mse"].items():
        assert ev.per_digit_mse[digit] == pytest.approx(mse, rel=0.01)
