"""API key, CORS and the separate metrics port."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest
import torch

from service.main import StartupError, create_app
from tests.conftest import image_file, in_process, service_settings
from tests.harness import free_port

pytestmark = pytest.mark.anyio

PNG = image_file(torch.randint(0, 256, (28, 28), dtype=torch.uint8).numpy())


def post(**headers: str) -> dict[str, Any]:
    """Keyword arguments for client.post(): one PNG, plus extra headers."""
    return {"content": PNG, "headers": {"content-type": "image/png", **headers}}


async def test_api_key_guards_inference_and_model_but_not_health_or_metrics(tiny_checkpoint: Path) -> None:
    async with in_process(service_settings(tiny_checkpoint, api_key="s3cret-key")) as (_, client):
        for path in ("/encode", "/reconstruct"):
            missing = await client.post(path, **post())
            assert missing.status_code == 401 and missing.json()["error"]["code"] == "unauthorized"
            assert missing.headers["www-authenticate"] == "Bearer"
            wrong = await client.post(path, **post(authorization="Bearer nope"))
            assert wrong.status_code == 401
            right = await client.post(path, **post(authorization="Bearer s3cret-key"))
            assert right.status_code == 200
        assert (await client.post("/decode", json={"latents": [[[0.0] * 7] * 7] * 16})).status_code == 401
        assert (await client.get("/model")).status_code == 401
        assert (await client.get("/model", headers={"authorization": "Bearer s3cret-key"})).status_code == 200
        for open_path in ("/healthz", "/readyz", "/metrics", "/openapi.json"):
            assert (await client.get(open_path)).status_code == 200, open_path
        spec = (await client.get("/openapi.json")).json()
        assert spec["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"


async def test_without_a_key_nothing_is_asked(tiny_checkpoint: Path) -> None:
    async with in_process(service_settings(tiny_checkpoint)) as (_, client):
        assert (await client.post("/reconstruct", **post())).status_code == 200


async def test_cors_is_off_by_default_and_configurable(tiny_checkpoint: Path) -> None:
    preflight = {
        "origin": "https://app.example",
        "access-control-request-method": "POST",
        "access-control-request-headers": "content-type",
    }
    async with in_process(service_settings(tiny_checkpoint)) as (_, client):
        response = await client.options("/reconstruct", headers=preflight)
        assert "access-control-allow-origin" not in response.headers
        simple = await client.post("/reconstruct", **post(origin="https://app.example"))
        assert "access-control-allow-origin" not in simple.headers
    async with in_process(service_settings(tiny_checkpoint, cors_origins=["https://app.example"])) as (_, client):
        response = await client.options("/reconstruct", headers=preflight)
        assert response.status_code == 200
        assert response.headers["access-control-allow-origin"] == "https://app.example"
        simple = await client.post("/reconstruct", **post(origin="https://app.example"))
        assert simple.headers["access-control-allow-origin"] == "https://app.example"
        assert "x-reconstruction-mse" in simple.headers["access-control-expose-headers"].lower()
        other = await client.options("/reconstruct", headers={**preflight, "origin": "https://evil.example"})
        assert other.headers.get("access-control-allow-origin") != "https://evil.example"


async def test_metrics_can_move_to_a_port_of_their_own(tiny_checkpoint: Path) -> None:
    port = free_port()
    async with in_process(service_settings(tiny_checkpoint, metrics_port=port)) as (_, client):
        await client.post("/reconstruct", **post())
        assert (await client.get("/metrics")).status_code == 404
        async with httpx.AsyncClient() as other:
            separate = await other.get(f"http://127.0.0.1:{port}/metrics")
        assert separate.status_code == 200
        assert 'mnist_ae_http_requests_total{method="POST",route="/reconstruct",status="200"} 1.0' in separate.text


async def test_the_service_refuses_pickle_based_checkpoints(tmp_path: Path) -> None:
    path = tmp_path / "seed.pth"
    torch.save({"en.0.weight": torch.zeros(1)}, path)
    app = create_app(service_settings(path))
    with pytest.raises(StartupError, match=r"only \.safetensors checkpoints are served"):
        async with app.router.lifespan_context(app):
            pass
