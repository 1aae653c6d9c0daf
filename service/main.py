"""The ASGI app: ``service.main:app``. ``create_app(settings)`` builds one; the lifespan loads the
checkpoint once, warms the model up in the background, and drains the batcher on shutdown."""

from __future__ import annotations

import asyncio
import gc
import logging
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import torch
from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from prometheus_client import start_http_server

from service.batcher import MicroBatcher
from service.checkpoint import CheckpointError, load_checkpoint
from service.device import resolve_device
from service.errors import install_error_handlers
from service.hot_path import InferenceHotPath
from service.inference import Predictor
from service.logs import configure_logging
from service.memory import drop_cuda_library_pages, keep_freed_blocks, limit_malloc_arenas, release_free_memory
from service.metrics import Metrics
from service.middleware import RequestContextMiddleware
from service.routes import inference, noop, ops
from service.settings import Settings, get_settings, unknown_settings
from service.state import ServiceState, Serving

log = logging.getLogger("service")

DRAIN_TIMEOUT_S = 20.0
MALLOC_ARENAS = 2  # the event loop's and the inference thread's


class StartupError(RuntimeError):
    """The service cannot start; the message is the one line an operator needs."""


def load_model(state: ServiceState) -> Predictor:
    """Load and verify the checkpoint onto the configured device (raises StartupError)."""
    settings = state.settings
    if settings.torch_threads:
        torch.set_num_threads(settings.torch_threads)
    try:
        state.device = resolve_device(settings.device)
        state.checkpoint = load_checkpoint(settings.checkpoint, device=state.device, allow_seed_format=False)
    except (CheckpointError, ValueError) as exc:
        raise StartupError(f"cannot start: {exc}") from None
    log.info(
        "loaded %s (sha256 %s) on %s", state.checkpoint.path, state.checkpoint.sha256[:12], state.device,
        extra={"recorded_metrics": state.checkpoint.metrics},
    )  # fmt: skip
    return Predictor(
        state.checkpoint.model, state.device, graph_mode=settings.graph_mode, fold_upsampling=settings.fold_upsampling
    )


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    state: ServiceState = app.state.service
    settings = state.settings
    limit_malloc_arenas(MALLOC_ARENAS)  # before the inference and warm-up threads exist
    if settings.keep_freed_blocks:
        keep_freed_blocks()  # no fresh pages, and their page faults, for every batch
    predictor = load_model(state)
    batcher = MicroBatcher(
        predictor, max_batch_images=settings.max_batch_images, max_wait_s=settings.max_wait_ms / 1000,
        max_queue_images=settings.max_queue_images, metrics=state.metrics,
    )  # fmt: skip
    batcher.start()
    state.serving = Serving(batcher=batcher, settings=settings, config=predictor.config)

    async def warm_up() -> None:
        seconds = await asyncio.to_thread(predictor.warmup, settings.warmup_batches, settings.max_batch_images)
        if settings.gc_freeze:
            # everything allocated so far (torch, FastAPI, the model) lives as long as the process:
            # freezing it keeps full collections from walking it again, pauses of ~100 ms under load
            gc.collect()
            gc.freeze()
        release_free_memory()  # what loading and the warm-up batches left behind
        if settings.drop_cuda_code and state.device is not None and state.device.type != "cuda":
            dropped = drop_cuda_library_pages()
            if dropped:
                log.info("serving from the CPU: %.0f MB of CUDA library code paged out", dropped / 2**20)
        state.set_ready(True)
        log.info("ready: warm-up took %.3f s", seconds)

    warming = asyncio.create_task(warm_up(), name="warm-up")
    metrics_server = None
    if settings.metrics_port is not None:
        metrics_server, _ = start_http_server(
            settings.metrics_port, addr=settings.metrics_host, registry=state.metrics.registry
        )
        log.info("metrics on http://%s:%d/metrics", settings.metrics_host, settings.metrics_port)
    try:
        yield
    finally:
        if metrics_server is not None:
            metrics_server.shutdown()
        state.draining = True
        state.set_ready(False)
        warming.cancel()
        drained = await batcher.close(DRAIN_TIMEOUT_S)
        log.info("stopped (%s)", "all accepted requests answered" if drained else "drain timed out")


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    configure_logging(settings.log_level, settings.log_format)
    for line in unknown_settings(os.environ):
        log.warning(line)
    app = FastAPI(
        title="MNIST autoencoder service",
        version="0.1.0",
        summary="Encode 28x28 digits to 16x7x7 latent codes, decode them, and score reconstructions.",
        lifespan=lifespan,
    )
    metrics = Metrics()
    app.state.service = ServiceState(settings=settings, metrics=metrics)
    install_error_handlers(app)
    if settings.hot_path:  # added first, so innermost: inside the request-id, body-limit, metrics and CORS layers
        hot_routes = [*inference.router.routes, *(noop.router.routes if settings.enable_noop_route else ())]
        app.add_middleware(InferenceHotPath, routes=hot_routes, state=app.state.service)
    app.add_middleware(
        RequestContextMiddleware, metrics=metrics, max_body_bytes=settings.max_body_bytes,
        body_timeout_s=settings.body_timeout_s,
    )  # fmt: skip
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware, allow_origins=settings.cors_origins, allow_methods=["GET", "POST"],
            allow_headers=["Authorization", "Content-Type", "Accept", "X-Request-ID"],
            expose_headers=["X-Request-ID", "X-Reconstruction-MSE"],
        )  # fmt: skip
    app.include_router(inference.router)
    app.include_router(ops.router)
    if settings.metrics_port is None:
        app.include_router(ops.metrics_router)
    if settings.enable_noop_route:
        app.include_router(noop.router)
    return app


app = create_app()
