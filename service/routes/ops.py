"""GET /healthz, /readyz, /model and /metrics: for probes, operators and Prometheus."""

from __future__ import annotations

import platform
from typing import Any

import fastapi
import numpy as np
import torch
from fastapi import APIRouter, Depends
from starlette.responses import Response

from service.access import require_api_key
from service.deps import CheckpointDep, StateDep
from service.error_responses import error_response
from service.schemas import ErrorResponse, HealthResponse, ModelInfo, ReadyResponse

router = APIRouter(tags=["operations"])


@router.get("/healthz", summary="Liveness: the process is up", response_model=HealthResponse)
async def healthz() -> HealthResponse:
    return HealthResponse()


@router.get(
    "/readyz",
    summary="Readiness: 200 once the model is loaded and warm; 503 before, and while draining",
    response_model=ReadyResponse,
    responses={503: {"model": ErrorResponse, "description": "loading or draining"}},
)
async def readyz(state: StateDep) -> ReadyResponse | Response:
    if not state.routable:
        return error_response(503, "not_ready", f"the service is {state.status}", {"retry-after": "1"})
    return ReadyResponse(ready=True, status="ready")


_UNAUTHORIZED: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorResponse, "description": "missing or wrong API key (when one is set)"}
}


@router.get(
    "/model",
    summary="What is being served: architecture, checkpoint, recorded metrics, device, versions",
    response_model=ModelInfo,
    dependencies=[Depends(require_api_key)],
    responses=_UNAUTHORIZED,
)
async def model_info(state: StateDep, checkpoint: CheckpointDep) -> ModelInfo:
    config = checkpoint.config
    settings = state.settings
    return ModelInfo(
        architecture=config.to_dict(),
        parameters=sum(p.numel() for p in checkpoint.model.parameters()),
        checkpoint=str(checkpoint.path),
        checkpoint_sha256=checkpoint.sha256,
        metrics=checkpoint.metrics,
        training={k: v for k, v in checkpoint.metadata.get("training", {}).items() if k != "history"},
        created_at=checkpoint.metadata.get("created_at"),
        device=str(checkpoint.device),
        input_shape=list(config.image_shape),
        latent_shape=list(config.latent_shape),
        calibration=(
            checkpoint.calibration.summary(settings.anomaly_quantile) if checkpoint.calibration is not None else None
        ),
        versions={
            "python": platform.python_version(),
            "torch": torch.__version__,
            "numpy": np.__version__,
            "fastapi": fastapi.__version__,
            "checkpoint_torch": str(checkpoint.metadata.get("torch_version", "unknown")),
        },
        batching={"max_batch_images": settings.max_batch_images, "max_wait_ms": settings.max_wait_ms},
    )


# mounted on the main port unless the metrics_port setting moves /metrics to a port of its own
metrics_router = APIRouter(tags=["operations"])


@metrics_router.get(
    "/metrics",
    summary="Prometheus metrics",
    response_class=Response,
    responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}}},
)
async def metrics(state: StateDep) -> Response:
    return Response(state.metrics.render(), media_type=state.metrics.content_type)
