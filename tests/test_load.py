"""A bounded load test: many concurrent clients mixing valid and invalid requests against the
real server. Zero 5xx, every answer belongs to its own request, and memory stays steady."""

from __future__ import annotations

import asyncio
import io

import httpx
import numpy as np
import pytest
import torch

from service.checkpoint import load_checkpoint
from tests.conftest import SHIPPED_WEIGHTS, image_file, npy
from tests.harness import LiveServer, rss_mb

pytestmark = [pytest.mark.integration, pytest.mark.anyio]

CLIENTS = 32
REQUESTS_PER_CLIENT = 24


async def test_mixed_concurrent_load(live_server: LiveServer, mnist_test) -> None:
    digits = mnist_test.images[: CLIENTS * 4].numpy()
    model = load_checkpoint(SHIPPED_WEIGHTS).model
    with torch.inference_mode():
        x = torch.from_numpy(digits).float().div(255).unsqueeze(1)
        expected = model.reconstruct(x).numpy()
    bad_png = image_file(digits[0])[:50]
    nan_npy = npy(np.full((28, 28), np.nan, np.float32))
    big_png = image_file(np.zeros((40, 40), np.uint8))
    outcomes: list[tuple[str, int]] = []
    mismatches: list[str] = []

    async def client(c: int) -> None:
        async with httpx.AsyncClient(base_url=live_server.url, timeout=60) as http:
            for r in range(REQUESTS_PER_CLIENT):
                kind = ("png", "npy-batch", "bad-png", "nan", "wrong-size", "png")[r % 6]
                i = (c * 4 + r) % len(digits)
                if kind == "png":
                    response = await http.post(
                        "/reconstruct",
                        content=image_file(digits[i]),
                        headers={"content-type": "image/png", "accept": "application/x-npy"},
                    )
                    if response.status_code == 200:
                        got = np.load(io.BytesIO(response.content))
                        if not np.allclose(got, expected[i : i + 1], atol=1e-5):
                            mismatches.append(f"client {c} request {r}")
                elif kind == "npy-batch":
                    idx = [(i + k) % len(digits) for k in range(3)]
                    response = await http.post(
                        "/reconstruct",
                        content=npy(digits[idx]),
                        headers={"content-type": "application/x-npy", "accept": "application/x-npy"},
                    )
                    if response.status_code == 200 and not np.allclose(
                        np.load(io.BytesIO(response.content)), expected[idx], atol=1e-5
                    ):
                        mismatches.append(f"client {c} request {r}")
                elif kind == "bad-png":
                    response = await http.post("/encode", content=bad_png, headers={"content-type": "image/png"})
                elif kind == "nan":
                    response = await http.post(
                        "/reconstruct", content=nan_npy, headers={"content-type": "application/x-npy"}
                    )
                else:
                    response = await http.post("/encode", content=big_png, headers={"content-type": "image/png"})
                outcomes.append((kind, response.status_code))

    rss_before = rss_mb(live_server.process.pid)
    await asyncio.gather(*(client(c) for c in range(CLIENTS)))
    first_round = rss_mb(live_server.process.pid)
    await asyncio.gather(*(client(c) for c in range(CLIENTS)))
    rss_after = rss_mb(live_server.process.pid)

    assert len(outcomes) == 2 * CLIENTS * REQUESTS_PER_CLIENT
    assert not [o for o in outcomes if o[1] >= 500], "no 5xx"
    expected_status = {"png": 200, "npy-batch": 200, "bad-png": 415, "nan": 422, "wrong-size": 422}
    wrong = [(kind, status) for kind, status in outcomes if status != expected_status[kind]]
    assert not wrong, wrong[:5]
    assert not mismatches, mismatches[:5]
    # steady memory: a second round of the same load adds (almost) nothing
    assert rss_after - first_round < 25, (rss_before, first_round, rss_after)
