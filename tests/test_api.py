"""The HTTP API in-process: every input and output format, readiness, request ids, /model, /metrics, docs."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import io
import logging
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image

from service.checkpoint import load_checkpoint
from service.codecs.oip import MODEL_NAME
from service.inference import Op, Predictor
from service.main import create_app
from tests.conftest import image_file, in_process, npy, service_settings, wait_until_ready

pytestmark = pytest.mark.anyio

RNG = np.random.default_rng(42)
DIGITS = RNG.integers(0, 256, (3, 28, 28), dtype=np.uint8)  # exactly representable in every format


def expected(checkpoint: Path, images: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """What the model itself says for (N,28,28) uint8 images: latents, reconstructions, MSE."""
    ckpt = load_checkpoint(checkpoint)
    predictor = Predictor(ckpt.model, ckpt.device)
    x = images.astype(np.float32) / 255
    (latents,) = predictor.run(Op.ENCODE, x)
    recon, mse, *_ = predictor.run(Op.RECONSTRUCT, x)
    return latents, recon, mse


def image_bodies(images: np.ndarray) -> dict[str, dict[str, object]]:
    """The same uint8 images in every accepted request format (as httpx keyword arguments)."""
    files = [("file", (f"d{i}.png", image_file(img), "image/png")) for i, img in enumerate(images)]
    form = httpx.Request("POST", "http://x/", files=files)
    return {
        "multipart": {"files": files},  # read by service/codecs/multipart.py
        "multipart-other-headers": {  # parts with headers it does not know go to Starlette's parser: both must agree
            "content": form.read().replace(b"Content-Type: image/png\r\n", b"Content-Type: image/png\r\nX-Note: 1\r\n"),
            "headers": {"content-type": form.headers["content-type"]},
        },
        "json-pixels": {"json": {"images": (images / 255).tolist()}},
        "json-base64": {"json": {"images": [base64.b64encode(image_file(img)).decode() for img in images]}},
        "npy-uint8": {"content": npy(images), "headers": {"content-type": "application/x-npy"}},
        "npy-float32-N1HW": {
            "content": npy((images / np.float32(255)).astype(np.float32)[:, None]),
            "headers": {"content-type": "application/x-npy"},
        },
    }


@pytest.mark.parametrize("fmt", list(image_bodies(DIGITS)))
async def test_reconstruct_accepts_every_batch_format(api: httpx.AsyncClient, tiny_checkpoint: Path, fmt: str) -> None:
    response = await api.post("/reconstruct", **image_bodies(DIGITS)[fmt])  # type: ignore[arg-type]
    assert response.status_code == 200, response.text
    body = response.json()
    _, recon, mse = expected(tiny_checkpoint, DIGITS)
    assert body["shape"] == [3, 1, 28, 28] and body["dtype"] == "float32"
    np.testing.assert_allclose(np.array(body["data"], np.float32), recon, atol=1e-6)
    np.testing.assert_allclose(body["mse"], mse, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("fmt", list(image_bodies(DIGITS)))
async def test_encode_accepts_every_batch_format(api: httpx.AsyncClient, tiny_checkpoint: Path, fmt: str) -> None:
    response = await api.post("/encode", params={"format": "npy"}, **image_bodies(DIGITS)[fmt])  # type: ignore[arg-type]
    assert response.status_code == 200, response.text
    latents = np.load(io.BytesIO(response.content))
    assert latents.shape == (3, 16, 7, 7) and latents.dtype == np.float32
    np.testing.assert_allclose(latents, expected(tiny_checkpoint, DIGITS)[0], atol=1e-6)


@pytest.mark.parametrize(
    ("content_type", "fmt"),
    [("image/png", "PNG"), ("image/jpeg", "JPEG"), ("image/bmp", "BMP"), ("image/webp", "WEBP")],
)
async def test_one_raw_image_body(api: httpx.AsyncClient, content_type: str, fmt: str) -> None:
    body = image_file(DIGITS[0], fmt)
    response = await api.post("/reconstruct", content=body, headers={"content-type": content_type})
    assert response.status_code == 200, response.text
    assert response.json()["shape"] == [1, 1, 28, 28]


async def test_image_sent_as_octet_stream_is_recognised(api: httpx.AsyncClient) -> None:
    response = await api.post(
        "/encode", content=image_file(DIGITS[0]), headers={"content-type": "application/octet-stream"}
    )
    assert response.status_code == 200 and response.json()["shape"] == [1, 16, 7, 7]


async def test_colour_image_becomes_gray(api: httpx.AsyncClient) -> None:
    gray = DIGITS[0]
    rgb = np.stack([gray] * 3, axis=-1)
    a = await api.post("/encode", content=image_file(gray), headers={"content-type": "image/png"})
    b = await api.post("/encode", content=image_file(rgb), headers={"content-type": "image/png"})
    np.testing.assert_allclose(a.json()["data"], b.json()["data"], atol=1e-6)


async def test_resize_parameter(api: httpx.AsyncClient) -> None:
    big = np.kron(DIGITS[0], np.ones((2, 2), np.uint8))  # 56x56
    refused = await api.post("/encode", content=image_file(big), headers={"content-type": "image/png"})
    assert refused.status_code == 422
    assert "56x56, expected 28x28; add ?resize=true" in refused.json()["error"]["message"]
    resized = await api.post(
        "/encode", params={"resize": "true"}, content=image_file(big), headers={"content-type": "image/png"}
    )
    assert resized.status_code == 200 and resized.json()["shape"] == [1, 16, 7, 7]


@pytest.mark.parametrize(
    ("how", "media"),
    [
        ({"params": {"format": "png"}}, "image/png"),
        ({"headers": {"accept": "image/png"}}, "image/png"),
        ({"params": {"format": "npy"}}, "application/x-npy"),
        ({"headers": {"accept": "application/x-npy"}}, "application/x-npy"),
        ({"params": {"format": "json"}, "headers": {"accept": "image/png"}}, "application/json"),
        ({}, "application/json"),
    ],
)
async def test_output_format_by_parameter_or_accept(api: httpx.AsyncClient, how: dict[str, Any], media: str) -> None:
    body = {"content": npy(DIGITS), "headers": {"content-type": "application/x-npy", **how.get("headers", {})}}
    response = await api.post("/reconstruct", params=how.get("params"), **body)  # type: ignore[arg-type]
    assert response.status_code == 200
    assert response.headers["content-type"].startswith(media)
    if media == "image/png":
        grid = Image.open(io.BytesIO(response.content))
        assert grid.mode == "L" and grid.size == (2 * 28 + 2, 2 * 28 + 2)  # 3 images on a 2x2 grid
    if media != "application/json":
        assert len(response.headers["x-reconstruction-mse"].split(",")) == 3


async def test_png_outputs_one_image_as_itself(api: httpx.AsyncClient) -> None:
    response = await api.post(
        "/reconstruct", params={"format": "png"}, content=image_file(DIGITS[0]), headers={"content-type": "image/png"}
    )
    assert Image.open(io.BytesIO(response.content)).size == (28, 28)
    latents = await api.post(
        "/encode", params={"format": "png"}, content=image_file(DIGITS[0]), headers={"content-type": "image/png"}
    )
    assert Image.open(io.BytesIO(latents.content)).size == (31, 31)  # 4x4 channels of 7x7, 1px apart


async def test_decode_takes_json_or_npy_single_or_batch(api: httpx.AsyncClient, tiny_checkpoint: Path) -> None:
    latents, _, _ = expected(tiny_checkpoint, DIGITS)
    ckpt = load_checkpoint(tiny_checkpoint)
    predictor = Predictor(ckpt.model, ckpt.device)
    (want,) = predictor.run(Op.DECODE, latents)
    as_json = await api.post("/decode", json={"latents": latents.tolist()})
    assert as_json.status_code == 200, as_json.text
    np.testing.assert_allclose(np.array(as_json.json()["data"], np.float32), want, atol=1e-6)
    single = await api.post("/decode", json={"latents": latents[0].tolist()})
    assert single.json()["shape"] == [1, 1, 28, 28]
    as_npy = await api.post(
        "/decode", params={"format": "npy"}, content=npy(latents), headers={"content-type": "application/x-npy"}
    )
    decoded = np.load(io.BytesIO(as_npy.content))
    np.testing.assert_allclose(decoded, want, atol=1e-6)
    assert decoded.min() >= 0 and decoded.max() <= 1


async def test_encode_then_decode_round_trip_matches_reconstruct(api: httpx.AsyncClient) -> None:
    headers = {"content-type": "application/x-npy", "accept": "application/x-npy"}
    latents = (await api.post("/encode", content=npy(DIGITS), headers=headers)).content
    decoded = np.load(io.BytesIO((await api.post("/decode", content=latents, headers=headers)).content))
    recon = np.load(io.BytesIO((await api.post("/reconstruct", content=npy(DIGITS), headers=headers)).content))
    np.testing.assert_allclose(decoded, recon, atol=1e-6)


async def test_concurrent_requests_get_their_own_results(api: httpx.AsyncClient, tiny_checkpoint: Path) -> None:
    images = RNG.integers(0, 256, (24, 28, 28), dtype=np.uint8)
    sizes = [1, 2, 3, 1, 4, 2, 3, 1, 2, 5]
    starts = np.cumsum([0, *sizes])[:-1]
    headers = {"content-type": "application/x-npy", "accept": "application/x-npy"}
    responses = await asyncio.gather(
        *(
            api.post("/reconstruct", content=npy(images[s : s + n]), headers=headers)
            for s, n in zip(starts, sizes, strict=True)
        )
    )
    _, recon, mse = expected(tiny_checkpoint, images)
    for s, n, response in zip(starts, sizes, responses, strict=True):
        np.testing.assert_allclose(np.load(io.BytesIO(response.content)), recon[s : s + n], atol=1e-6)
        got_mse = [float(v) for v in response.headers["x-reconstruction-mse"].split(",")]
        np.testing.assert_allclose(got_mse, mse[s : s + n], rtol=1e-5)


async def test_request_id_is_echoed_or_made(api: httpx.AsyncClient) -> None:
    mine = await api.get("/healthz", headers={"x-request-id": "abc-123"})
    assert mine.headers["x-request-id"] == "abc-123"
    made = await api.get("/healthz")
    assert len(made.headers["x-request-id"]) == 32
    hostile = await api.get("/healthz", headers={"x-request-id": "bad id\twith spaces" * 20})
    assert hostile.headers["x-request-id"] != "bad id\twith spaces" * 20
    error = await api.post("/encode", content=b"", headers={"content-type": "image/png", "x-request-id": "e-1"})
    assert error.status_code == 400 and error.headers["x-request-id"] == "e-1"


async def test_model_info(api: httpx.AsyncClient, tiny_checkpoint: Path) -> None:
    info = (await api.get("/model")).json()
    assert info["checkpoint_sha256"] == load_checkpoint(tiny_checkpoint).sha256
    assert info["architecture"]["latent_channels"] == 16 and info["parameters"] == 7121
    assert info["input_shape"] == [1, 28, 28] and info["latent_shape"] == [16, 7, 7]
    assert info["metrics"] == {"test_mse": 0.5} and info["device"] == "cpu"
    assert {"torch", "python", "numpy", "fastapi"} <= set(info["versions"])


async def test_metrics_count_requests_batches_and_images(api: httpx.AsyncClient) -> None:
    await api.post("/reconstruct", content=npy(DIGITS), headers={"content-type": "application/x-npy"})
    await api.post("/encode", content=b"junk", headers={"content-type": "image/png"})
    text = (await api.get("/metrics")).text
    assert 'mnist_ae_http_requests_total{method="POST",route="/reconstruct",status="200"} 1.0' in text
    assert 'mnist_ae_http_requests_total{method="POST",route="/encode",status="415"} 1.0' in text
    assert 'mnist_ae_images_processed_total{op="reconstruct"} 3.0' in text
    assert 'mnist_ae_batch_size_images_bucket{le="4.0",op="reconstruct"} 1.0' in text
    assert "mnist_ae_queue_wait_seconds_count 1.0" in text
    assert 'mnist_ae_http_request_duration_seconds_bucket{le="+Inf",route="/reconstruct"} 1.0' in text
    assert "mnist_ae_ready 1.0" in text
    # the process and the interpreter, as Prometheus' own client reports them by default
    for family in (
        "process_resident_memory_bytes",
        "process_cpu_seconds_total",
        "process_start_time_seconds",
        "python_info",
        "python_gc_collections_total",
    ):
        assert f"\n{family}" in text, family


async def test_readiness_before_the_model_is_loaded(tiny_checkpoint: Path) -> None:
    app = create_app(service_settings(tiny_checkpoint))  # lifespan not started: nothing loaded
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
        assert (await client.get("/healthz")).status_code == 200
        ready = await client.get("/readyz")
        assert ready.status_code == 503 and ready.json()["error"]["code"] == "not_ready"
        for path in ("/encode", "/reconstruct"):
            response = await client.post(path, content=npy(DIGITS), headers={"content-type": "application/x-npy"})
            assert response.status_code == 503 and response.json()["error"]["code"] == "not_ready"
            assert response.headers["retry-after"] == "1"
        assert (await client.get("/model")).status_code == 503


async def test_the_server_starts_serving_once_warm(tiny_checkpoint: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The warm-up is part of the lifespan's start, so the server takes no connection before it
    can answer: a worker that a supervisor starts or restarts gets no requests it would refuse."""
    release = asyncio.Event()
    loop = asyncio.get_running_loop()
    real_warmup = Predictor.warmup

    def slow_warmup(self: Predictor, batches: int, batch_size: int) -> float:
        asyncio.run_coroutine_threadsafe(release.wait(), loop).result(10)
        return real_warmup(self, batches, batch_size)

    monkeypatch.setattr(Predictor, "warmup", slow_warmup)
    app = create_app(service_settings(tiny_checkpoint))
    started = asyncio.Event()

    async def run_lifespan() -> None:
        async with app.router.lifespan_context(app):
            started.set()
            await asyncio.sleep(3600)

    lifespan = asyncio.create_task(run_lifespan())
    await asyncio.sleep(0.2)
    assert not started.is_set() and not app.state.service.ready, "still starting while warming up"
    release.set()
    await asyncio.wait_for(started.wait(), 20)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        assert (await client.get("/readyz")).json() == {"ready": True, "status": "ready"}
    lifespan.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await lifespan


async def test_cuda_code_is_paged_out_once_warm_when_serving_from_the_cpu(
    tiny_checkpoint: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[bool] = []

    def fake_drop() -> int:
        calls.append(app.state.service.ready)  # readiness turns true only after this
        return 0

    monkeypatch.setattr("service.main.drop_cuda_library_pages", fake_drop)
    app = create_app(service_settings(tiny_checkpoint, device="cpu"))
    async with app.router.lifespan_context(app):
        await wait_until_ready(app)
    assert calls == [False]


async def test_openapi_documents_every_endpoint_with_working_examples(api: httpx.AsyncClient) -> None:
    spec = (await api.get("/openapi.json")).json()
    assert {"/encode", "/decode", "/reconstruct", "/healthz", "/readyz", "/model", "/metrics"} <= set(spec["paths"])
    for path in ("/encode", "/decode", "/reconstruct"):
        operation = spec["paths"][path]["post"]
        content = operation["requestBody"]["content"]
        assert "application/json" in content and "application/x-npy" in content
        assert {"application/json", "image/png", "application/x-npy"} <= set(operation["responses"]["200"]["content"])
        for example in content["application/json"]["examples"].values():
            response = await api.post(path, json=example["value"])
            assert response.status_code == 200, (path, response.text)
    assert "multipart/form-data" in spec["paths"]["/encode"]["post"]["requestBody"]["content"]
    docs = await api.get("/docs")
    assert docs.status_code == 200 and "swagger" in docs.text.lower()


async def test_openapi_says_what_the_served_model_accepts(tiny_checkpoint: Path) -> None:
    """The latents' exact shape, the batch limit, the model's name and version: what schemathesis's
    positive data check holds the server to (tests/test_schema_fuzz.py)."""
    async with in_process(service_settings(tiny_checkpoint, max_images_per_request=16)) as (app, api):
        spec = (await api.get("/openapi.json")).json()
        schemas = spec["components"]["schemas"]
        batch, single = schemas["LatentsRequest"]["properties"]["latents"]["oneOf"]
        shape, level = [], single
        while level.get("type") == "array":
            assert level["minItems"] == level["maxItems"]
            shape.append(level["minItems"])
            level = level["items"]
        assert tuple(shape) == app.state.service.checkpoint.config.latent_shape == (16, 7, 7)
        assert level == {"type": "number", "minimum": -1e4, "maximum": 1e4}
        assert batch["maxItems"] == 16 == schemas["ImagesRequest"]["properties"]["images"]["maxItems"]
        infer = spec["paths"]["/v2/models/{name}/versions/{version}/infer"]["post"]
        enums = {p["name"]: p["schema"]["enum"] for p in infer["parameters"]}
        sha = app.state.service.checkpoint.sha256
        assert enums == {"name": [MODEL_NAME], "version": [sha[:12]]}
        assert (await api.post("/decode", json={"latents": np.zeros((16, 7, 7)).tolist()})).status_code == 200


async def test_documented_query_parameters_are_the_ones_served(api: httpx.AsyncClient) -> None:
    """The declaration that serves a route writes its OpenAPI: every documented parameter and value
    is taken, and a value outside the documented ones is refused with 422."""
    spec = (await api.get("/openapi.json")).json()
    body = {"content": image_file(DIGITS[0]), "headers": {"content-type": "image/png"}}
    latent = {"json": {"latents": np.zeros((16, 7, 7)).tolist()}}
    routes = {
        "/encode": {"format", "resize"},
        "/reconstruct": {"format", "resize", "anomaly_quantile", "error_map"},
        "/decode": {"format"},
    }
    for path, names in routes.items():
        parameters = spec["paths"][path]["post"]["parameters"]
        assert {p["name"] for p in parameters} == names, path
        request = latent if path == "/decode" else body
        for parameter in parameters:
            schema = parameter["schema"]
            values = schema.get("enum") or {
                "boolean": ["true", "false"],
                "number": [schema.get("minimum"), schema.get("maximum")],
            }.get(schema["type"], [])
            assert values, parameter
            for value in values:
                response = await api.post(path, params={parameter["name"]: value}, **request)
                assert response.status_code == 200, (path, parameter["name"], value, response.text)
            refused = await api.post(path, params={parameter["name"]: "bogus"}, **request)
            assert refused.status_code == 422 and parameter["name"] in refused.json()["error"]["message"]


@pytest.mark.parametrize(("setting", "logged"), [("all", {200, 404}), ("errors", {404}), ("off", set())])
async def test_the_access_log_setting(tiny_checkpoint: Path, setting: str, logged: set[int]) -> None:
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    app = create_app(service_settings(tiny_checkpoint, access_log=setting))  # configures logging: then listen
    access = logging.getLogger("service.access")
    keep = Keep()
    access.addHandler(keep)
    async with app.router.lifespan_context(app):
        await wait_until_ready(app)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            assert (
                await client.post("/reconstruct", content=image_file(DIGITS[0]), headers={"content-type": "image/png"})
            ).status_code == 200
            assert (await client.get("/nope")).status_code == 404
    access.removeHandler(keep)
    assert {record.status for record in records} == logged  # type: ignore[attr-defined]


async def test_a_given_checkpoint_is_served_without_loading_it_again(
    tiny_checkpoint: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`python -m service` loads the checkpoint once, before uvicorn starts, and hands it over."""
    checkpoint = load_checkpoint(tiny_checkpoint)

    def no_second_load(*args: object, **kwargs: object) -> None:
        raise AssertionError("the checkpoint was loaded again")

    monkeypatch.setattr("service.main.load_checkpoint", no_second_load)
    app = create_app(service_settings(tiny_checkpoint), checkpoint=checkpoint)
    async with app.router.lifespan_context(app):
        await wait_until_ready(app)
        assert app.state.service.checkpoint is checkpoint


async def test_the_page_and_offline_docs_and_the_switch(tiny_checkpoint: Path) -> None:
    """/ serves the page (its own files only, by policy) and /docs Swagger UI from local assets;
    MNIST_AE_UI=false leaves the page out and keeps /docs."""
    async with in_process(service_settings(tiny_checkpoint)) as (_, client):
        page = await client.get("/")
        assert page.status_code == 200 and "<canvas" in page.text
        assert "default-src 'self'" in page.headers["content-security-policy"]
        for asset in ("/ui/app.js", "/ui/style.css", "/ui/digits/0.png"):
            assert (await client.get(asset)).status_code == 200, asset
        docs = await client.get("/docs")
        assert docs.status_code == 200 and "/docs-assets/swagger-ui-bundle.js" in docs.text
        assert "//" not in docs.text and "http" not in docs.text, "nothing from a CDN or any other host"
        assert (await client.get("/docs-assets/swagger-ui-bundle.js")).status_code == 200
    async with in_process(service_settings(tiny_checkpoint, ui=False)) as (_, client):
        assert (await client.get("/")).status_code == 404
        assert (await client.get("/ui/app.js")).status_code == 404
        assert (await client.get("/docs")).status_code == 200
