"""service.hot_path: the inference routes skip FastAPI's routing but answer exactly as it would."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from service.errors import InvalidInput
from service.hot_path import InferenceHotPath
from service.routes import inference
from tests.conftest import image_file, in_process, service_settings

pytestmark = pytest.mark.anyio

DIGIT = image_file(np.zeros((28, 28), dtype=np.uint8))
PNG = {"content-type": "image/png"}


def _hot_path(app: Any) -> InferenceHotPath:
    layer = app.middleware_stack  # built on the first request
    while not isinstance(layer, InferenceHotPath):
        layer = layer.app
    return layer


async def test_only_posts_to_the_inference_routes_take_it(tiny_checkpoint: Path) -> None:
    async with in_process(service_settings(tiny_checkpoint)) as (app, client):
        assert (await client.post("/reconstruct", content=DIGIT, headers=PNG)).status_code == 200
        assert set(_hot_path(app).routes) == {"/encode", "/decode", "/reconstruct"}  # /noop is off
        # everything else is FastAPI's as before: its 405, 404 and docs
        wrong_method = await client.get("/reconstruct")
        assert wrong_method.status_code == 405
        assert wrong_method.json()["error"]["code"] == "method_not_allowed"
        assert (await client.post("/reconstructs", content=DIGIT)).status_code == 404
        assert "/reconstruct" in (await client.get("/openapi.json")).json()["paths"]


async def test_the_noop_route_takes_it_when_enabled(tiny_checkpoint: Path) -> None:
    async with in_process(service_settings(tiny_checkpoint, enable_noop_route=True)) as (app, client):
        assert (await client.post("/noop", content=b"x")).status_code == 204
        assert "/noop" in _hot_path(app).routes


async def test_errors_are_the_same_json_as_elsewhere(tiny_checkpoint: Path) -> None:
    async with in_process(service_settings(tiny_checkpoint)) as (_, client):
        response = await client.post("/reconstruct", content=b"not an image", headers={"content-type": "image/png"})
        assert response.status_code == 415
        assert response.json()["error"]["code"] == "unsupported_media_type"
        assert response.headers["x-request-id"]


async def test_an_unexpected_exception_is_a_bare_500_and_logged(
    tiny_checkpoint: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    async def broken(*_: object, **__: object) -> np.ndarray:
        raise KeyError("a bug")

    monkeypatch.setattr(inference, "read_images", broken)
    async with in_process(service_settings(tiny_checkpoint)) as (_, client):
        response = await client.post("/reconstruct", content=DIGIT, headers=PNG)
        assert response.status_code == 500
        error = response.json()["error"]
        assert error == {"code": "internal_error", "message": error["message"]}
        assert "request id" in error["message"]
        assert "a bug" not in response.text
        # the process goes on serving
        monkeypatch.undo()
        assert (await client.post("/reconstruct", content=DIGIT, headers=PNG)).status_code == 200
    logged = capfd.readouterr().err  # the service's own handler writes to stderr
    assert "unhandled error on POST /reconstruct" in logged
    assert "KeyError: 'a bug'" in logged  # the traceback stays in the log


async def test_api_errors_raised_anywhere_in_the_endpoint_keep_their_status(
    tiny_checkpoint: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def refuse(*_: object, **__: object) -> np.ndarray:
        raise InvalidInput("no thanks", headers={"x-why": "test"})

    monkeypatch.setattr(inference, "read_images", refuse)
    async with in_process(service_settings(tiny_checkpoint)) as (_, client):
        response = await client.post("/encode", content=DIGIT, headers=PNG)
    assert response.status_code == 422
    assert response.json()["error"] == {"code": "invalid_input", "message": "no thanks"}
    assert response.headers["x-why"] == "test"


async def test_metrics_label_hot_path_requests_by_route(tiny_checkpoint: Path) -> None:
    async with in_process(service_settings(tiny_checkpoint)) as (_, client):
        for _ in range(3):
            await client.post("/reconstruct", content=DIGIT, headers=PNG)
        await client.post("/reconstruct", content=b"junk", headers={"content-type": "image/png"})
        text = (await client.get("/metrics")).text
    assert 'mnist_ae_http_requests_total{method="POST",route="/reconstruct",status="200"} 3.0' in text
    assert 'mnist_ae_http_requests_total{method="POST",route="/reconstruct",status="415"} 1.0' in text


async def test_with_the_hot_path_off_fastapi_gives_the_same_answers(tiny_checkpoint: Path) -> None:
    requests: list[tuple[str, bytes, dict[str, str]]] = [
        ("/reconstruct", DIGIT, PNG),
        ("/reconstruct?format=npy", DIGIT, PNG),
        ("/encode", DIGIT, {**PNG, "accept": "image/png"}),
        ("/reconstruct", b"junk", PNG),
        ("/reconstruct?format=gif", DIGIT, PNG),
        ("/decode", b"{}", {"content-type": "application/json"}),
        ("/encode", DIGIT, {"content-type": "text/plain"}),
    ]
    answers = {}
    for hot_path in (True, False):
        async with in_process(service_settings(tiny_checkpoint, hot_path=hot_path)) as (app, client):
            answers[hot_path] = [await client.post(path, content=body, headers=hdrs) for path, body, hdrs in requests]
            await client.get("/healthz")
            assert any(isinstance(layer, InferenceHotPath) for layer in _layers(app)) is hot_path
    for hot, routed in zip(answers[True], answers[False], strict=True):
        assert (hot.status_code, hot.content, hot.headers["content-type"]) == (
            routed.status_code, routed.content, routed.headers["content-type"]
        )  # fmt: skip


def _layers(app: Any) -> list[object]:
    layers, layer = [], app.middleware_stack
    while layer is not None:
        layers.append(layer)
        layer = getattr(layer, "app", None)
    return layers


async def test_behind_a_proxy_root_path_the_same_routes_match(tiny_checkpoint: Path) -> None:
    async with in_process(service_settings(tiny_checkpoint)) as (app, _):
        transport = httpx.ASGITransport(app=app, root_path="/ae")
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            response = await client.post("/ae/reconstruct", content=DIGIT, headers=PNG)
            assert response.status_code == 200
            assert response.json()["shape"] == [1, 1, 28, 28]
            assert (await client.post("/ae/reconstruct", content=b"junk", headers=PNG)).status_code == 415


@pytest.mark.parametrize("hot_path", [True, False])
async def test_a_client_gone_before_its_body_arrived_is_a_499_not_a_server_error(
    tiny_checkpoint: Path, hot_path: bool, capfd: pytest.CaptureFixture[str]
) -> None:
    async with in_process(service_settings(tiny_checkpoint, hot_path=hot_path)) as (app, client):
        scope = {
            "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
            "path": "/reconstruct", "raw_path": b"/reconstruct", "query_string": b"", "root_path": "",
            "headers": [(b"host", b"test"), (b"content-type", b"image/png"), (b"content-length", b"300")],
            "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 80),
        }  # fmt: skip
        sent: list[dict[str, Any]] = []

        async def receive() -> dict[str, Any]:
            return {"type": "http.disconnect"}  # the client hung up before sending its body

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        await app(scope, receive, send)
        metrics = (await client.get("/metrics")).text
    assert sent[0]["status"] == 499
    assert 'route="/reconstruct",status="499"} 1.0' in metrics
    assert 'status="500"' not in metrics
    assert "unhandled error" not in capfd.readouterr().err
