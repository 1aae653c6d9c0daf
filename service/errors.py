"""One error shape for every failure: ``{"error": {"code": "...", "message": "..."}}``.

Routes and codecs raise :class:`APIError` subclasses; the handlers installed by
:func:`install_error_handlers` turn those, FastAPI's validation errors, Starlette's
HTTP errors and anything unexpected into that JSON. An unexpected exception is
logged with its traceback and answered with a bare 500: no stack trace leaves the server.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect
from starlette.responses import Response

from service.http_json import json_response

log = logging.getLogger(__name__)


class APIError(Exception):
    status_code = 400
    code = "bad_request"

    def __init__(self, message: str, *, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.headers = headers


class MalformedBody(APIError):
    status_code, code = 400, "malformed_body"


class Unauthorized(APIError):
    status_code, code = 401, "unauthorized"


class NotAcceptable(APIError):
    status_code, code = 406, "not_acceptable"


class PayloadTooLarge(APIError):
    status_code, code = 413, "payload_too_large"


class RequestTimeout(APIError):
    status_code, code = 408, "request_timeout"


class UnsupportedMediaType(APIError):
    status_code, code = 415, "unsupported_media_type"


class InvalidInput(APIError):
    """The body parsed, but its shape, range, size or values are wrong."""

    status_code, code = 422, "invalid_input"


class Forbidden(APIError):
    status_code, code = 403, "forbidden"


class Conflict(APIError):
    status_code, code = 409, "conflict"


class InvalidCheckpoint(APIError):
    """A checkpoint to roll out that is missing, tampered with, of another architecture or not finite."""

    status_code, code = 422, "invalid_checkpoint"


class NotReady(APIError):
    status_code, code = 503, "not_ready"


class Overloaded(APIError):
    status_code, code = 503, "overloaded"


class InferenceFailed(APIError):
    status_code, code = 500, "inference_failed"


STATUS_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    408: "request_timeout",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "invalid_input",
    429: "too_many_requests",
    500: "internal_error",
    503: "not_ready",
}


def error_body(code: str, message: str) -> dict[str, Any]:
    return {"error": {"code": code, "message": message}}


def error_response(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> Response:
    return json_response(error_body(code, message), status, headers)


def api_error_response(exc: APIError) -> Response:
    return error_response(exc.status_code, exc.code, exc.message, exc.headers)


CLIENT_CLOSED_REQUEST = 499  # nginx's status for a client that left before its answer: not a server error


def client_gone_response() -> Response:
    """What is recorded (in logs and metrics) for a client that left mid-request; nobody reads it."""
    log.info("the client went away before its request was read")
    return Response(status_code=CLIENT_CLOSED_REQUEST)


def internal_error_response() -> Response:
    return error_response(500, "internal_error", "internal server error; the request id in X-Request-ID is logged")


async def _api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, APIError)
    return api_error_response(exc)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    code = STATUS_CODES.get(exc.status_code, "http_error")
    message = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
    return error_response(exc.status_code, code, message, getattr(exc, "headers", None))


async def _validation_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    parts = []
    for err in exc.errors()[:5]:
        where = ".".join(str(p) for p in err.get("loc", ()))
        parts.append(f"{where}: {err.get('msg', 'invalid')}")
    return error_response(422, "invalid_input", "; ".join(parts) or "invalid request")


async def _client_gone(request: Request, exc: Exception) -> Response:
    return client_gone_response()


async def _unexpected(request: Request, exc: Exception) -> Response:
    log.exception("unhandled error on %s %s", request.method, request.url.path)
    return internal_error_response()


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(APIError, _api_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(ClientDisconnect, _client_gone)
    app.add_exception_handler(Exception, _unexpected)
