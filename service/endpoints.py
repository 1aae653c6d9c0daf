"""POST /encode, /decode and /reconstruct: decode the body, run the batch, encode the response.

Each endpoint is declared once, as an :class:`Endpoint`: the request layer
(service/request_layer.py) serves it from that declaration, and :func:`openapi_paths` documents
it from the same one, its query parameters included (one pydantic model parses and documents
them). They are plain ASGI rather than FastAPI routes: FastAPI's routing and dependency
machinery cost more per request than decoding a PNG (docs/decisions.md).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic.json_schema import models_json_schema
from starlette.responses import Response

from service.access import SECURITY_SCHEME_NAME, check_api_key
from service.calibration import MAX_QUANTILE, MIN_QUANTILE, is_anomaly
from service.errors import InvalidInput, NotReady
from service.inference import Op
from service.request_body import read_images, read_latents
from service.responses import OutputFormat, Scores, choose_format, render_images, render_latents
from service.schemas import (
    EXAMPLE_LATENT,
    EXAMPLE_PIXELS,
    EXAMPLE_PNG_BASE64,
    ErrorResponse,
    ImagesRequest,
    LatentsRequest,
    ReconstructResponse,
    TensorResponse,
)
from service.state import ServiceState, Serving
from service.wire import ANOMALY_HEADER, MSE_HEADER, NPY_MEDIA_TYPE, PERCENTILE_HEADER, QUANTILE_HEADER

NO_CALIBRATION = "its checkpoint carries none; add it with: python -m training.calibrate CHECKPOINT"

# --- query parameters: one model each parses them and documents them ----------------------------


class OutputQuery(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    format: OutputFormat | None = Field(None, description="output format; overrides the Accept header (default: JSON)")


class ImagesQuery(OutputQuery):
    resize: bool = Field(False, description="scale images that are not 28x28 to 28x28 instead of refusing them (422)")


class ReconstructQuery(ImagesQuery):
    anomaly_quantile: float | None = Field(
        None, ge=MIN_QUANTILE, le=MAX_QUANTILE,
        description="flag images that score higher than this share of normal images "
        "(default: the server's MNIST_AE_ANOMALY_QUANTILE, 0.99 unless set)",
    )  # fmt: skip
    error_map: bool = Field(
        False, description="answer with the per-pixel squared error (N,1,28,28) instead of the reconstruction; "
        "as PNG, a heatmap of the absolute error on a fixed 0..1 scale",
    )  # fmt: skip


# no query string: the defaults
_DEFAULT_QUERIES = {model: model() for model in (OutputQuery, ImagesQuery, ReconstructQuery)}


def parse_query(model: type[OutputQuery], query_string: bytes) -> OutputQuery:
    """The query string as ``model``; 422 for a value it does not take. Unknown names are ignored."""
    if not query_string:
        return _DEFAULT_QUERIES[model]
    try:
        return model.model_validate(dict(parse_qsl(query_string.decode("latin-1"))))
    except ValidationError as exc:
        problems = [f"query parameter {'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()[:3]]
        raise InvalidInput("; ".join(problems)) from None


# --- the endpoints -------------------------------------------------------------------------------

Outputs = tuple[np.ndarray, ...]


@dataclass(frozen=True, slots=True)
class Call:
    """What an inference request brings: its body, read within the limits, and the headers that matter."""

    body: bytes
    content_type: str
    accept: str | None
    authorization: str | None
    query_string: bytes


@dataclass(frozen=True)
class Endpoint:
    """One inference route: how it reads a request, what it runs, how it answers, and its docs."""

    path: str
    op: Op
    summary: str
    query: type[OutputQuery]
    read: Callable[[Call, Serving, Any], Awaitable[np.ndarray]]  # -> the batch rows of this request
    answer: Callable[[Answer], Response]
    request_body: dict[str, Any]  # OpenAPI; schemas given as pydantic models become $refs (openapi_paths)
    png: str  # what the PNG answer shows
    response_model: type[BaseModel]

    async def handle(self, call: Call, state: ServiceState) -> Response:
        """401 without the API key (when one is set), 503 until the model is warm, 422 for a bad
        parameter; then the body, decoded and checked before it is queued, goes to the batcher."""
        check_api_key(call.authorization, state.settings.api_key)
        serving = state.serving
        if not state.ready or serving is None:
            raise NotReady(f"the model is not ready ({state.status}); retry shortly", headers={"retry-after": "1"})
        query = parse_query(self.query, call.query_string)
        output = choose_format(query.format, call.accept)
        with serving.batcher.arrival():
            inputs = await self.read(call, serving, query)
        outputs = await serving.batcher.submit(self.op, inputs)
        return self.answer(Answer(outputs, inputs, query, output, serving))


@dataclass(frozen=True, slots=True)
class Answer:
    """What an endpoint answers from: the model's outputs for the request's inputs, as asked."""

    outputs: Outputs
    inputs: np.ndarray
    query: Any
    format: OutputFormat
    serving: Serving


def _answer_reconstruct(answer: Answer) -> Response:
    """Reconstructions (or error maps), each image's MSE, and, if the model is calibrated, its
    percentile among normal images and the anomaly decision; counted in the metrics."""
    recon, mse, percentile = answer.outputs
    query: ReconstructQuery = answer.query
    metrics = answer.serving.batcher.metrics
    if np.isnan(percentile).any():  # computed by an uncalibrated model
        scores = Scores(mse=mse, percentile=None, anomaly=None, quantile=None)
    else:
        quantile = query.anomaly_quantile
        if quantile is None:
            quantile = answer.serving.settings.anomaly_quantile
        anomaly = is_anomaly(percentile, quantile)
        scores = Scores(mse=mse, percentile=percentile, anomaly=anomaly, quantile=quantile)
    metrics.observe_scores(mse, scores.anomaly)
    if query.error_map:
        errors = np.square(recon - answer.inputs[:, None])  # (N,1,28,28)
        return render_images(errors, answer.format, scores=scores, heatmap=True)
    return render_images(recon, answer.format, scores=scores)


async def _read_images(call: Call, serving: Serving, query: ImagesQuery) -> np.ndarray:
    config = serving.config
    return await read_images(call.body, call.content_type, serving.settings, size=config.image_size,
                             resize=query.resize)  # fmt: skip


async def _read_images_to_score(call: Call, serving: Serving, query: ReconstructQuery) -> np.ndarray:
    # before the batch runs: a threshold the served model cannot apply is the request's mistake
    if query.anomaly_quantile is not None and serving.batcher.predictor.calibration is None:
        raise InvalidInput(f"anomaly_quantile: the model being served has no calibration ({NO_CALIBRATION})")
    return await _read_images(call, serving, query)


async def _read_latents(call: Call, serving: Serving, query: OutputQuery) -> np.ndarray:
    return read_latents(call.body, call.content_type, serving.settings, latent_shape=serving.config.latent_shape)


_BINARY = {"type": "string", "format": "binary"}
_IMAGES_BODY: dict[str, Any] = {
    "required": True,
    "description": "One or more 28x28 grayscale images, white digit on black. Colour is converted to gray; "
    "other sizes are refused with 422 unless `?resize=true`.",
    "content": {
        "application/json": {
            "schema": ImagesRequest,
            "examples": {
                "pixels": {"summary": "a 28x28 nested list in [0,1]", "value": {"images": [EXAMPLE_PIXELS]}},
                "base64": {"summary": "a base64 PNG", "value": {"images": [EXAMPLE_PNG_BASE64]}},
            },
        },
        "multipart/form-data": {
            "schema": {
                "type": "object",
                "properties": {"file": {"type": "array", "items": _BINARY, "description": "image files"}},
                "required": ["file"],
            },
        },
        "image/png": {"schema": _BINARY},
        "image/jpeg": {"schema": _BINARY},
        NPY_MEDIA_TYPE: {
            "schema": _BINARY,
            "description": "a .npy array of uint8 (0..255) or float32 ([0,1]); shape (28,28), (N,28,28) or (N,1,28,28)",
        },
    },
}
_LATENTS_BODY: dict[str, Any] = {
    "required": True,
    "description": "Latent codes of shape (16,7,7) or (N,16,7,7), as produced by /encode.",
    "content": {
        "application/json": {
            "schema": LatentsRequest,
            "examples": {"one code": {"value": {"latents": EXAMPLE_LATENT}}},
        },
        NPY_MEDIA_TYPE: {"schema": _BINARY, "description": "a float32 .npy array, (16,7,7) or (N,16,7,7)"},
    },
}

ENDPOINTS: Sequence[Endpoint] = (
    Endpoint(
        "/encode", Op.ENCODE, "Images -> latent codes (N,16,7,7)", ImagesQuery, _read_images,
        lambda a: render_latents(a.outputs[0], a.format), _IMAGES_BODY,
        "a mosaic of the 16 latent channels (a grid for a batch)", TensorResponse,
    ),
    Endpoint(
        "/decode", Op.DECODE, "Latent codes -> images (N,1,28,28) in [0,1]", OutputQuery, _read_latents,
        lambda a: render_images(a.outputs[0], a.format), _LATENTS_BODY,
        "the decoded image (a grid for a batch)", TensorResponse,
    ),
    Endpoint(
        "/reconstruct", Op.RECONSTRUCT,
        "Images -> reconstructions, their MSE, its percentile among normal images and the anomaly decision",
        ReconstructQuery, _read_images_to_score, _answer_reconstruct, _IMAGES_BODY,
        "the reconstruction, or with ?error_map=true the error heatmap (a grid for a batch)", ReconstructResponse,
    ),
)  # fmt: skip


# --- OpenAPI -------------------------------------------------------------------------------------

_ERRORS = {
    400: "malformed body (bad JSON, multipart or .npy)",
    401: "missing or wrong API key (only when the service is configured with one)",
    405: "a method other than POST",
    406: "the Accept header asks for a format this endpoint cannot produce",
    408: "the body stalled (a slow drip)",
    413: "body, batch or image too large",
    415: "unsupported Content-Type or undecodable image",
    422: "wrong shape, range, size or parameter",
    500: "the forward pass failed; only the requests in that batch get this",
    503: "model not ready, shutting down, or queue full",
}


def _query_parameters(model: type[OutputQuery]) -> list[dict[str, Any]]:
    document = model.model_json_schema()
    definitions = document.get("$defs", {})
    parameters = []
    for name, schema in document["properties"].items():
        schema = dict(schema)
        description = schema.pop("description", "")
        schema.pop("title", None)
        # "format" may be absent (null in the model); in a query string that is simply not sending it
        branches = [s for s in schema.pop("anyOf", []) if s.get("type") != "null"]
        if branches:
            schema = {**branches[0], **schema}
        if "$ref" in schema:  # an enum: inlined, a query parameter has no components of its own
            referenced = dict(definitions[schema.pop("$ref").rsplit("/", 1)[-1]])
            referenced.pop("title", None)
            schema = {**referenced, **schema}
        if schema.get("default") is None:
            schema.pop("default", None)
        parameters.append({"name": name, "in": "query", "required": False, "description": description,
                           "schema": schema})  # fmt: skip
    return parameters


def openapi_paths(endpoints: Sequence[Endpoint]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The endpoints' OpenAPI path items, and the component schemas they refer to."""
    models: list[type[BaseModel]] = [ErrorResponse, ImagesRequest, LatentsRequest, TensorResponse, ReconstructResponse]
    refs, definitions = models_json_schema(
        [(model, "validation") for model in models], ref_template="#/components/schemas/{model}"
    )
    ref = {model: refs[(model, "validation")] for model in models}

    def resolve(content: dict[str, Any]) -> dict[str, Any]:
        return {media: {**spec, "schema": ref[spec["schema"]] if isinstance(spec["schema"], type) else spec["schema"]}
                for media, spec in content.items()}  # fmt: skip

    paths: dict[str, Any] = {}
    for endpoint in endpoints:
        headers = {}
        if endpoint.op is Op.RECONSTRUCT:
            for name, text in (
                (MSE_HEADER, "per-image MSE, comma-separated (PNG and .npy)"),
                (PERCENTILE_HEADER, "per-image percentile among normal images, 0..100 (absent if uncalibrated)"),
                (ANOMALY_HEADER, "per-image decision, true or false (absent if uncalibrated)"),
                (QUANTILE_HEADER, "the threshold quantile of the decisions (absent if uncalibrated)"),
            ):
                headers[name] = {"description": text, "schema": {"type": "string"}}
        responses: dict[str, Any] = {
            "200": {
                "description": "the result; JSON by default, or as asked by `?format=` or `Accept`",
                "content": {
                    "application/json": {"schema": ref[endpoint.response_model]},
                    "image/png": {"schema": _BINARY, "description": endpoint.png},
                    NPY_MEDIA_TYPE: {"schema": _BINARY, "description": "the float32 array as .npy"},
                },
                "headers": headers,
            },
            **{str(status): {"description": text, "content": {"application/json": {"schema": ref[ErrorResponse]}}}
               for status, text in _ERRORS.items()},
        }  # fmt: skip
        paths[endpoint.path] = {
            "post": {
                "tags": ["inference"],
                "summary": endpoint.summary,
                "operationId": endpoint.op.value,
                "security": [{SECURITY_SCHEME_NAME: []}],
                "parameters": _query_parameters(endpoint.query),
                "requestBody": {**endpoint.request_body, "content": resolve(endpoint.request_body["content"])},
                "responses": responses,
            }
        }
    return paths, definitions.get("$defs", {})
