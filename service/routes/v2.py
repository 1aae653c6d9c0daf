"""The Open Inference Protocol (KServe v2) over REST: health, metadata and inference, for KServe,
Triton and Seldon tooling (``tritonclient.http``). Inference goes through the same micro-batcher
as the native endpoints, behind the same guard (``ServiceState.admit``) and scoring; the routes
raise the service's errors, which service/error_responses.py answers in the protocol's shape,
``{"error": "..."}``.

The model is ``mnist-ae``; its one version is the first 12 hex digits of the served checkpoint's
sha256, so a roll-out shows as a new version and ``/versions/<old>`` stops answering.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Request
from fastapi.routing import APIRoute
from starlette.responses import Response
from starlette.routing import Match

from service.access import check_api_key
from service.checkpoint import Checkpoint
from service.codecs.oip import HEADER_LENGTH, MODEL_NAME, read_request, render_response
from service.error_responses import OIP_PREFIX, error_response
from service.errors import NotFound, NotReady
from service.http_json import json_response
from service.inference import Op
from service.scoring import decide
from service.state import ServiceState

TAG = "open-inference-protocol"
# the one model this server serves; any other name is answered 404, as the protocol says
ModelName = Annotated[str, Path(description="the model's name", json_schema_extra={"enum": [MODEL_NAME]})]
router = APIRouter(prefix=OIP_PREFIX, tags=[TAG])


def _state(request: Request) -> ServiceState:
    state: ServiceState = request.app.state.service
    return state


def version_of(checkpoint: Checkpoint) -> str:
    return checkpoint.sha256[:12]


def _model(state: ServiceState, name: str, version: str | None) -> Checkpoint:
    """The checkpoint being served, if it is the one named; 404 otherwise."""
    checkpoint = state.checkpoint
    if name != MODEL_NAME or checkpoint is None:
        raise NotFound(f"unknown model '{name}'; this server serves '{MODEL_NAME}'")
    if version is not None and version != version_of(checkpoint):
        raise NotFound(f"unknown version '{version}' of '{name}'; serving version {version_of(checkpoint)}")
    return checkpoint


def _probe(state: ServiceState, what: str) -> None:
    """Readiness as probes see it: 503 while loading, and while draining."""
    if not state.routable:
        raise NotReady(f"{what} is {state.status}")


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
    _probe(_state(request), "the server")
    return json_response({"ready": True})


@router.get("", summary="Server metadata")
async def server_metadata(request: Request) -> Response:
    return json_response(
        {"name": "mnist-ae-service", "version": request.app.version, "extensions": ["binary_tensor_data"]}
    )


async def _model_metadata(request: Request, name: str, version: str | None) -> Response:
    state = _state(request)
    check_api_key(request.headers.get("authorization"), state.settings.api_key)
    checkpoint = _model(state, name, version)
    config = checkpoint.config
    latent = [-1, *config.latent_shape]
    outputs = [
        {"name": "latent", "datatype": "FP32", "shape": latent},
        {"name": "reconstruction", "datatype": "FP32", "shape": [-1, *config.image_shape]},
        {"name": "mse", "datatype": "FP32", "shape": [-1]},
    ]
    if config.novelty_channels:
        outputs.append({"name": "novelty", "datatype": "FP32", "shape": [-1]})
    if checkpoint.calibration is not None:
        outputs += [
            {"name": "percentile", "datatype": "FP32", "shape": [-1]},
            {"name": "anomaly", "datatype": "BOOL", "shape": [-1]},
        ]
    return json_response(
        {
            "name": MODEL_NAME,
            "versions": [version_of(checkpoint)],
            "platform": "pytorch",
            # images also as UINT8 (0..255), and as [-1,1,28,28]; latents instead of images give a reconstruction
            "inputs": [
                {"name": "images", "datatype": "FP32", "shape": [-1, config.image_size, config.image_size]},
                {"name": "latents", "datatype": "FP32", "shape": latent},
            ],
            "outputs": outputs,
        }
    )


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
    _model(state, name, version)
    _probe(state, "the model")
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
    checkpoint = _model(state, name, version)
    body = await request.body()  # within the request layer's size and time limits
    with batcher.arrival():
        config = batcher.predictor.config
        inference = read_request(
            body,
            request.headers.get(HEADER_LENGTH),
            image_size=config.image_size,
            latent_shape=config.latent_shape,
            max_items=state.settings.max_images_per_request,
            novelty=bool(config.novelty_channels),
            calibrated=batcher.predictor.calibration is not None,
        )
    if inference.kind == "latents":
        (images,) = await batcher.submit(Op.DECODE, inference.array)
        outputs = {"reconstruction": images}
    else:
        recon, mse, novelty, percentile, outlying, latents = await batcher.submit(Op.ANALYZE, inference.array)
        quantile = state.settings.anomaly_quantile if inference.quantile is None else inference.quantile
        scores = decide(mse, novelty, percentile, outlying, quantile, state.metrics)
        outputs = {"latent": latents, "reconstruction": recon, "mse": mse}
        if scores.novelty is not None:
            outputs["novelty"] = scores.novelty
        if scores.percentile is not None and scores.anomaly is not None:
            outputs |= {"percentile": scores.percentile, "anomaly": scores.anomaly}
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
