"""OpenTelemetry traces (service/tracing.py): off and not even imported without the variables; on,
spans reach a real OTLP receiver started here (over HTTP, and over gRPC), in the caller's trace,
with the right parents, links and attributes, from REST and from gRPC."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from concurrent import futures
from functools import partial
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import grpc
import httpx
import numpy as np
import pytest
import tritonclient.grpc as triton
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

from service.codecs.oip import MODEL_NAME
from service.tracing import TracingConfigError, from_environment
from tests.harness import REPO, LiveServer, free_port, start_server, stop_server, wait_until

PNG = (REPO / "examples" / "seven.png").read_bytes()
CALLER_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CALLER_SPAN = "00f067aa0ba902b7"


class Receiver:
    """An OTLP trace receiver: every span it was sent, with its resource's attributes."""

    def __init__(self) -> None:
        self.spans: list[tuple[dict[str, Any], Any]] = []
        self.lock = threading.Lock()

    def take(self, request: trace_service_pb2.ExportTraceServiceRequest) -> None:
        with self.lock:
            for resource_spans in request.resource_spans:
                resource = {a.key: a.value.string_value for a in resource_spans.resource.attributes}
                for scope_spans in resource_spans.scope_spans:
                    self.spans.extend((resource, span) for span in scope_spans.spans)

    def named(self, name: str, trace_id: str | None = None) -> list[Any]:
        with self.lock:
            return [s for _, s in self.spans if s.name == name and (trace_id is None or s.trace_id.hex() == trace_id)]


@pytest.fixture
def http_receiver() -> Iterator[tuple[Receiver, str]]:
    receiver = Receiver()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["content-length"]))
            assert self.path == "/v1/traces" and self.headers["content-type"] == "application/x-protobuf"
            receiver.take(trace_service_pb2.ExportTraceServiceRequest.FromString(body))
            answer = trace_service_pb2.ExportTraceServiceResponse().SerializeToString()
            self.send_response(200)
            self.send_header("content-type", "application/x-protobuf")
            self.send_header("content-length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield receiver, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


@pytest.fixture
def grpc_receiver() -> Iterator[tuple[Receiver, str]]:
    receiver = Receiver()

    class TraceService(trace_service_pb2_grpc.TraceServiceServicer):
        def Export(self, request: Any, context: Any) -> Any:
            receiver.take(request)
            return trace_service_pb2.ExportTraceServiceResponse()

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(TraceService(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield receiver, f"http://127.0.0.1:{port}"
    server.stop(None)


# --- off --------------------------------------------------------------------------------------


def test_off_without_an_endpoint_and_nothing_imported() -> None:
    """Without OTEL_EXPORTER_OTLP_[TRACES_]ENDPOINT the app is built and started without OpenTelemetry's
    SDK or exporters (FastAPI itself imports the API package, a no-op without them)."""
    code = (
        "import sys, asyncio\n"
        "from service.main import create_app\n"
        "from service.tracing import from_environment\n"
        "assert from_environment({'OTEL_SERVICE_NAME': 'x'}, '1') is None\n"
        "app = create_app()\n"
        "async def main():\n"
        "    async with app.router.lifespan_context(app):\n"
        "        assert app.state.service.tracing is None\n"
        "asyncio.run(main())\n"
        "prefixes = ('opentelemetry.sdk', 'opentelemetry.exporter')\n"
        "loaded = sorted(m for m in sys.modules if m.startswith(prefixes))\n"
        "assert not loaded, loaded\n"
    )
    env = {k: v for k, v in __import__("os").environ.items() if not k.startswith("OTEL_")}
    subprocess.run([sys.executable, "-c", code], cwd=REPO, env={**env, "MNIST_AE_WARMUP_BATCHES": "0"}, check=True)


def test_an_unknown_protocol_is_refused() -> None:
    environ = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318", "OTEL_EXPORTER_OTLP_PROTOCOL": "http/json"}
    with pytest.raises(TracingConfigError, match="http/json"):
        from_environment(environ, "1")


def test_the_sampler_and_the_name_come_from_the_standard_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_TRACES_SAMPLER", "parentbased_traceidratio")
    monkeypatch.setenv("OTEL_TRACES_SAMPLER_ARG", "0.25")
    tracing = from_environment({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9"}, "1.2")
    assert tracing is not None
    try:
        assert "0.25" in tracing.provider.sampler.get_description()
        assert tracing.provider.resource.attributes["service.name"] == "mnist-ae-service"
        assert tracing.provider.resource.attributes["service.version"] == "1.2"
    finally:
        tracing.shutdown()


# --- on ---------------------------------------------------------------------------------------


def traced_server(tmp_path: Path, endpoint: str, protocol: str) -> tuple[LiveServer, str]:
    grpc_port = free_port()
    env = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint,
        "OTEL_EXPORTER_OTLP_PROTOCOL": protocol,
        "OTEL_SERVICE_NAME": "mnist-ae-under-test",
        "OTEL_BSP_SCHEDULE_DELAY": "50",  # ms: export at once, not every 5 s
        "MNIST_AE_GRPC_PORT": str(grpc_port),
        "MNIST_AE_ACCESS_LOG": "all",
        "MNIST_AE_WARMUP_BATCHES": "1",
    }
    return start_server(tmp_path / "server.log", env), f"127.0.0.1:{grpc_port}"


def check_request_trace(receiver: Receiver, server_name: str, trace_id: str, op: str, images: int) -> Any:
    """The request's SERVER span in ``trace_id`` with its three steps, and the forward pass linked to it."""
    wait_until(lambda: len(receiver.named(server_name, trace_id)) == 1, f"the {server_name} span", timeout_s=15)
    (server,) = receiver.named(server_name, trace_id)
    attributes = {a.key: a.value for a in server.attributes}
    assert server.kind == server.SPAN_KIND_SERVER
    assert attributes["mnist_ae.op"].string_value == op and attributes["mnist_ae.images"].int_value == images
    for step in ("decode", "queue wait", "encode"):
        wait_until(partial(lambda name: len(receiver.named(name, trace_id)) == 1, step), f"the {step} span")
        (child,) = receiver.named(step, trace_id)
        assert child.parent_span_id == server.span_id, step
    # the batch's forward pass: a trace of its own, linked to the request
    wait_until(
        lambda: any(link.span_id == server.span_id for f in receiver.named("forward") for link in f.links),
        "the forward span linked to the request",
    )
    (forward,) = [f for f in receiver.named("forward") if any(link.span_id == server.span_id for link in f.links)]
    assert forward.trace_id.hex() != trace_id and not forward.parent_span_id
    link = next(link for link in forward.links if link.span_id == server.span_id)
    assert link.trace_id.hex() == trace_id
    forward_attributes = {a.key: a.value for a in forward.attributes}
    assert forward_attributes["mnist_ae.op"].string_value == op
    assert forward_attributes["mnist_ae.batch_images"].int_value >= images
    return server


@pytest.mark.integration
@pytest.mark.parametrize("protocol", ["http/protobuf", "grpc"])
def test_spans_arrive_in_the_callers_trace(
    tmp_path: Path,
    protocol: str,
    http_receiver: tuple[Receiver, str],
    grpc_receiver: tuple[Receiver, str],
) -> None:
    receiver, endpoint = http_receiver if protocol == "http/protobuf" else grpc_receiver
    server, grpc_target = traced_server(tmp_path, endpoint, protocol)
    try:
        # REST, continuing the caller's trace from its traceparent header
        response = httpx.post(
            f"{server.url}/reconstruct",
            content=PNG,
            headers={"content-type": "image/png", "traceparent": f"00-{CALLER_TRACE}-{CALLER_SPAN}-01"},
        )
        assert response.status_code == 200
        span = check_request_trace(receiver, "POST /reconstruct", CALLER_TRACE, "reconstruct", 1)
        assert span.parent_span_id.hex() == CALLER_SPAN
        attributes = {a.key: a.value for a in span.attributes}
        assert attributes["mnist_ae.request_id"].string_value == response.headers["x-request-id"]
        assert attributes["http.route"].string_value == "/reconstruct"
        assert attributes["http.response.status_code"].int_value == 200
        resource = next(r for r, s in receiver.spans if s.span_id == span.span_id)
        assert resource["service.name"] == "mnist-ae-under-test"
        # gRPC, from the traceparent in the call's metadata
        grpc_trace, grpc_parent = "0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331"
        client = triton.InferenceServerClient(grpc_target)
        images = triton.InferInput("images", [2, 28, 28], "UINT8")
        images.set_data_from_numpy(np.zeros((2, 28, 28), np.uint8))
        client.infer(MODEL_NAME, [images], headers={"traceparent": f"00-{grpc_trace}-{grpc_parent}-01"})
        span = check_request_trace(receiver, "ModelInfer", grpc_trace, "analyze", 2)
        assert span.parent_span_id.hex() == grpc_parent
        attributes = {a.key: a.value for a in span.attributes}
        assert len(attributes["mnist_ae.request_id"].string_value) == 32, "a request id of its own"
        # the logs of a traced request carry its trace id
        lines = [json.loads(line) for line in server.log_path.read_text().splitlines() if line.startswith("{")]
        access = [line for line in lines if line.get("path") == "/reconstruct"]
        assert access and access[0]["trace_id"] == CALLER_TRACE
    finally:
        stop_server(server)
