"""OpenAPI descriptions of the bodies the routes read by hand (several content types each),
with a working example for every endpoint in /docs."""

from __future__ import annotations

from typing import Any

from service.codecs.npy import NPY_MEDIA_TYPE
from service.responses import MSE_HEADER
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

_BINARY = {"type": "string", "format": "binary"}
_FORMAT_PARAMETER = {
    "name": "format",
    "in": "query",
    "required": False,
    "description": "output format; overrides the Accept header (default: JSON)",
    "schema": {"type": "string", "enum": ["json", "png", "npy"]},
}
_RESIZE_PARAMETER = {
    "name": "resize",
    "in": "query",
    "required": False,
    "description": "scale images that are not 28x28 to 28x28 instead of refusing them (422)",
    "schema": {"type": "boolean", "default": False},
}


def _schema(model: Any) -> dict[str, Any]:
    schema: dict[str, Any] = model.model_json_schema()
    schema.pop("examples", None)  # examples go on the media type, where Swagger UI shows them
    return schema


_SECURITY: list[dict[str, list[str]]] = [{"HTTPBearer": []}]  # the scheme service.access.BEARER declares

IMAGES_BODY: dict[str, Any] = {
    "security": _SECURITY,
    "parameters": [_RESIZE_PARAMETER, _FORMAT_PARAMETER],
    "requestBody": {
        "required": True,
        "description": "One or more 28x28 grayscale images, white digit on black. Colour is converted to gray; "
        "other sizes are refused with 422 unless `?resize=true`.",
        "content": {
            "application/json": {
                "schema": _schema(ImagesRequest),
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
                "description": "a .npy array of uint8 (0..255) or float32 ([0,1]); shape (28,28), (N,28,28) "
                "or (N,1,28,28)",
            },
        },
    },
}

LATENTS_BODY: dict[str, Any] = {
    "security": _SECURITY,
    "parameters": [_FORMAT_PARAMETER],
    "requestBody": {
        "required": True,
        "description": "Latent codes of shape (16,7,7) or (N,16,7,7), as produced by /encode.",
        "content": {
            "application/json": {
                "schema": _schema(LatentsRequest),
                "examples": {"one code": {"value": {"latents": EXAMPLE_LATENT}}},
            },
            NPY_MEDIA_TYPE: {"schema": _BINARY, "description": "a float32 .npy array, (16,7,7) or (N,16,7,7)"},
        },
    },
}

_ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorResponse, "description": description}
    for status, description in {
        400: "malformed body (bad JSON, multipart or .npy)",
        401: "missing or wrong API key (only when the service is configured with one)",
        408: "the body stalled (a slow drip)",
        406: "the Accept header asks for a format this endpoint cannot produce",
        413: "body, batch or image too large",
        415: "unsupported Content-Type or undecodable image",
        422: "wrong shape, range, size or parameter",
        500: "the forward pass failed; only the requests in that batch get this",
        503: "model not ready, shutting down, or queue full",
    }.items()
}


def tensor_responses(model: Any, png: str, with_mse: bool = False) -> dict[int | str, dict[str, Any]]:
    headers = (
        {MSE_HEADER: {"description": "per-image MSE, comma-separated (PNG and .npy)", "schema": {"type": "string"}}}
        if with_mse
        else {}
    )
    return {
        200: {
            "description": "the result; JSON by default, or as asked by `?format=` or `Accept`",
            "content": {
                "application/json": {"schema": _schema(model)},
                "image/png": {"schema": _BINARY, "description": png},
                NPY_MEDIA_TYPE: {"schema": _BINARY, "description": "the float32 array as .npy"},
            },
            "headers": headers,
        },
        **_ERRORS,
    }


ENCODE_RESPONSES = tensor_responses(TensorResponse, "a mosaic of the 16 latent channels (a grid for a batch)")
DECODE_RESPONSES = tensor_responses(TensorResponse, "the decoded image (a grid for a batch)")
RECONSTRUCT_RESPONSES = tensor_responses(ReconstructResponse, "the reconstruction (a grid for a batch)", True)
