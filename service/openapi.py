"""The OpenAPI document of the inference routes, built from their registry
(service/routes/inference.py): the request bodies each accepts, the query parameters from the same
pydantic model that parses them, the responses and the errors. FastAPI documents its own routes;
:func:`add_inference_routes` adds these to that document.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from service.access import BEARER, SECURITY_SCHEME_NAME
from service.codecs.arrays import LATENT_ABS_LIMIT
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
from service.wire import ANOMALY_HEADER, MSE_HEADER, NOVELTY_HEADER, NPY_MEDIA_TYPE, PERCENTILE_HEADER, QUANTILE_HEADER

if TYPE_CHECKING:  # the routes import the request bodies from here
    from service.routes.inference import InferenceRoute

_BINARY = {"type": "string", "format": "binary"}

# request bodies; a schema given as a pydantic model becomes a $ref to its component
IMAGES_BODY: dict[str, Any] = {
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
LATENTS_BODY: dict[str, Any] = {
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
SCORE_HEADERS = {
    MSE_HEADER: "per-image MSE, comma-separated (PNG and .npy)",
    NOVELTY_HEADER: "per-image novelty: log-odds that the image is not a digit (absent without a novelty head)",
    PERCENTILE_HEADER: "per-image percentile of the decision score among normal images, 0..100 "
    "(absent if uncalibrated)",
    ANOMALY_HEADER: "per-image decision, true or false (absent if uncalibrated)",
    QUANTILE_HEADER: "the threshold quantile of the decisions (absent if uncalibrated)",
}

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
_COMPONENTS: list[type[BaseModel]] = [ErrorResponse, ImagesRequest, LatentsRequest, TensorResponse, ReconstructResponse]


def query_parameters(model: type[BaseModel]) -> list[dict[str, Any]]:
    """A query model's fields as OpenAPI query parameters."""
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
        parameter = {"name": name, "in": "query", "required": False, "description": description, "schema": schema}
        parameters.append(parameter)
    return parameters


def add_inference_routes(document: dict[str, Any], routes: Iterable[InferenceRoute]) -> None:
    """Add the routes' path items, the component schemas they refer to and the API-key scheme to
    ``document`` (FastAPI's, of its own routes), in place."""
    refs, definitions = models_json_schema(
        [(model, "validation") for model in _COMPONENTS], ref_template="#/components/schemas/{model}"
    )
    ref = {model: refs[(model, "validation")] for model in _COMPONENTS}
    error = {"content": {"application/json": {"schema": ref[ErrorResponse]}}}
    paths: dict[str, Any] = {}
    for route in routes:
        content = {
            media: {**spec, "schema": ref[spec["schema"]] if isinstance(spec["schema"], type) else spec["schema"]}
            for media, spec in route.body["content"].items()
        }
        headers = {name: {"description": text, "schema": {"type": "string"}} for name, text in route.headers.items()}
        ok = {
            "description": "the result; JSON by default, or as asked by `?format=` or `Accept`",
            "content": {
                "application/json": {"schema": ref[route.response_model]},
                "image/png": {"schema": _BINARY, "description": route.png},
                NPY_MEDIA_TYPE: {"schema": _BINARY, "description": "the float32 array as .npy"},
            },
            "headers": headers,
        }
        paths[route.path] = {
            "post": {
                "tags": ["inference"],
                "summary": route.summary,
                "operationId": route.path.strip("/"),
                "security": [{SECURITY_SCHEME_NAME: []}],
                "parameters": query_parameters(route.query),
                "requestBody": {**route.body, "content": content},
                "responses": {
                    "200": ok,
                    **{str(status): {"description": text, **error} for status, text in _ERRORS.items()},
                },
            }
        }
    document["paths"] = {**paths, **document.get("paths", {})}
    components = document.setdefault("components", {})
    components["schemas"] = {**components.get("schemas", {}), **definitions.get("$defs", {})}
    scheme = BEARER.model.model_dump(mode="json", by_alias=True, exclude_none=True)
    components.setdefault("securitySchemes", {})[SECURITY_SCHEME_NAME] = scheme


def describe_served_model(
    document: dict[str, Any], latent_shape: tuple[int, int, int], max_items: int, version: str
) -> None:
    """Narrow ``document`` (completed by :func:`add_inference_routes`), in place, to what this
    server accepts: the latents' exact shape for the model it serves, its configured batch limit
    in place of the JSON format's ceilings, and the one version of the model it serves."""
    number = {"type": "number", "minimum": -LATENT_ABS_LIMIT, "maximum": LATENT_ABS_LIMIT}
    single: dict[str, Any] = number
    for length in reversed(latent_shape):
        single = {"type": "array", "minItems": length, "maxItems": length, "items": single}
    batch = {"type": "array", "minItems": 1, "maxItems": max_items, "items": single}
    schemas = document["components"]["schemas"]
    schemas["LatentsRequest"]["properties"]["latents"]["oneOf"] = [batch, single]
    schemas["ImagesRequest"]["properties"]["images"]["maxItems"] = max_items
    for path_item in document["paths"].values():
        for operation in path_item.values():
            for parameter in operation.get("parameters", []):
                if parameter["in"] == "path" and parameter["name"] == "version":
                    parameter["schema"]["enum"] = [version]
