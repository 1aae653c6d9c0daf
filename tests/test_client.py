"""The typed client, sync and async, against the real server: numpy in, numpy out."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from service.checkpoint import load_checkpoint
from service.client import AsyncAutoencoderClient, AutoencoderClient, ServiceError
from tests.conftest import SHIPPED_WEIGHTS
from tests.harness import LiveServer

pytestmark = pytest.mark.integration


def expected(digits: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    model = load_checkpoint(SHIPPED_WEIGHTS).model
    x = torch.from_numpy(digits).float().div(255).unsqueeze(1)
    with torch.inference_mode():
        recon = model.reconstruct(x)
        return model.encode(x).numpy(), recon.numpy(), (recon - x).pow(2).flatten(1).mean(1).numpy()


def test_sync_client_round_trip(live_server: LiveServer, test_digits: np.ndarray) -> None:
    digits = test_digits[:5]
    latents, recon, mse = expected(digits)
    with AutoencoderClient(live_server.url) as client:
        assert client.ready()
        codes = client.encode(digits)  # uint8 (N,28,28)
        np.testing.assert_allclose(codes, latents, atol=1e-5)
        result = client.reconstruct(digits.astype(np.float64) / 255)  # float64 in [0,1] works too
        np.testing.assert_allclose(result.images, recon, atol=1e-5)
        np.testing.assert_allclose(result.mse, mse, rtol=1e-4)
        decoded = client.decode(codes)
        np.testing.assert_allclose(decoded, recon, atol=1e-5)
        single = client.decode(codes[0])
        assert single.shape == (1, 1, 28, 28)
        assert client.model_info()["latent_shape"] == [16, 7, 7]


def test_sync_client_raises_service_errors(live_server: LiveServer) -> None:
    with AutoencoderClient(live_server.url) as client:
        with pytest.raises(ServiceError) as info:
            client.encode(np.zeros((32, 32), np.uint8))
        assert info.value.status == 422 and info.value.code == "invalid_input"
        assert "expected 28x28" in info.value.message
        with pytest.raises(ServiceError, match="NaN"):
            client.reconstruct(np.full((28, 28), np.nan, np.float32))


@pytest.mark.anyio
async def test_async_client_round_trip(live_server: LiveServer, test_digits: np.ndarray) -> None:
    digits = test_digits[:4]
    latents, recon, mse = expected(digits)
    async with AsyncAutoencoderClient(live_server.url) as client:
        assert await client.ready()
        np.testing.assert_allclose(await client.encode(digits), latents, atol=1e-5)
        result = await client.reconstruct(digits)
        np.testing.assert_allclose(result.mse, mse, rtol=1e-4)
        np.testing.assert_allclose(await client.decode(latents), recon, atol=1e-5)
        assert (await client.model_info())["parameters"] == 7121 + 38187  # the autoencoder and its novelty head
