"""The Open Inference Protocol (KServe v2) over REST: health, metadata and inference, for KServe,
Triton and Seldon tooling (``tritonclient.http``). Each route decodes, calls the dataplane that
the gRPC front door shares (service/dataplane.py: the same guard, ``ServiceState.admit``, the same
micro-batcher and scoring as the native endpoints), and encodes; the routes raise the service's
errors, which service/error_responses.py answers in the protocol's shape, ``{"error": "..."}``.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Request
from fastapi.routing import APIRoute
from starlette.responses import Response
from starlette.routing import Match

from service import dataplane
from service.access import check_api_key
from service.codecs.oip import HEADER_LENGTH, MODEL_NAME, read_request, render_response
from service.dataplane import version_of
from service.error_responses import OIP_PREFIX, error_response
from service.errors import NotFound
from service.http_json import json_response
from service.state import ServiceState

TAG = "open-inference-protocol"
# the one model this server serves; any other name is answered 404, as the protocol says
ModelName = Annotated[str, Path(description="the model's name", json_schema_extra={"enum": [MODEL_NAME]})]
router = APIRouter(prefix=OIP_PREFIX, tags=[TAG])


def _state(request: Request) -> ServiceState:
    state: ServiceState = request.app.state.service
    return state


_PROTOCOL_ERROR = {
    "content": {
        "application/json": {
            "schema": {"type": "object", "properties": {"error": {"type": "string"}}, "required": ["error"]}
        }
    }
}


@router.get("/health/live", summary="Server liveness", responses={200: {"content": {"application/json": {}}}})
async def live() -> Response:
    return json_response({"live": True})


@router.get(
    "/health/ready",
    summary="Server readiness: 200 once the model is loaded and warm, else 503",
    responses={503: {"description": "loading or draining", **_PROTOCOL_ERROR}},
)
async def ready(request: Request) -> Response:
    dataplane.probe(_state(request), "the server")
    return json_response({"ready": True})


@router.get("", summary="Server metadata")
async def server_metadata(request: Request) -> Response:
    extensions = list(dataplane.EXTENSIONS)
    return json_response({"name": dataplane.SERVER_NAME, "version": request.app.version, "extensions": extensions})


async def _model_metadata(request: Request, name: str, version: str | None) -> Response:
    state = _state(request)
    check_api_key(request.headers.get("authorization"), state.settings.api_key)
    return json_response(dataplane.model_metadata(dataplane.served_model(state, name, version)))


@router.get(
    "/models/{name}", summary="Model metadata: its version, inputs and outputs", responses={404: _PROTOCOL_ERROR}
)
async def model_metadata(request: Request, name: ModelName) -> Response:
    return await _model_metadata(request, name, None)


@router.get(
    "/models/{name}/versions/{version}", summary="Model metadata of one version", responses={404: _PROTOCOL_ERROR}
)
async def model_version_metadata(request: Request, name: ModelName, version: str) -> Response:
    return await _model_metadata(request, name, version)


async def _model_ready(request: Request, name: str, version: str | None) -> Response:
    state = _state(request)
    dataplane.served_model(state, name, version)
    dataplane.probe(state, "the model")
    return json_response({"name": name, "ready": True})


@router.get("/models/{name}/ready", summary="Model readiness", responses={404: _PROTOCOL_ERROR, 503: _PROTOCOL_ERROR})
async def model_ready(request: Request, name: ModelName) -> Response:
    return await _model_ready(request, name, None)


@router.get(
    "/models/{name}/versions/{version}/ready",
    summary="Model readiness of one version",
    responses={404: _PROTOCOL_ERROR, 503: _PROTOCOL_ERROR},
)
async def model_version_ready(request: Request, name: ModelName, version: str) -> Response:
    return await _model_ready(request, name, version)


_INFER_DOCS: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "description": "An inference request: JSON, or JSON followed by the binary tensor data of the inputs that "
        "declare `binary_data_size` (then `Inference-Header-Content-Length` gives the JSON's length). "
        "One input: `images` (UINT8 or FP32, [N,28,28] or [N,1,28,28]) or `latents` (FP32, [N,16,7,7]). "
        "Outputs: `latent`, `reconstruction`, `mse`, `novelty` (with a novelty head), `percentile` and `anomaly` "
        "(when calibrated); all by default. "
        "`parameters.anomaly_quantile` sets the anomaly threshold.",
        "content": {
            "application/json": {
                "schema": {"type": "object"},
                "example": {
                    "inputs": [{"name": "images", "datatype": "UINT8", "shape": [1, 28, 28], "data": [0] * 784}],
                    "outputs": [{"name": "mse"}, {"name": "anomaly"}],
                },
            },
            "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
        },
    }
}
_INFER_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "the outputs, as JSON data or (binary_data) raw bytes after the JSON",
        "content": {"application/json": {}, "application/octet-stream": {}},
    },
    400: _PROTOCOL_ERROR,
    401: _PROTOCOL_ERROR,
    404: _PROTOCOL_ERROR,
    413: _PROTOCOL_ERROR,
    503: _PROTOCOL_ERROR,
}


@router.post("/models/{name}/infer", summary="Inference", openapi_extra=_INFER_DOCS, responses=_INFER_RESPONSES)
async def infer(request: Request, name: ModelName) -> Response:
    return await _infer(request, name, None)


@router.post(
    "/models/{name}/versions/{version}/infer",
    summary="Inference on one version",
    openapi_extra=_INFER_DOCS,
    responses=_INFER_RESPONSES,
)
async def infer_version(request: Request, name: ModelName, version: str) -> Response:
    return await _infer(request, name, version)


async def _infer(request: Request, name: str, version: str | None) -> Response:
    """Decode the protocol's request, run it on the micro-batcher, encode the protocol's response."""
    state = _state(request)
    batcher = state.admit(request.headers.get("authorization"))
    checkpoint = dataplane.served_model(state, name, version)
    body = await request.body()  # within the request layer's size and time limits
    with state.traced("decode"), batcher.arrival():
        inference = read_request(body, request.headers.get(HEADER_LENGTH), dataplane.model_limits(state))
    outputs = await dataplane.infer(state, inference)
    with state.traced("encode"):
        body, json_length = render_response(inference, outputs, version_of(checkpoint))
    if json_length is None:
        return Response(body, media_type="application/json")
    return Response(body, media_type="application/octet-stream", headers={HEADER_LENGTH: str(json_length)})


# last in the router: any other path under /v2 gets the protocol's error shape too (405 where the
# path exists for another method), not the native one
@router.api_route("/{rest:path}", methods=["GET", "POST", "PUT", "PATCH", "DELETE"], include_in_schema=False)
async def unknown(request: Request, rest: str) -> Response:
    for route in router.routes:
        if isinstance(route, APIRoute) and route.endpoint is not unknown:
            match, _ = route.matches(request.scope)
            if match is Match.PARTIAL:  # the path, with other methods
                allowed = ", ".join(sorted(route.methods or ()))
                message = f"{request.url.path} takes {allowed}"
                return error_response(405, "method_not_allowed", message, {"allow": allowed}, oip=True)
    raise NotFound(f"no Open Inference Protocol endpoint at {request.url.path}")
