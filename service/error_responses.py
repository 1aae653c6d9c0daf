"""The one place where errors become HTTP responses.

Two shapes, one per front door:
- the native API: ``{"error": {"code": "...", "message": "..."}}`` with the error's status;
- the Open Inference Protocol under /v2: ``{"error": "..."}``, where a request the model cannot
  take (422 natively) is the protocol's 400.

:func:`error_response_for` maps any exception: the service's own (service/errors.py), Starlette's
HTTP errors (404, 405), FastAPI's validation errors, a client that went away (499, nobody reads
it), and anything unexpected, which is logged with its traceback and answered with a bare 500: no
stack trace leaves the server. The request layer calls it for the inference routes; for FastAPI's
routes, :func:`install_error_handlers` makes it the app's handler.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect
from starlette.responses import Response

from service.errors import APIError
from service.http_json import json_response
from service.schemas import describe_errors

log = logging.getLogger(__name__)

OIP_PREFIX = "/v2"
CLIENT_CLOSED_REQUEST = 499  # nginx's status for a client that left before its answer: not a server error
_CODES = {404: "not_found", 405: "method_not_allowed", 422: "invalid_input"}  # Starlette's and FastAPI's own


def error_response(
    status: int, code: str, message: str, headers: Mapping[str, str] | None = None, *, oip: bool = False
) -> Response:
    if oip:
        return json_response({"error": message}, 400 if status == 422 else status, headers)
    return json_response({"error": {"code": code, "message": message}}, status, headers)


def error_response_for(exc: Exception, where: str, *, oip: bool = False) -> Response:
    """The response for ``exc``, raised while answering ``where`` (a method and path, for the log)."""
    if isinstance(exc, APIError):
        return error_response(exc.status_code, exc.code, exc.message, exc.headers, oip=oip)
    if isinstance(exc, HTTPException):
        message = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
        return error_response(exc.status_code, _CODES.get(exc.status_code, "http_error"), message, exc.headers, oip=oip)
    if isinstance(exc, RequestValidationError):
        return error_response(422, "invalid_input", describe_errors(exc.errors()) or "invalid request", oip=oip)
    if isinstance(exc, ClientDisconnect):
        log.info("the client went away before its request was read: %s", where)
        return Response(status_code=CLIENT_CLOSED_REQUEST)
    log.error("unhandled error on %s", where, exc_info=exc)
    message = "internal server error; the request id in X-Request-ID is logged"
    return error_response(500, "internal_error", message, oip=oip)


async def _handle(request: Request, exc: Exception) -> Response:
    # the route FastAPI matched says which front door this is (a proxy's root_path aside)
    route_path: str = getattr(request.scope.get("route"), "path", "")
    oip = route_path.startswith(OIP_PREFIX)
    return error_response_for(exc, f"{request.method} {request.url.path}", oip=oip)


def install_error_handlers(app: FastAPI) -> None:
    for exc_class in (APIError, HTTPException, RequestValidationError, ClientDisconnect, Exception):
        app.add_exception_handler(exc_class, _handle)
