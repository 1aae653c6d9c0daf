"""The Open Inference Protocol (KServe v2 REST): in-process for every refusal, and with the real
``tritonclient.http`` against a real uvicorn process for everything a Triton/KServe user does."""

from __future__ import annotations

import io
import re
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import tritonclient.http as triton
from tritonclient.utils import InferenceServerException

from service.checkpoint import load_checkpoint
from service.codecs.oip import MODEL_NAME
from tests.conftest import SHIPPED_WEIGHTS, npy
from tests.harness import LiveServer

IMAGES = np.random.default_rng(11).integers(0, 256, (5, 28, 28), dtype=np.uint8)
INFER = f"/v2/models/{MODEL_NAME}/infer"


def images_input(datatype: str = "UINT8", shape: list[int] | None = None, data: Any = None) -> dict[str, Any]:
    array = IMAGES if datatype == "UINT8" else IMAGES.astype(np.float32) / 255
    return {
        "name": "images",
        "datatype": datatype,
        "shape": shape or list(array.shape),
        "data": array.reshape(-1).tolist() if data is None else data,
    }


# --- in-process: the protocol's answers and refusals ---------------------------------------------


@pytest.mark.anyio
async def test_health_and_metadata(api: httpx.AsyncClient) -> None:
    assert (await api.get("/v2/health/live")).status_code == 200
    assert (await api.get("/v2/health/ready")).status_code == 200
    server = (await api.get("/v2")).json()
    assert server["name"] and "binary_tensor_data" in server["extensions"]
    meta = (await api.get(f"/v2/models/{MODEL_NAME}")).json()
    assert meta["name"] == MODEL_NAME and len(meta["versions"]) == 1
    assert {o["name"] for o in meta["outputs"]} == {"latent", "reconstruction", "mse", "percentile", "anomaly"}
    version = meta["versions"][0]
    assert (await api.get(f"/v2/models/{MODEL_NAME}/versions/{version}")).status_code == 200
    assert (await api.get(f"/v2/models/{MODEL_NAME}/ready")).status_code == 200
    assert (await api.get(f"/v2/models/{MODEL_NAME}/versions/{version}/ready")).status_code == 200
    for path in ("/v2/models/other", "/v2/models/other/ready", f"/v2/models/{MODEL_NAME}/versions/0/ready"):
        response = await api.get(path)
        assert response.status_code == 404 and isinstance(response.json()["error"], str), path


@pytest.mark.anyio
async def test_json_inference_answers_every_output_by_default(api: httpx.AsyncClient) -> None:
    response = await api.post(INFER, json={"id": "r1", "inputs": [images_input()]})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model_name"] == MODEL_NAME and body["id"] == "r1"
    shapes = {o["name"]: (o["datatype"], o["shape"]) for o in body["outputs"]}
    assert shapes == {
        "latent": ("FP32", [5, 16, 7, 7]),
        "reconstruction": ("FP32", [5, 1, 28, 28]),
        "mse": ("FP32", [5]),
        "percentile": ("FP32", [5]),
        "anomaly": ("BOOL", [5]),
    }
    native = (await api.post("/reconstruct", content=npy(IMAGES), headers={"content-type": "application/x-npy"})).json()
    outputs = {o["name"]: o["data"] for o in body["outputs"]}
    np.testing.assert_allclose(outputs["mse"], native["mse"], rtol=1e-6)
    assert outputs["anomaly"] == native["anomaly"]


BAD: list[tuple[str, Any, int, str]] = [
    ("not JSON", b"{", 400, "invalid inference request"),
    ("no inputs", {"inputs": []}, 400, "inputs"),
    ("two inputs", {"inputs": [images_input(), images_input()]}, 400, "one input"),
    ("unknown input", {"inputs": [{**images_input(), "name": "pixels"}]}, 400, "'images' or 'latents'"),
    ("INT64 images", {"inputs": [{**images_input(), "datatype": "INT64"}]}, 400, "datatype INT64"),
    ("FP16 images", {"inputs": [{**images_input(), "datatype": "FP16"}]}, 400, "datatype FP16"),
    ("wrong count", {"inputs": [images_input(shape=[4, 28, 28])]}, 400, "values for shape"),
    ("32x32", {"inputs": [images_input(shape=[1, 32, 32], data=[0] * 1024)]}, 400, "expected [N,28,28]"),
    ("3 channels", {"inputs": [images_input(shape=[1, 3, 28, 28], data=[0] * 2352)]}, 400, "expected [N,28,28]"),
    ("2-d", {"inputs": [images_input(shape=[5, 784])]}, 400, "expected [N,28,28]"),
    ("FP32 out of range", {"inputs": [images_input("FP32", data=(IMAGES.reshape(-1) * 1.0).tolist())]}, 400, "[0, 1]"),
    ("UINT8 over 255", {"inputs": [images_input(data=[300] * IMAGES.size)]}, 400, "0..255"),
    ("strings", {"inputs": [images_input(data=["a"] * IMAGES.size)]}, 400, "numbers"),
    (
        "latents shape",
        {"inputs": [{"name": "latents", "datatype": "FP32", "shape": [1, 8, 7, 7], "data": [0.0] * 392}]},
        400,
        "latents have shape",
    ),
    ("unknown output", {"inputs": [images_input()], "outputs": [{"name": "logits"}]}, 400, "unknown output"),
    (
        "latent from latents",
        {
            "inputs": [{"name": "latents", "datatype": "FP32", "shape": [1, 16, 7, 7], "data": [0.0] * 784}],
            "outputs": [{"name": "mse"}],
        },
        400,
        "unknown output",
    ),
    ("quantile", {"inputs": [images_input()], "parameters": {"anomaly_quantile": 2}}, 400, "anomaly_quantile"),
    (
        "binary size",
        {"inputs": [{**images_input(), "data": None, "parameters": {"binary_data_size": 7}}]},
        400,
        "binary_data_size",
    ),
]


@pytest.mark.anyio
@pytest.mark.parametrize(("case", "body", "status", "says"), BAD, ids=[b[0] for b in BAD])
async def test_bad_requests_get_protocol_errors(
    api: httpx.AsyncClient, case: str, body: Any, status: int, says: str
) -> None:
    content = body if isinstance(body, bytes) else None
    response = await api.post(INFER, content=content, json=None if content else body)
    assert response.status_code == status, (case, response.text)
    error = response.json()["error"]
    assert isinstance(error, str) and says in error, (case, error)


@pytest.mark.anyio
async def test_binary_framing_errors(api: httpx.AsyncClient) -> None:
    header = (
        b'{"inputs":[{"name":"images","datatype":"UINT8","shape":[1,28,28],"parameters":{"binary_data_size":784}}]}'
    )
    ok = await api.post(
        INFER, content=header + bytes(784), headers={"inference-header-content-length": str(len(header))}
    )
    assert ok.status_code == 200 and ok.headers["content-type"] == "application/json"  # no binary output asked
    for length in ("abc", str(len(header) + 10_000)):
        bad = await api.post(INFER, content=header + bytes(784), headers={"inference-header-content-length": length})
        assert bad.status_code == 400 and "Inference-Header-Content-Length" in bad.json()["error"]
    short = await api.post(
        INFER, content=header + bytes(700), headers={"inference-header-content-length": str(len(header))}
    )
    assert short.status_code == 400 and "binary_data_size" in short.json()["error"]


# --- tritonclient against a real server ------------------------------------------------------------


@pytest.fixture(scope="module")
def client(live_server: LiveServer) -> triton.InferenceServerClient:
    return triton.InferenceServerClient(live_server.url.removeprefix("http://"))


def native(server: LiveServer, path: str, images: np.ndarray) -> tuple[np.ndarray, dict[str, str]]:
    response = httpx.post(
        f"{server.url}{path}",
        content=npy(images),
        timeout=30,
        headers={"content-type": "application/x-npy", "accept": "application/x-npy"},
    )
    assert response.status_code == 200, response.text
    return np.load(io.BytesIO(response.content)), dict(response.headers)


@pytest.mark.integration
def test_tritonclient_health_and_metadata(client: triton.InferenceServerClient) -> None:
    assert client.is_server_live() and client.is_server_ready() and client.is_model_ready(MODEL_NAME)
    meta = client.get_model_metadata(MODEL_NAME)
    assert meta["name"] == MODEL_NAME and meta["versions"] == [load_checkpoint(SHIPPED_WEIGHTS).sha256[:12]]
    assert {i["name"] for i in meta["inputs"]} == {"images", "latents"}
    assert "binary_tensor_data" in client.get_server_metadata()["extensions"]


@pytest.mark.integration
@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
@pytest.mark.parametrize("datatype", ["UINT8", "FP32"])
def test_tritonclient_infer_matches_the_native_endpoints(
    client: triton.InferenceServerClient, live_server: LiveServer, binary: bool, datatype: str
) -> None:
    images = IMAGES if datatype == "UINT8" else (IMAGES.astype(np.float32) / 255)[:, None]  # [N,1,28,28] too
    given = triton.InferInput("images", list(images.shape), datatype)
    given.set_data_from_numpy(images, binary_data=binary)
    names = ["reconstruction", "mse", "latent", "percentile", "anomaly"]
    wanted = [triton.InferRequestedOutput(name, binary_data=binary) for name in names]
    result = client.infer(MODEL_NAME, [given], outputs=wanted)
    recon, headers = native(live_server, "/reconstruct", IMAGES)
    latents, _ = native(live_server, "/encode", IMAGES)
    np.testing.assert_allclose(result.as_numpy("reconstruction"), recon, atol=1e-6)
    np.testing.assert_allclose(result.as_numpy("latent"), latents, atol=1e-6)
    mse = np.array(headers["x-reconstruction-mse"].split(","), dtype=np.float32)
    np.testing.assert_allclose(result.as_numpy("mse"), mse, rtol=1e-5)
    percentile = np.array(headers["x-anomaly-percentile"].split(","), dtype=np.float32)
    np.testing.assert_allclose(result.as_numpy("percentile"), percentile, atol=0.01)
    assert result.as_numpy("anomaly").tolist() == [v == "true" for v in headers["x-anomaly"].split(",")]


@pytest.mark.integration
def test_tritonclient_defaults_latents_and_the_threshold(
    client: triton.InferenceServerClient, live_server: LiveServer
) -> None:
    given = triton.InferInput("images", [5, 28, 28], "UINT8")
    given.set_data_from_numpy(IMAGES)
    result = client.infer(MODEL_NAME, [given])  # no outputs named: all of them, as binary
    assert {o["name"] for o in result.get_response()["outputs"]} == {
        "latent",
        "reconstruction",
        "mse",
        "novelty",
        "percentile",
        "anomaly",
    }
    # random pixels are no digits: flagged at any threshold
    strict = client.infer(MODEL_NAME, [given], parameters={"anomaly_quantile": 0.999})
    assert strict.as_numpy("anomaly").all()
    # latents in: the reconstruction /decode gives
    latents = result.as_numpy("latent")
    coded = triton.InferInput("latents", list(latents.shape), "FP32")
    coded.set_data_from_numpy(latents, binary_data=True)
    decoded = client.infer(MODEL_NAME, [coded]).as_numpy("reconstruction")
    expected = httpx.post(
        f"{live_server.url}/decode?format=npy",
        content=npy(latents),
        headers={"content-type": "application/x-npy"},
        timeout=30,
    )
    np.testing.assert_allclose(decoded, np.load(io.BytesIO(expected.content)), atol=1e-6)


@pytest.mark.integration
@pytest.mark.parametrize(
    ("shape", "datatype", "array"),
    [
        ([5, 32, 32], "UINT8", np.zeros((5, 32, 32), np.uint8)),
        ([5, 784], "FP32", np.zeros((5, 784), np.float32)),
        ([5, 28, 28], "INT32", np.zeros((5, 28, 28), np.int32)),
        ([5, 28, 28], "FP32", np.full((5, 28, 28), 9.0, np.float32)),
    ],
    ids=["32x32", "flat", "int32", "out-of-range"],
)
def test_tritonclient_sees_protocol_errors_not_5xx(
    client: triton.InferenceServerClient, shape: list[int], datatype: str, array: np.ndarray
) -> None:
    given = triton.InferInput("images", shape, datatype)
    given.set_data_from_numpy(array, binary_data=True)
    with pytest.raises(InferenceServerException) as info:
        client.infer(MODEL_NAME, [given])
    assert info.value.status() == "400" and info.value.message()
    with pytest.raises(InferenceServerException) as info:
        client.infer("another-model", [given])
    assert info.value.status() == "404"


@pytest.mark.integration
def test_the_documented_tritonclient_snippet_runs(live_server: LiveServer, capsys: pytest.CaptureFixture[str]) -> None:
    """docs/oip.md's Python block, as written, against a live server."""
    text = (Path(__file__).resolve().parent.parent / "docs" / "oip.md").read_text()
    (snippet,) = [block for block in re.findall(r"```python\n(.*?)```", text, re.S) if "tritonclient.http" in block]
    address = live_server.url.removeprefix("http://")
    exec(compile(snippet.replace("localhost:8000", address), "docs/oip.md", "exec"), {})
    assert "(3, 1, 28, 28)" in capsys.readouterr().out


@pytest.mark.anyio
async def test_the_v2_routes_have_a_tag_of_their_own_in_openapi(api: httpx.AsyncClient) -> None:
    spec = (await api.get("/openapi.json")).json()
    v2 = {path: item for path, item in spec["paths"].items() if path.startswith("/v2")}
    assert "/v2/models/{name}/infer" in v2 and "/v2/health/ready" in v2 and "/v2" in v2
    for path, item in v2.items():
        for operation in item.values():
            assert operation["tags"] == ["open-inference-protocol"], path
    assert not any(
        op.get("tags") == ["open-inference-protocol"]
        for path, item in spec["paths"].items()
        if not path.startswith("/v2")
        for op in item.values()
    )


@pytest.mark.anyio
async def test_unknown_v2_paths_and_methods_get_protocol_errors(api: httpx.AsyncClient) -> None:
    for method, path, status in [
        ("GET", "/v2/nothing", 404),
        ("POST", "/v2/models/mnist-ae/explain", 404),
        ("GET", INFER, 405),
        ("POST", "/v2/health/live", 405),
    ]:
        response = await api.request(method, path)
        assert response.status_code == status, (method, path, response.text)
        assert isinstance(response.json()["error"], str), (method, path)
    assert (await api.get(INFER)).headers["allow"] == "POST"
