"""OpenTelemetry traces, on when the standard variables say so: ``OTEL_EXPORTER_OTLP_ENDPOINT`` or
``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` set. The SDK reads the rest itself: ``OTEL_SERVICE_NAME``
(default here: mnist-ae-service), ``OTEL_TRACES_SAMPLER`` and its argument, the exporter's
headers, timeout and compression; ``OTEL_EXPORTER_OTLP_[TRACES_]PROTOCOL`` picks the exporter,
``http/protobuf`` (the default) or ``grpc``. Without either endpoint :func:`from_environment`
returns None, nothing of OpenTelemetry is imported, and each step's only cost is an ``is None``.

What a trace holds:
- each request: a SERVER span ("POST /reconstruct", "ModelInfer") that continues the caller's
  trace from a W3C ``traceparent`` (an HTTP header, or gRPC metadata), with the request id, the
  operation and the image count; and its steps as child spans: "decode", "queue wait", "encode";
- each forward pass: a span of its own, linked to the span of every request in its batch (one
  batch serves many traces: span links, not a parent), with the operation and the batch size;
- the logs: the trace id of the request being served (``trace_id`` in JSON logs).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from typing import Any

from service.logs import trace_id_var

log = logging.getLogger(__name__)

ENDPOINT_VARIABLES = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
PROTOCOLS = ("http/protobuf", "grpc")
DEFAULT_SERVICE_NAME = "mnist-ae-service"


class TracingConfigError(ValueError):
    """The tracing variables ask for something this service cannot do."""


def from_environment(environ: Mapping[str, str], service_version: str) -> Tracing | None:
    """Tracing as the environment configures it, or None when no OTLP endpoint is set."""
    if not any(environ.get(name) for name in ENDPOINT_VARIABLES):
        return None
    return Tracing(environ, service_version)


class QueuedRequest:
    """One request's part in a batch: its "queue wait" span, and its own span, which the forward
    pass links to."""

    __slots__ = ("request", "wait")

    def __init__(self, request: Any, wait: Any) -> None:
        self.request = request  # the request's span context
        self.wait = wait  # the "queue wait" span, ended when the batch takes the request


class Tracing:
    def __init__(self, environ: Mapping[str, str], service_version: str) -> None:
        from opentelemetry import propagate, trace
        from opentelemetry.context import Context
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor

        protocol = environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or environ.get("OTEL_EXPORTER_OTLP_PROTOCOL")
        protocol = protocol or PROTOCOLS[0]
        if protocol == "grpc":
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
        elif protocol == "http/protobuf":
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter  # type: ignore[assignment]
        else:
            raise TracingConfigError(
                f"OTEL_EXPORTER_OTLP_PROTOCOL={protocol!r}: this service exports traces over {' or '.join(PROTOCOLS)}"
            )
        attributes: dict[str, str] = {"service.version": service_version}
        if not environ.get("OTEL_SERVICE_NAME"):  # Resource.create gives what is passed precedence
            attributes["service.name"] = DEFAULT_SERVICE_NAME
        # a provider of our own, not the global one: several apps may live in one process (the tests)
        self.provider = TracerProvider(resource=Resource.create(attributes))  # the sampler from OTEL_TRACES_SAMPLER
        self.provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
        self.tracer = self.provider.get_tracer("service", service_version)
        self._extract = propagate.extract
        self._trace = trace
        self._no_parent = Context()
        self._link = trace.Link
        self.protocol = protocol

    @contextmanager
    def request(self, name: str, carrier: Mapping[str, str], attributes: dict[str, Any]) -> Iterator[Any]:
        """The SERVER span of one request, current while it is served; ``carrier``: its headers or
        metadata, with the caller's ``traceparent`` if any."""
        span = self.tracer.start_span(
            name, context=self._extract(carrier), kind=self._trace.SpanKind.SERVER, attributes=attributes
        )
        token = trace_id_var.set(format(span.get_span_context().trace_id, "032x"))
        try:
            with self._trace.use_span(span, end_on_exit=True):
                yield span
        finally:
            trace_id_var.reset(token)

    def answered(self, name: str, route: str, status: int, request_id: str) -> None:
        """The current request's span, named after its route, once it is answered."""
        span = self._trace.get_current_span()
        span.update_name(name)
        span.set_attributes(
            {"http.route": route, "http.response.status_code": status, "mnist_ae.request_id": request_id}
        )
        if status >= 500:
            span.set_status(self._trace.StatusCode.ERROR)

    def step(self, name: str) -> AbstractContextManager[Any]:
        """A child span of the current one, around one step of the request."""
        return self.tracer.start_as_current_span(name)

    def queued(self, op: str, images: int) -> QueuedRequest:
        """The current request goes into the queue: its span gets the op and the image count."""
        current = self._trace.get_current_span()
        current.set_attributes({"mnist_ae.op": op, "mnist_ae.images": images})
        return QueuedRequest(current.get_span_context(), self.tracer.start_span("queue wait"))

    def forward(self, op: str, batch_images: int, requests: list[QueuedRequest], start_ns: int, end_ns: int) -> None:
        """One forward pass, from ``start_ns`` to ``end_ns``: a span of its own, linked to every request in it."""
        links = [self._link(r.request) for r in requests if r.request.is_valid]
        span = self.tracer.start_span(
            "forward",
            context=self._no_parent,
            links=links,
            start_time=start_ns,
            attributes={"mnist_ae.op": op, "mnist_ae.batch_images": batch_images, "mnist_ae.requests": len(requests)},
        )
        span.end(end_time=end_ns)

    def shutdown(self) -> None:
        """Export what is left (the batch processor's queue) and stop."""
        self.provider.shutdown()
