"""The Open Inference Protocol over gRPC (service/oip_grpc/): the decoding and the error codes
in-process, and Triton's own client, ``tritonclient.grpc``, against a real uvicorn process with
the gRPC port on, its answers compared with REST's /v2."""

from __future__ import annotations

import filecmp
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import numpy as np
import pytest
import tritonclient.grpc as triton
import tritonclient.http as triton_http
from grpc_health.v1 import health_pb2, health_pb2_grpc
from tritonclient.utils import InferenceServerException

from service.codecs.oip import MODEL_NAME
from service.errors import (
    APIError,
    InferenceFailed,
    InvalidInput,
    MalformedBody,
    NotFound,
    NotReady,
    Overloaded,
    PayloadTooLarge,
    Unauthorized,
)
from service.oip_grpc import predict_v2_pb2 as pb
from service.oip_grpc.server import SERVICE, status_of
from tests.harness import REPO, LiveServer, free_port, start_server, stop_server, wait_until

KEY = "grpc-test-key"
AUTH = {"authorization": f"Bearer {KEY}"}
IMAGES = np.random.default_rng(5).integers(0, 256, (6, 28, 28), dtype=np.uint8)
PROTOS = REPO / "service" / "oip_grpc"


# --- in-process --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (InvalidInput("shape"), grpc.StatusCode.INVALID_ARGUMENT),
        (MalformedBody("json"), grpc.StatusCode.INVALID_ARGUMENT),
        (NotFound("model"), grpc.StatusCode.NOT_FOUND),
        (NotReady("loading"), grpc.StatusCode.UNAVAILABLE),
        (Overloaded("queue"), grpc.StatusCode.RESOURCE_EXHAUSTED),
        (PayloadTooLarge("big"), grpc.StatusCode.RESOURCE_EXHAUSTED),
        (Unauthorized("key"), grpc.StatusCode.UNAUTHENTICATED),
        (InferenceFailed("boom"), grpc.StatusCode.INTERNAL),
        (APIError("anything else"), grpc.StatusCode.INVALID_ARGUMENT),
    ],
    ids=lambda v: type(v).__name__ if isinstance(v, Exception) else v.name,
)
def test_each_error_has_its_status_code(error: APIError, code: grpc.StatusCode) -> None:
    assert status_of(error) is code


def test_the_checked_in_messages_are_what_the_proto_generates(tmp_path: Path) -> None:
    """`make protos` was run after the last change to the .proto (grpcio-tools, a dev dependency)."""
    command = ["-m", "grpc_tools.protoc", f"-I{PROTOS}", f"--python_out={tmp_path}", f"--pyi_out={tmp_path}"]
    subprocess.run([sys.executable, *command, str(PROTOS / "predict_v2.proto")], check=True)
    for name in ("predict_v2_pb2.py", "predict_v2_pb2.pyi"):
        assert filecmp.cmp(tmp_path / name, PROTOS / name, shallow=False), f"{name} is stale: run make protos"


def test_messages_match_the_protocol_on_the_wire() -> None:
    """Triton's own copy of the protocol reads what ours writes, field for field."""
    from tritonclient.grpc import service_pb2 as theirs

    ours = pb.ModelInferRequest(model_name=MODEL_NAME, id="x", raw_input_contents=[b"\x01\x02"])
    tensor = ours.inputs.add(name="images", datatype="UINT8", shape=[1, 2])
    tensor.contents.uint_contents.extend([1, 2])
    ours.parameters["anomaly_quantile"].string_param = "0.9"
    decoded = theirs.ModelInferRequest.FromString(ours.SerializeToString())
    assert decoded.model_name == MODEL_NAME and decoded.id == "x"
    assert list(decoded.inputs[0].shape) == [1, 2] and list(decoded.inputs[0].contents.uint_contents) == [1, 2]
    assert decoded.parameters["anomaly_quantile"].string_param == "0.9"
    assert decoded.raw_input_contents[0] == b"\x01\x02"


# --- a real server -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def grpc_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LiveServer, str]]:
    port = free_port()
    env = {
        "MNIST_AE_GRPC_PORT": str(port),
        "MNIST_AE_API_KEY": KEY,
        "MNIST_AE_MAX_BODY_BYTES": str(2_000_000),  # ~2,500 UINT8 images: over it, RESOURCE_EXHAUSTED
        "MNIST_AE_WARMUP_BATCHES": "1",
    }
    server = start_server(tmp_path_factory.mktemp("grpc") / "server.log", env)
    yield server, f"127.0.0.1:{port}"
    stop_server(server)


@pytest.fixture(scope="module")
def client(grpc_server: tuple[LiveServer, str]) -> triton.InferenceServerClient:
    return triton.InferenceServerClient(grpc_server[1])


def images_input(images: np.ndarray, datatype: str = "UINT8") -> triton.InferInput:
    tensor = triton.InferInput("images", list(images.shape), datatype)
    tensor.set_data_from_numpy(images)
    return tensor


def rest_outputs(server: LiveServer, name: str, array: np.ndarray, datatype: str) -> triton_http.InferResult:
    rest = triton_http.InferenceServerClient(server.url.removeprefix("http://"))
    tensor = triton_http.InferInput(name, list(array.shape), datatype)
    tensor.set_data_from_numpy(array)
    return rest.infer(MODEL_NAME, [tensor], headers=dict(AUTH))  # it adds its own headers to the dict


def method(channel: grpc.Channel, name: str, request: type[Any], response: type[Any]) -> Any:
    """One call of the protocol, by our own messages, as a plain gRPC client makes it."""
    return channel.unary_unary(
        f"/{SERVICE}/{name}", request_serializer=request.SerializeToString, response_deserializer=response.FromString
    )


def health_status(target: str, service: str = "") -> int:
    """What the standard health service (grpc.health.v1, Kubernetes' gRPC probe) answers."""
    with grpc.insecure_channel(target) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        answer = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)  # type: ignore[attr-defined]  # the stubs leave Check out
        return int(answer.status)


def grpc_code(call: object) -> str:
    with pytest.raises(InferenceServerException) as raised:
        call()  # type: ignore[operator]
    status = raised.value.status()
    assert status is not None
    return status.removeprefix("StatusCode.")


@pytest.mark.integration
def test_health_and_metadata(client: triton.InferenceServerClient, grpc_server: tuple[LiveServer, str]) -> None:
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready(MODEL_NAME)
    assert grpc_code(lambda: client.is_model_ready(MODEL_NAME, "000000000000")) == "NOT_FOUND"
    server = client.get_server_metadata(as_json=True)
    assert server["name"] == "mnist-ae-service" and "binary_tensor_data" in server["extensions"]
    meta = client.get_model_metadata(MODEL_NAME, headers=AUTH, as_json=True)
    rest = httpx.get(f"{grpc_server[0].url}/v2/models/{MODEL_NAME}", headers=AUTH).json()
    assert meta["versions"] == rest["versions"] and meta["platform"] == "pytorch"
    for ours, theirs in zip(meta["outputs"], rest["outputs"], strict=True):
        assert ours["name"] == theirs["name"] and [int(d) for d in ours["shape"]] == theirs["shape"]
    # the standard health service, for Kubernetes' gRPC probes
    for service in ("", SERVICE):
        assert health_status(grpc_server[1], service) == health_pb2.HealthCheckResponse.SERVING


@pytest.mark.integration
@pytest.mark.parametrize("datatype", ["UINT8", "FP32"])
def test_images_answer_what_rest_answers(
    client: triton.InferenceServerClient, grpc_server: tuple[LiveServer, str], datatype: str
) -> None:
    images = IMAGES if datatype == "UINT8" else IMAGES.astype(np.float32) / 255
    result = client.infer(MODEL_NAME, [images_input(images, datatype)], headers=AUTH, request_id="g1")
    rest = rest_outputs(grpc_server[0], "images", images, datatype)
    assert result.get_response().id == "g1"
    for name in ("latent", "reconstruction", "mse", "novelty", "percentile"):
        np.testing.assert_allclose(result.as_numpy(name), rest.as_numpy(name), atol=1e-6, rtol=0)
    assert result.as_numpy("reconstruction").shape == (6, 1, 28, 28)
    np.testing.assert_array_equal(result.as_numpy("anomaly"), rest.as_numpy("anomaly"))


@pytest.mark.integration
def test_each_call_has_a_request_id(grpc_server: tuple[LiveServer, str]) -> None:
    """The caller's x-request-id when it sends one, a new one otherwise, in the trailing metadata."""
    with grpc.insecure_channel(grpc_server[1]) as channel:
        live = method(channel, "ServerLive", pb.ServerLiveRequest, pb.ServerLiveResponse)
        _, call = live.with_call(pb.ServerLiveRequest(), metadata=(("x-request-id", "caller-7"),), timeout=5)
        assert ("x-request-id", "caller-7") in call.trailing_metadata()
        _, call = live.with_call(pb.ServerLiveRequest(), timeout=5)
        (given,) = [value for key, value in call.trailing_metadata() if key == "x-request-id"]
        assert re.fullmatch(r"[0-9a-f]{32}", str(given))


@pytest.mark.integration
def test_latents_decode_as_rest_does(client: triton.InferenceServerClient, grpc_server: tuple[LiveServer, str]) -> None:
    latents = client.infer(
        MODEL_NAME, [images_input(IMAGES)], headers=AUTH, outputs=[triton.InferRequestedOutput("latent")]
    ).as_numpy("latent")
    tensor = triton.InferInput("latents", list(latents.shape), "FP32")
    tensor.set_data_from_numpy(latents)
    result = client.infer(MODEL_NAME, [tensor], headers=AUTH)
    rest = rest_outputs(grpc_server[0], "latents", latents, "FP32")
    assert [o.name for o in result.get_response().outputs] == ["reconstruction"]
    np.testing.assert_allclose(result.as_numpy("reconstruction"), rest.as_numpy("reconstruction"), atol=1e-6, rtol=0)


@pytest.mark.integration
def test_typed_contents_answer_as_raw_ones(grpc_server: tuple[LiveServer, str]) -> None:
    """``contents`` (uint_contents, fp32_contents) instead of ``raw_input_contents``; answers are raw."""
    with grpc.insecure_channel(grpc_server[1]) as channel:
        infer = method(channel, "ModelInfer", pb.ModelInferRequest, pb.ModelInferResponse)
        mse = []
        for datatype in ("UINT8", "FP32"):
            request = pb.ModelInferRequest(model_name=MODEL_NAME)
            request.outputs.add(name="mse")
            tensor = request.inputs.add(name="images", datatype=datatype, shape=IMAGES.shape)
            if datatype == "UINT8":
                tensor.contents.uint_contents.extend(IMAGES.reshape(-1).tolist())
            else:
                tensor.contents.fp32_contents.extend((IMAGES.reshape(-1) / 255).tolist())
            answer = infer(request, metadata=tuple(AUTH.items()), timeout=30)
            assert [o.name for o in answer.outputs] == ["mse"] and not answer.outputs[0].HasField("contents")
            mse.append(np.frombuffer(answer.raw_output_contents[0], dtype="<f4"))
        np.testing.assert_allclose(mse[0], mse[1], atol=1e-7, rtol=0)


@pytest.mark.integration
def test_refusals_have_the_protocols_codes(client: triton.InferenceServerClient) -> None:
    image = images_input(IMAGES[:1])
    assert grpc_code(lambda: client.infer(MODEL_NAME, [image])) == "UNAUTHENTICATED"
    assert grpc_code(lambda: client.infer(MODEL_NAME, [image], headers={"authorization": "Bearer no"})) == (
        "UNAUTHENTICATED"
    )
    assert grpc_code(lambda: client.get_model_metadata(MODEL_NAME)) == "UNAUTHENTICATED"
    assert grpc_code(lambda: client.infer("other", [image], headers=AUTH)) == "NOT_FOUND"
    assert grpc_code(lambda: client.infer(MODEL_NAME, [image], model_version="0", headers=AUTH)) == "NOT_FOUND"
    small = images_input(np.zeros((1, 5, 5), np.uint8))
    assert grpc_code(lambda: client.infer(MODEL_NAME, [small], headers=AUTH)) == "INVALID_ARGUMENT"
    bright = images_input(np.full((1, 28, 28), 2.0, np.float32), "FP32")
    assert grpc_code(lambda: client.infer(MODEL_NAME, [bright], headers=AUTH)) == "INVALID_ARGUMENT"
    wrong_type = triton.InferInput("images", [1, 28, 28], "INT32")
    wrong_type.set_data_from_numpy(np.zeros((1, 28, 28), np.int32))
    assert grpc_code(lambda: client.infer(MODEL_NAME, [wrong_type], headers=AUTH)) == "INVALID_ARGUMENT"
    no_head = [triton.InferRequestedOutput("nothing")]
    assert grpc_code(lambda: client.infer(MODEL_NAME, [image], outputs=no_head, headers=AUTH)) == "INVALID_ARGUMENT"
    # over the per-request limit of images, and over the message size (the REST body limit)
    many = images_input(np.zeros((1025, 28, 28), np.uint8))
    assert grpc_code(lambda: client.infer(MODEL_NAME, [many], headers=AUTH)) == "RESOURCE_EXHAUSTED"
    huge = images_input(np.zeros((2600, 28, 28), np.uint8))
    assert grpc_code(lambda: client.infer(MODEL_NAME, [huge], headers=AUTH)) == "RESOURCE_EXHAUSTED"
    # and the server is fine after all of them
    assert client.infer(MODEL_NAME, [image], headers=AUTH).as_numpy("mse").shape == (1,)


@pytest.mark.integration
def test_the_documented_snippet_runs(
    grpc_server: tuple[LiveServer, str], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """docs/oip.md's gRPC block, as written, with the key from the environment as it reads it."""
    text = (REPO / "docs" / "oip.md").read_text()
    (snippet,) = [block for block in re.findall(r"```python\n(.*?)```", text, re.S) if "tritonclient.grpc" in block]
    monkeypatch.setenv("MNIST_AE_API_KEY", KEY)
    monkeypatch.chdir(REPO)
    exec(compile(snippet.replace("localhost:8001", grpc_server[1]), "docs/oip.md", "exec"), {})
    assert "(3, 1, 28, 28)" in capsys.readouterr().out


@pytest.mark.integration
def test_the_drain_finishes_calls_in_flight_and_refuses_new_ones(tmp_path: Path) -> None:
    port = free_port()
    env = {"MNIST_AE_GRPC_PORT": str(port), "MNIST_AE_DRAIN_GRACE_S": "5", "MNIST_AE_WARMUP_BATCHES": "1"}
    server = start_server(tmp_path / "server.log", env)
    client = triton.InferenceServerClient(f"127.0.0.1:{port}")
    try:
        results: list[object] = []
        batch = images_input(np.random.default_rng(0).integers(0, 256, (1000, 28, 28), dtype=np.uint8))
        for _ in range(6):
            client.async_infer(MODEL_NAME, [batch], callback=lambda result, error: results.append(error or result))

        def in_flight() -> float:
            text = httpx.get(f"{server.url}/metrics").text
            return float(re.search(r"^mnist_ae_http_requests_in_flight (\S+)", text, re.M).group(1))  # type: ignore[union-attr]

        wait_until(lambda: in_flight() >= 1 + 6, "the six calls to be in flight")  # the /metrics request is one
        server.process.send_signal(signal.SIGTERM)
        wait_until(lambda: "SIGTERM" in server.log_path.read_text(), "the drain to begin")
        assert grpc_code(lambda: client.infer(MODEL_NAME, [images_input(IMAGES[:1])])) == "UNAVAILABLE"
        assert not client.is_server_ready()
        assert health_status(f"127.0.0.1:{port}") == health_pb2.HealthCheckResponse.NOT_SERVING
        wait_until(lambda: len(results) == 6, "the calls in flight to finish", timeout_s=30)
        assert all(isinstance(r, triton.InferResult) for r in results), results
        assert all(r.as_numpy("mse").shape == (1000,) for r in results)  # type: ignore[attr-defined]
        assert server.process.wait(30) == -signal.SIGTERM  # uvicorn exits by the signal it handled
        assert "stopped (all accepted requests answered)" in server.log_path.read_text()
    finally:
        client.close()
        if server.process.poll() is None:
            server.process.kill()
