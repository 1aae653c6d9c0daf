"""POST /encode, /decode and /reconstruct.

Each endpoint is one function that reads as LitServe's LitAPI does: the guard, then decode the
request (checked before anything is queued, so a bad request fails alone), predict on the
micro-batch, encode the response. :func:`inference_route` registers it once, with its path, query
model, body docs and response model: the request layer (service/request_layer.py) dispatches to it
by path, after parsing its query with that model, and service/openapi.py documents it from the same
entry. They are plain ASGI rather than FastAPI routes: FastAPI's routing and dependency machinery
cost more per request than decoding a PNG (docs/decisions.md).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, TypeVar
from urllib.parse import parse_qsl

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.responses import Response

from service.batcher import MicroBatcher
from service.calibration import MAX_QUANTILE, MIN_QUANTILE
from service.errors import InvalidInput
from service.inference import Op
from service.openapi import IMAGES_BODY, LATENTS_BODY, SCORE_HEADERS
from service.request_body import read_images, read_latents
from service.responses import OutputFormat, choose_format, render_images, render_latents
from service.schemas import ReconstructResponse, TensorResponse, describe_errors
from service.scoring import decide
from service.settings import Settings
from service.state import ServiceState

NO_CALIBRATION = "its checkpoint carries none; add it with: python -m training.calibrate CHECKPOINT"

# --- the registry ----------------------------------------------------------------------------------


class OutputQuery(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    format: OutputFormat | None = Field(None, description="output format; overrides the Accept header (default: JSON)")


Q = TypeVar("Q", bound=OutputQuery)
# (body, headers, query, state) -> response: the body read within the limits, the headers by
# lower-case name; plain values rather than a Starlette Request, whose headers and body cost
# ~20 µs more per request (each missing header is a KeyError inside Headers.get)
Endpoint = Callable[[bytes, Mapping[str, str], Q, ServiceState], Awaitable[Response]]


@dataclass(frozen=True)
class InferenceRoute:
    path: str
    endpoint: Endpoint[Any]
    query: type[OutputQuery]  # parses the query string (unknown names are ignored) and documents it
    summary: str
    body: dict[str, Any]  # the OpenAPI request body
    response_model: type[BaseModel]  # the JSON answer
    png: str  # what the PNG answer shows
    headers: dict[str, str] = field(default_factory=dict)  # response headers beside the JSON body's fields

    @cached_property
    def default_query(self) -> OutputQuery:
        """For requests without a query string: built once, not per request."""
        return self.query()

    def parse_query(self, query_string: bytes) -> OutputQuery:
        """The query string as the route's model; 422 for a value it does not take."""
        if not query_string:
            return self.default_query
        try:
            return self.query.model_validate(dict(parse_qsl(query_string.decode("latin-1"))))
        except ValidationError as exc:
            raise InvalidInput(describe_errors(exc.errors(), "query parameter ")) from None


ROUTES: dict[str, InferenceRoute] = {}  # by path: what the request layer dispatches on


def inference_route(
    path: str,
    *,
    query: type[Q],
    summary: str,
    body: dict[str, Any],
    response_model: type[BaseModel],
    png: str,
    headers: dict[str, str] | None = None,
) -> Callable[[Endpoint[Q]], Endpoint[Q]]:
    def register(endpoint: Endpoint[Q]) -> Endpoint[Q]:
        ROUTES[path] = InferenceRoute(path, endpoint, query, summary, body, response_model, png, headers or {})
        return endpoint

    return register


# --- query parameters --------------------------------------------------------------------------------


class ImagesQuery(OutputQuery):
    resize: bool = Field(False, description="scale images that are not 28x28 to 28x28 instead of refusing them (422)")


class ReconstructQuery(ImagesQuery):
    anomaly_quantile: float | None = Field(
        None,
        ge=MIN_QUANTILE,
        le=MAX_QUANTILE,
        description="flag images that score higher than this share of normal images "
        "(default: the server's MNIST_AE_ANOMALY_QUANTILE, 0.99 unless set)",
    )
    error_map: bool = Field(
        False,
        description="answer with the per-pixel squared error (N,1,28,28) instead of the reconstruction; "
        "as PNG, a heatmap of the absolute error on a fixed 0..1 scale",
    )


# --- the endpoints -----------------------------------------------------------------------------------


async def _read_images(
    body: bytes, headers: Mapping[str, str], query: ImagesQuery, batcher: MicroBatcher, settings: Settings
) -> np.ndarray:
    """The request's images, (N,28,28) float32 in [0,1], checked before they are queued."""
    with batcher.arrival():  # a forming batch waits for these images while they are decoded
        size = batcher.predictor.config.image_size
        content_type = headers.get("content-type", "")
        return await read_images(body, content_type, settings, size=size, resize=query.resize)


@inference_route(
    "/encode",
    query=ImagesQuery,
    summary="Images -> latent codes (N,16,7,7)",
    body=IMAGES_BODY,
    response_model=TensorResponse,
    png="a mosaic of the 16 latent channels (a grid for a batch)",
)
async def encode(body: bytes, headers: Mapping[str, str], query: ImagesQuery, state: ServiceState) -> Response:
    batcher = state.admit(headers.get("authorization"))
    output = choose_format(query.format, headers.get("accept"))
    with state.traced("decode"):
        images = await _read_images(body, headers, query, batcher, state.settings)
    (latents,) = await batcher.submit(Op.ENCODE, images)  # (N,16,7,7)
    with state.traced("encode"):
        return render_latents(latents, output)


@inference_route(
    "/decode",
    query=OutputQuery,
    summary="Latent codes -> images (N,1,28,28) in [0,1]",
    body=LATENTS_BODY,
    response_model=TensorResponse,
    png="the decoded image (a grid for a batch)",
)
async def decode(body: bytes, headers: Mapping[str, str], query: OutputQuery, state: ServiceState) -> Response:
    batcher = state.admit(headers.get("authorization"))
    output = choose_format(query.format, headers.get("accept"))
    with state.traced("decode"), batcher.arrival():
        latent_shape = batcher.predictor.config.latent_shape
        latents = read_latents(body, headers.get("content-type", ""), state.settings, latent_shape=latent_shape)
    (images,) = await batcher.submit(Op.DECODE, latents)  # (N,1,28,28)
    with state.traced("encode"):
        return render_images(images, output)


@inference_route(
    "/reconstruct",
    query=ReconstructQuery,
    summary="Images -> reconstructions, their MSE and novelty, and the anomaly decision",
    body=IMAGES_BODY,
    response_model=ReconstructResponse,
    headers=SCORE_HEADERS,
    png="the reconstruction, or with ?error_map=true the error heatmap (a grid for a batch)",
)
async def reconstruct(
    body: bytes, headers: Mapping[str, str], query: ReconstructQuery, state: ServiceState
) -> Response:
    batcher = state.admit(headers.get("authorization"))
    output = choose_format(query.format, headers.get("accept"))
    quantile = query.anomaly_quantile
    if quantile is None:
        quantile = state.settings.anomaly_quantile
    elif batcher.predictor.calibration is None:  # a threshold the served model cannot apply: the request's mistake
        raise InvalidInput(f"anomaly_quantile: the model being served has no calibration ({NO_CALIBRATION})")
    with state.traced("decode"):
        images = await _read_images(body, headers, query, batcher, state.settings)
    recon, mse, novelty, percentile, outlying = await batcher.submit(Op.RECONSTRUCT, images)  # (N,1,28,28), (N,)x4
    scores = decide(mse, novelty, percentile, outlying, quantile, state.metrics)
    with state.traced("encode"):
        if query.error_map:
            return render_images(np.square(recon - images[:, None]), output, scores=scores, heatmap=True)
        return render_images(recon, output, scores=scores)
