"""The Open Inference Protocol (KServe v2) over REST: health, metadata and inference, for KServe,
Triton and Seldon tooling (``tritonclient.http``). Inference goes through the same micro-batcher
as the native endpoints; errors take the protocol's shape, ``{"error": "..."}``.

The model is ``mnist-ae``; its one version is the first 12 hex digits of the served checkpoint's
sha256, so a roll-out shows as a new version and ``/versions/<old>`` stops answering.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from fastapi import APIRouter, Request
from fastapi.routing import APIRoute
from starlette.requests import ClientDisconnect
from starlette.responses import Response
from starlette.routing import Match

from service.access import check_api_key
from service.batcher import MicroBatcher
from service.calibration import is_anomaly
from service.checkpoint import Checkpoint
from service.errors import APIError, InvalidInput, client_gone_response
from service.http_json import json_response
from service.inference import Op
from service.oip import HEADER_LENGTH, MODEL_NAME, Inference, OipError, read_request, render_response
from service.state import ServiceState

TAG = "open-inference-protocol"
router = APIRouter(prefix="/v2", tags=[TAG])


def _error(status: int, message: str) -> Response:
    return json_response({"error": message}, status)


def _state(request: Request) -> ServiceState:
    state: ServiceState = request.app.state.service
    return state


def version_of(checkpoint: Checkpoint) -> str:
    return checkpoint.sha256[:12]


def _model(state: ServiceState, name: str, version: str | None) -> Checkpoint:
    checkpoint = state.checkpoint
    if name != MODEL_NAME or checkpoint is None:
        raise OipError(404, f"unknown model '{name}'; this server serves '{MODEL_NAME}'")
    if version is not None and version != version_of(checkpoint):
        raise OipError(404, f"unknown version '{version}' of '{name}'; serving version {version_of(checkpoint)}")
    return checkpoint


_PROTOCOL_ERROR = {"content": {"application/json": {"schema": {
    "type": "object", "properties": {"error": {"type": "string"}}, "required": ["error"]}}}}  # fmt: skip


@router.get("/health/live", summary="Server liveness", responses={200: {"content": {"application/json": {}}}})
async def live() -> Response:
    return json_response({"live": True})


@router.get("/health/ready", summary="Server readiness: 200 once the model is loaded and warm, else 503",
            responses={503: {"description": "loading or draining", **_PROTOCOL_ERROR}})  # fmt: skip
async def ready(request: Request) -> Response:
    state = _state(request)
    if not state.ready or state.draining:
        return _error(503, f"the server is {state.status}")
    return json_response({"ready": True})


@router.get("", summary="Server metadata")
async def server_metadata(request: Request) -> Response:
    return json_response({"name": "mnist-ae-service", "version": request.app.version,
                          "extensions": ["binary_tensor_data"]})  # fmt: skip


async def _model_metadata(request: Request, name: str, version: str | None) -> Response:
    state = _state(request)
    try:
        check_api_key(request.headers.get("authorization"), state.settings.api_key)
        checkpoint = _model(state, name, version)
    except OipError as exc:
        return _error(exc.status, exc.message)
    except APIError as exc:
        return _error(exc.status_code, exc.message)
    config = checkpoint.config
    latent = [-1, *config.latent_shape]
    outputs = [{"name": "latent", "datatype": "FP32", "shape": latent},
               {"name": "reconstruction", "datatype": "FP32", "shape": [-1, *config.image_shape]},
               {"name": "mse", "datatype": "FP32", "shape": [-1]}]  # fmt: skip
    if checkpoint.calibration is not None:
        outputs += [{"name": "percentile", "datatype": "FP32", "shape": [-1]},
                    {"name": "anomaly", "datatype": "BOOL", "shape": [-1]}]  # fmt: skip
    return json_response({
        "name": MODEL_NAME,
        "versions": [version_of(checkpoint)],
        "platform": "pytorch",
        # images also as UINT8 (0..255), and as [-1,1,28,28]; latents instead of images give a reconstruction
        "inputs": [{"name": "images", "datatype": "FP32", "shape": [-1, config.image_size, config.image_size]},
                   {"name": "latents", "datatype": "FP32", "shape": latent}],
        "outputs": outputs,
    })  # fmt: skip


@router.get("/models/{name}", summary="Model metadata: its version, inputs and outputs",
            responses={404: _PROTOCOL_ERROR})  # fmt: skip
async def model_metadata(request: Request, name: str) -> Response:
    return await _model_metadata(request, name, None)


@router.get(
    "/models/{name}/versions/{version}", summary="Model metadata of one version", responses={404: _PROTOCOL_ERROR}
)
async def model_version_metadata(request: Request, name: str, version: str) -> Response:
    return await _model_metadata(request, name, version)


async def _model_ready(request: Request, name: str, version: str | None) -> Response:
    state = _state(request)
    try:
        _model(state, name, version)
    except OipError as exc:
        return _error(exc.status, exc.message)
    if not state.ready or state.draining:
        return _error(503, f"the model is {state.status}")
    return json_response({"name": name, "ready": True})


@router.get("/models/{name}/ready", summary="Model readiness", responses={404: _PROTOCOL_ERROR, 503: _PROTOCOL_ERROR})
async def model_ready(request: Request, name: str) -> Response:
    return await _model_ready(request, name, None)


@router.get("/models/{name}/versions/{version}/ready", summary="Model readiness of one version",
            responses={404: _PROTOCOL_ERROR, 503: _PROTOCOL_ERROR})  # fmt: skip
async def model_version_ready(request: Request, name: str, version: str) -> Response:
    return await _model_ready(request, name, version)


_INFER_DOCS: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "description": "An inference request: JSON, or JSON followed by the binary tensor data of the inputs that "
        "declare `binary_data_size` (then `Inference-Header-Content-Length` gives the JSON's length). "
        "One input: `images` (UINT8 or FP32, [N,28,28] or [N,1,28,28]) or `latents` (FP32, [N,16,7,7]). "
        "Outputs: `latent`, `reconstruction`, `mse`, `percentile`, `anomaly` (all by default); "
        "`parameters.anomaly_quantile` sets the anomaly threshold.",
        "content": {
            "application/json": {"schema": {"type": "object"}, "example": {
                "inputs": [{"name": "images", "datatype": "UINT8", "shape": [1, 28, 28], "data": [0] * 784}],
                "outputs": [{"name": "mse"}, {"name": "anomaly"}]}},
            "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
        },
    }
}  # fmt: skip
_INFER_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"description": "the outputs, as JSON data or (binary_data) raw bytes after the JSON",
          "content": {"application/json": {}, "application/octet-stream": {}}},
    400: _PROTOCOL_ERROR, 401: _PROTOCOL_ERROR, 404: _PROTOCOL_ERROR, 413: _PROTOCOL_ERROR, 503: _PROTOCOL_ERROR,
}  # fmt: skip


@router.post("/models/{name}/infer", summary="Inference", openapi_extra=_INFER_DOCS, responses=_INFER_RESPONSES)
async def infer(request: Request, name: str) -> Response:
    return await _infer(request, name, None)


@router.post("/models/{name}/versions/{version}/infer", summary="Inference on one version",
             openapi_extra=_INFER_DOCS, responses=_INFER_RESPONSES)  # fmt: skip
async def infer_version(request: Request, name: str, version: str) -> Response:
    return await _infer(request, name, version)


async def _infer(request: Request, name: str, version: str | None) -> Response:
    state = _state(request)
    try:
        check_api_key(request.headers.get("authorization"), state.settings.api_key)
        checkpoint = _model(state, name, version)
        serving = state.serving
        if not state.ready or serving is None:
            return _error(503, f"the model is {state.status}; retry shortly")
        with serving.batcher.arrival():
            body = await request.body()  # the request layer enforces the size and time limits
            inference = read_request(body, request.headers.get(HEADER_LENGTH), serving.settings, config=serving.config,
                                     calibrated=serving.batcher.predictor.calibration is not None)  # fmt: skip
        outputs = await _run(serving.batcher, inference, serving.settings.anomaly_quantile)
        body, json_length = render_response(inference, outputs, version_of(checkpoint))
    except OipError as exc:
        return _error(exc.status, exc.message)
    except InvalidInput as exc:  # a shape or range the model cannot take: the protocol's 400
        return _error(400, exc.message)
    except APIError as exc:
        return _error(exc.status_code, exc.message)
    except ClientDisconnect:
        return client_gone_response()
    if json_length is None:
        return Response(body, media_type="application/json")
    return Response(body, media_type="application/octet-stream", headers={HEADER_LENGTH: str(json_length)})


async def _run(batcher: MicroBatcher, inference: Inference, default_quantile: float) -> dict[str, np.ndarray]:
    """The batch's outputs by name; the scores are counted in the metrics as /reconstruct's are."""
    if inference.kind == "latents":
        (images,) = await batcher.submit(Op.DECODE, inference.array)
        return {"reconstruction": images}
    recon, mse, percentile, latents = await batcher.submit(Op.ANALYZE, inference.array)
    outputs = {"latent": latents, "reconstruction": recon, "mse": mse}
    anomaly = None
    if not np.isnan(percentile).any():  # a calibrated model
        anomaly = is_anomaly(percentile, default_quantile if inference.quantile is None else inference.quantile)
        outputs |= {"percentile": percentile, "anomaly": anomaly}
    batcher.metrics.observe_scores(mse, anomaly)
    return outputs


# last in the router: any other path under /v2 gets the protocol's error shape too (405 where the
# path exists for another method), not the native one
@router.api_route("/{rest:path}", methods=["GET", "POST", "PUT", "PATCH", "DELETE"], include_in_schema=False)
async def unknown(request: Request, rest: str) -> Response:
    for route in router.routes:
        if isinstance(route, APIRoute) and route.endpoint is not unknown:
            match, _ = route.matches(request.scope)
            if match is Match.PARTIAL:  # the path, with other methods
                allowed = ", ".join(sorted(route.methods or ()))
                return json_response({"error": f"{request.url.path} takes {allowed}"}, 405, {"allow": allowed})
    return _error(404, f"no Open Inference Protocol endpoint at {request.url.path}")
