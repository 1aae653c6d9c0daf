"""The CUDA path: the predictor, the folded decoder, the optimizer, training and a live server on
the GPU. Skipped without CUDA; ``MNIST_AE_TEST_GPU_DEVICE=cpu`` runs the same tests on the CPU,
as a check of the tests themselves. bench/device/run.sh runs this file on a lent GPU.

Tolerances: cuDNN runs float32 convolutions in TF32 on Ampere and later by default (10-bit
mantissa), so the GPU's outputs sit within ~1e-3 of the CPU's, not bit for bit.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch

from service.checkpoint import load_checkpoint
from service.folding import FoldedDecoder
from service.inference import Op, Predictor
from tests.conftest import REPO, SHIPPED_WEIGHTS, npy
from tests.harness import start_server, stop_server
from training.optim import build_adam

DEVICE = os.environ.get("MNIST_AE_TEST_GPU_DEVICE", "cuda")
pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(DEVICE.startswith("cuda") and not torch.cuda.is_available(), reason="no CUDA device"),
]
ATOL = 5e-3  # TF32 convolutions, on outputs in [0,1]
DIGITS = np.load(REPO / "examples" / "digits.npy")  # (3,28,28) uint8: a 7, a 2 and a 1


@pytest.fixture(scope="module")
def device() -> torch.device:
    return torch.device(DEVICE)


def batch_of_digits(n: int) -> np.ndarray:
    rng = np.random.default_rng(0)
    digits = np.resize(DIGITS, (n, 28, 28)).astype(np.float32) / 255
    noise = rng.random((n, 28, 28), dtype=np.float32) * 0.1  # every image different
    return np.clip(digits + noise, 0, 1).astype(np.float32)


@pytest.mark.parametrize("n", [1, 7, 256])
def test_the_predictor_on_the_device_gives_the_cpus_answers(device: torch.device, n: int) -> None:
    on_device = Predictor(load_checkpoint(SHIPPED_WEIGHTS).model, device)
    on_cpu = Predictor(load_checkpoint(SHIPPED_WEIGHTS).model, torch.device("cpu"))
    images = batch_of_digits(n)
    (latents,) = on_device.run(Op.ENCODE, images)
    (expected_latents,) = on_cpu.run(Op.ENCODE, images)
    np.testing.assert_allclose(latents, expected_latents, atol=ATOL * 4)  # latents run up to ~5, not 1
    (decoded,) = on_device.run(Op.DECODE, expected_latents)
    (expected_decoded,) = on_cpu.run(Op.DECODE, expected_latents)
    np.testing.assert_allclose(decoded, expected_decoded, atol=ATOL)
    recon, mse, novelty, *_ = on_device.run(Op.RECONSTRUCT, images)
    expected_recon, expected_mse, expected_novelty, *_ = on_cpu.run(Op.RECONSTRUCT, images)
    np.testing.assert_allclose(novelty, expected_novelty, atol=0.05)  # log-odds of a few units
    assert recon.shape == (n, 1, 28, 28) and mse.shape == (n,) and recon.dtype == mse.dtype == np.float32
    np.testing.assert_allclose(recon, expected_recon, atol=ATOL)
    np.testing.assert_allclose(mse, expected_mse, rtol=0.05, atol=1e-5)
    assert recon.min() >= 0.0 and recon.max() <= 1.0


def test_the_folded_decoder_is_the_same_function_on_the_device(device: torch.device) -> None:
    model = load_checkpoint(SHIPPED_WEIGHTS).model.to(device).eval()
    latents = torch.rand(64, 16, 7, 7, device=device) * 3
    with torch.inference_mode():
        folded, plain = FoldedDecoder(model)(latents), model.de(latents)
    assert folded.device.type == device.type
    torch.testing.assert_close(folded, plain, atol=ATOL, rtol=0)


def test_the_optimizer_is_fused_on_the_device(device: torch.device) -> None:
    assert build_adam(torch.nn.Linear(2, 2).to(device).parameters(), lr=0.1, device=device).defaults["fused"]


@pytest.mark.integration
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_training_on_the_device_writes_a_checkpoint_that_serves(
    mnist_dir: Path, tmp_path: Path, precision: str
) -> None:
    out = tmp_path / "run"
    command = [
        sys.executable,
        "-m",
        "training",
        "--device",
        DEVICE,
        "--epochs",
        "1",
        "--limit",
        "4000",
        "--lr",
        "0.01",
        "--precision",
        precision,
        "--data-dir",
        str(mnist_dir),
        "--out",
        str(out),
        "--no-progress",
    ]
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    meta = json.loads((out / "autoencoder.json").read_text())
    assert meta["training"]["device"].startswith(DEVICE.split(":")[0])
    assert meta["training"]["precision"] == precision
    assert meta["metrics"]["test_mse"] < 0.03  # 125 steps: far from done, far from the 0.11 of a blank output
    load_checkpoint(out / "autoencoder.safetensors")  # verified: sha256, architecture, finite weights


@pytest.mark.integration
def test_a_live_server_on_the_device_answers_as_the_cpu_model(tmp_path: Path) -> None:
    server = start_server(
        tmp_path / "server.log", {"MNIST_AE_DEVICE": DEVICE, "MNIST_AE_CHECKPOINT": str(SHIPPED_WEIGHTS)}
    )
    try:
        model = httpx.get(f"{server.url}/model", timeout=10).json()
        assert model["device"].startswith(DEVICE.split(":")[0])
        images = (batch_of_digits(300) * 255).round().astype(np.uint8)  # over one batch of 256
        response = httpx.post(
            f"{server.url}/reconstruct",
            content=npy(images),
            timeout=30,
            headers={"content-type": "application/x-npy", "accept": "application/x-npy"},
        )
        assert response.status_code == 200, response.text
        recon = np.load(io.BytesIO(response.content))
        expected, *_ = Predictor(load_checkpoint(SHIPPED_WEIGHTS).model, torch.device("cpu")).run(
            Op.RECONSTRUCT, images.astype(np.float32) / 255
        )
        np.testing.assert_allclose(recon, expected, atol=ATOL)
    finally:
        stop_server(server)
