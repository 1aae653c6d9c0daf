"""python -m training.novelty: a head trained on frozen features, and a recalibrated checkpoint."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from service.checkpoint import load_checkpoint, metadata_path_for, save_checkpoint
from service.model import AutoEncoder, ModelConfig
from training import novelty
from training.data import MnistSplit, load_mnist


@pytest.fixture(scope="module")
def few_digits(mnist_dir: Path) -> MnistSplit:
    """The first 600 training digits: all ten classes."""
    return load_mnist(mnist_dir, train=True).subset(slice(None, 600))


def test_the_head_learns_on_frozen_features(few_digits: MnistSplit) -> None:
    torch.manual_seed(0)
    model = AutoEncoder().eval()
    recipe = novelty.NoveltyRecipe(channels=8, epochs=2)
    with_head, record = novelty.add_head(model, few_digits, recipe, device=torch.device("cpu"))
    assert with_head.config == ModelConfig(novelty_channels=8) and with_head.novelty_head is not None
    assert not with_head.training
    # the autoencoder is untouched: same weights, so the same reconstructions and MSE
    for key, value in model.state_dict().items():
        torch.testing.assert_close(with_head.state_dict()[key], value, rtol=0, atol=0)
    assert record["digits"] == 600 and record["channels"] == 8 and record["epochs"] == 2
    assert record["outliers"] == {"strokes": 96, "blobs": 30, "noise": 24, "chimeras": 216}
    x = torch.rand(3, 1, 28, 28)
    assert with_head.novelty_logits(with_head.en(x)).shape == (3, 11)
    again, _ = novelty.add_head(model, few_digits, recipe, device=torch.device("cpu"))
    for key, value in with_head.state_dict().items():  # seeded: the same head twice
        torch.testing.assert_close(again.state_dict()[key], value, rtol=0, atol=0)


def test_a_one_class_model_gets_no_head(few_digits: MnistSplit) -> None:
    threes = few_digits.of_digits((3,))
    with pytest.raises(ValueError, match=r"ten digits.*one-class"):
        novelty.add_head(AutoEncoder(), threes, novelty.NoveltyRecipe(epochs=1), device=torch.device("cpu"))


def test_main_adds_a_head_and_recalibrates(mnist_dir: Path, tmp_path: Path, random_model: AutoEncoder) -> None:
    """A checkpoint trained on the first 1,000 training digits (the rest held out) gets a head trained
    on those 1,000, and a version 2 calibration with the novelty's quantiles on the held-out ones."""
    path = tmp_path / "ckpt" / "autoencoder.safetensors"
    save_checkpoint(random_model, path, training={"validation": 59_000, "epochs": 1}, metrics={"test_mse": 0.5})
    out = tmp_path / "with-head" / "autoencoder.safetensors"
    args = [str(path), "--out", str(out), "--channels", "4", "--epochs", "1", "--data-dir", str(mnist_dir)]
    assert novelty.main([*args, "--device", "cpu"]) == 0
    checkpoint = load_checkpoint(out)
    assert checkpoint.config.novelty_channels == 4
    calibration = checkpoint.calibration
    assert calibration is not None and calibration.version == 2 and calibration.decision_score == "novelty"
    assert calibration.images == 59_000 and calibration.split == "validation"
    metadata = json.loads(metadata_path_for(out).read_text())
    assert metadata["training"]["epochs"] == 1 and metadata["training"]["novelty"]["digits"] == 1000
    assert metadata["metrics"] == {"test_mse": 0.5}
    for key, value in random_model.state_dict().items():
        torch.testing.assert_close(checkpoint.model.state_dict()[key], value, rtol=0, atol=0)


def test_main_refuses_a_one_class_checkpoint_clearly(
    mnist_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "threes" / "autoencoder.safetensors"
    save_checkpoint(AutoEncoder(ModelConfig(code_size=8)), path, training={"digits": [3], "validation": 5000})
    assert novelty.main([str(path), "--data-dir", str(mnist_dir), "--device", "cpu"]) == 2
    assert "one-class" in capsys.readouterr().err
    assert load_checkpoint(path).config.novelty_channels == 0, "left as it was"
