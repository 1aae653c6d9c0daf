"""The ASGI app. ``create_app(settings)`` builds one; nothing is built at import time.

    python -m service                                   # the usual way (service/__main__.py)
    uvicorn --factory service.main:create_app           # or any ASGI server, as a factory

The lifespan loads the checkpoint once (unless ``python -m service`` already did, to fail in one
line before the server starts), warms the model up before the server takes a connection, and
drains the batcher on shutdown.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import torch
from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi.telemetry import TelemetryConfig
from prometheus_client import start_http_server
from starlette.types import ASGIApp, Receive, Scope, Send

from service import signals, tracing
from service.batcher import MicroBatcher
from service.budget import ByteBudget, in_flight_capacity, memory_limit_bytes, request_bytes
from service.checkpoint import Checkpoint, CheckpointError, load_checkpoint
from service.codecs.oip import HEADER_LENGTH
from service.dataplane import version_of
from service.device import resolve_device
from service.error_responses import install_error_handlers
from service.inference import Predictor
from service.logs import configure_logging
from service.memory import drop_cuda_library_pages, keep_freed_blocks, resident_bytes
from service.metrics import Metrics
from service.openapi import add_inference_routes, describe_served_model
from service.request_layer import RequestLayer
from service.routes import admin, ops, ui, v2
from service.routes.inference import ROUTES
from service.settings import Settings, get_settings, unknown_settings
from service.state import ServiceState
from service.wire import ANOMALY_HEADER, MSE_HEADER, PERCENTILE_HEADER, QUANTILE_HEADER, REQUEST_ID_HEADER

log = logging.getLogger("service")

DRAIN_TIMEOUT_S = 20.0
# how many server processes share the machine's (or container's) memory: what uvicorn reads for
# its default --workers, and what ``python -m service --workers N`` sets for its workers
WORKERS_VARIABLE = "WEB_CONCURRENCY"


class StartupError(RuntimeError):
    """The service cannot start; the message is the one line an operator needs."""


def load_model(settings: Settings) -> Checkpoint:
    """Load and verify the configured checkpoint onto the configured device (raises StartupError)."""
    if settings.torch_threads:
        torch.set_num_threads(settings.torch_threads)
    try:
        return load_checkpoint(settings.checkpoint, device=resolve_device(settings.device), allow_seed_format=False)
    except (CheckpointError, ValueError) as exc:
        raise StartupError(f"cannot start: {exc}") from None


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    state: ServiceState = app.state.service
    settings = state.settings
    # each batch reuses the memory the previous one freed instead of faulting in fresh pages:
    # 1.12x images/s on 256-image requests (docs/decisions.md)
    keep_freed_blocks()
    # before anything is served, so that every request is traced; nothing of OpenTelemetry is
    # imported unless an OTLP endpoint is set (service/tracing.py)
    try:
        state.tracing = tracing.from_environment(os.environ, app.version)
    except tracing.TracingConfigError as exc:
        raise StartupError(f"cannot start: {exc}") from None
    if state.tracing is not None:
        log.info("tracing: OpenTelemetry spans exported over OTLP (%s)", state.tracing.protocol)
    checkpoint = state.checkpoint or load_model(settings)
    state.checkpoint = checkpoint
    device = checkpoint.device
    log.info(
        "loaded %s (sha256 %s) on %s",
        checkpoint.path,
        checkpoint.sha256[:12],
        device,
        extra={"recorded_metrics": checkpoint.metrics},
    )
    if checkpoint.calibration is None:
        log.warning(
            "%s has no anomaly calibration: /reconstruct answers MSE without percentile or anomaly; "
            "add it with: python -m training.calibrate %s",
            checkpoint.path,
            checkpoint.path,
        )
    predictor = Predictor(checkpoint.model, device, checkpoint.calibration)
    batcher = MicroBatcher(
        predictor,
        max_batch_images=settings.max_batch_images,
        max_wait_s=settings.max_wait_ms / 1000,
        max_queue_images=settings.max_queue_images,
        metrics=state.metrics,
        tracing=state.tracing,
    )
    batcher.start()
    state.batcher = batcher

    # before the server accepts a connection (it does once the lifespan has started): with
    # --workers, a worker that the supervisor starts or restarts takes its share of new
    # connections only once it can answer them, while the others serve
    seconds = await asyncio.to_thread(predictor.warmup, settings.warmup_batches, settings.max_batch_images)
    # everything allocated so far (torch, FastAPI, the model) lives as long as the process:
    # frozen, full collections no longer walk it (p99 105 ms without, docs/decisions.md)
    gc.collect()
    gc.freeze()
    if device.type == "cpu":  # a CUDA build of torch: its GPU code is ~140 MB of resident memory
        before = resident_bytes()
        if drop_cuda_library_pages():
            freed = (before - resident_bytes()) / 2**20
            log.info("serving from the CPU: CUDA library code paged out, %.0f MB less resident memory", freed)
    state.budget = memory_budget(settings)
    state.set_ready(True)
    log.info("ready: warm-up took %.3f s", seconds)

    loop = asyncio.get_running_loop()
    installed_signals = signals.install(loop, state)  # drain grace, SIGHUP roll-outs (service/signals.py)
    grpc_server = None
    if settings.grpc_port is not None:
        # imported only when asked for: grpc and protobuf are ~30 MB of memory nobody else needs
        from service.oip_grpc.server import GrpcServer

        server = GrpcServer(state, app.version)
        await server.start()
        state.on_drain.append(lambda: state.background(server.drain()))  # health NOT_SERVING from the drain on
        grpc_server = server
    metrics_server = None
    if settings.metrics_port is not None:
        metrics_server, _ = start_http_server(
            settings.metrics_port, addr=settings.metrics_host, registry=state.metrics.registry
        )
        log.info("metrics on http://%s:%d/metrics", settings.metrics_host, settings.metrics_port)
    try:
        yield
    finally:
        signals.remove(loop, installed_signals)
        if metrics_server is not None:
            metrics_server.shutdown()
        state.start_draining()
        state.set_ready(False)
        if grpc_server is not None:  # calls in flight finish; new ones are refused
            await grpc_server.stop(DRAIN_TIMEOUT_S)
        drained = await batcher.close(DRAIN_TIMEOUT_S)
        if state.tracing is not None:  # the spans not exported yet, off the event loop
            await asyncio.to_thread(state.tracing.shutdown)
        log.info("stopped (%s)", "all accepted requests answered" if drained else "drain timed out")


def memory_budget(settings: Settings) -> ByteBudget:
    """What requests in flight may hold: this process's share of the memory limit, less what the
    warm process holds already (service/budget.py)."""
    limit = memory_limit_bytes(settings.memory_limit_mb)
    processes = int(os.environ.get(WORKERS_VARIABLE, "1") or 1)
    resident = resident_bytes()
    budget = ByteBudget(in_flight_capacity(limit, processes, resident, request_bytes(settings.max_body_bytes)))
    log.info(
        "memory: limit %.0f MB over %d process(es), %.0f MB resident, %.0f MB for requests in flight",
        limit / 2**20,
        processes,
        resident / 2**20,
        budget.capacity / 2**20,
    )
    return budget


class ServiceApp(FastAPI):
    """A FastAPI app whose ASGI entry point is the request layer (service/request_layer.py): every
    request passes it first, the inference endpoints are answered there, and the rest goes on to
    FastAPI (CORS, when configured, wraps them all)."""

    def __init__(self, state: ServiceState, **kwargs: Any) -> None:
        # FastAPI's own OpenTelemetry spans off: the request layer traces every request, whichever
        # route answers it (service/tracing.py); FastAPI's would add a second span to its routes
        off: TelemetryConfig = {"tracing": False, "metrics": False, "logs": False, "operation_spans": False}
        super().__init__(lifespan=lifespan, telemetry=off, **kwargs)
        self.state.service = state
        install_error_handlers(self)
        entry: ASGIApp = RequestLayer(super().__call__, state=state, routes=ROUTES)
        if state.settings.cors_origins:
            entry = CORSMiddleware(
                entry,
                allow_origins=state.settings.cors_origins,
                allow_methods=["GET", "POST"],
                allow_headers=["Authorization", "Content-Type", "Accept", REQUEST_ID_HEADER],
                expose_headers=[
                    REQUEST_ID_HEADER,
                    MSE_HEADER,
                    PERCENTILE_HEADER,
                    ANOMALY_HEADER,
                    QUANTILE_HEADER,
                    HEADER_LENGTH,
                ],
            )
        self._entry = entry
        self._documented: str | None = None  # the sha256 of the checkpoint the cached OpenAPI document describes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self._entry(scope, receive, send)

    def openapi(self) -> dict[str, Any]:
        """FastAPI's document of its own routes, with the inference routes' (service/openapi.py),
        narrowed to the model being served: built again when a roll-out changes it."""
        checkpoint = self.state.service.checkpoint
        served = None if checkpoint is None else checkpoint.sha256
        if self.openapi_schema is not None and served == self._documented:
            return self.openapi_schema
        self.openapi_schema = None
        document = super().openapi()  # cached by FastAPI as self.openapi_schema: completed in place
        add_inference_routes(document, ROUTES.values())
        if checkpoint is not None:
            settings = self.state.service.settings
            latent_shape = checkpoint.config.latent_shape
            describe_served_model(document, latent_shape, settings.max_images_per_request, version_of(checkpoint))
        self._documented = served
        return document


def create_app(settings: Settings | None = None, *, checkpoint: Checkpoint | None = None) -> ServiceApp:
    """The app, for ``settings`` (default: from the environment); ``checkpoint``, when given, is
    served instead of loading the configured one again."""
    settings = settings or get_settings()
    configure_logging(settings.log_level, settings.log_format)
    for line in unknown_settings(os.environ):
        log.warning(line)
    app = ServiceApp(
        ServiceState(settings=settings, metrics=Metrics(), checkpoint=checkpoint),
        title="MNIST autoencoder service",
        version="0.1.0",
        summary="Encode 28x28 digits to 16x7x7 latent codes, decode them, and score reconstructions.",
        docs_url=None,  # served from local assets by service/routes/ui.py, so it works offline
        redoc_url=None,  # one page of API docs; ReDoc would load its script from a CDN
    )
    app.include_router(ops.router)
    app.include_router(admin.router)
    app.include_router(v2.router)
    ui.install(app, with_page=settings.ui)
    if settings.metrics_port is None:
        app.include_router(ops.metrics_router)
    return app
