"""The service's errors: plain exception classes, each with the HTTP status and the short code it
is answered with. Codecs, the batcher and the routes raise them; nothing here knows a web
framework. service/error_responses.py is the one place that turns them into responses.
"""

from __future__ import annotations


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


class Forbidden(APIError):
    status_code, code = 403, "forbidden"


class NotFound(APIError):
    status_code, code = 404, "not_found"


class NotAcceptable(APIError):
    status_code, code = 406, "not_acceptable"


class RequestTimeout(APIError):
    status_code, code = 408, "request_timeout"


class Conflict(APIError):
    status_code, code = 409, "conflict"


class PayloadTooLarge(APIError):
    status_code, code = 413, "payload_too_large"


class UnsupportedMediaType(APIError):
    status_code, code = 415, "unsupported_media_type"


class InvalidInput(APIError):
    """The body parsed, but its shape, range, size or values are wrong."""

    status_code, code = 422, "invalid_input"


class CheckpointNotFound(APIError):
    """A checkpoint to roll out that is not there."""

    status_code, code = 404, "checkpoint_not_found"


class InvalidCheckpoint(APIError):
    """A checkpoint to roll out that is tampered with, incomplete, of another architecture or not finite."""

    status_code, code = 422, "invalid_checkpoint"


class InferenceFailed(APIError):
    status_code, code = 500, "inference_failed"


class NotReady(APIError):
    status_code, code = 503, "not_ready"


class Overloaded(APIError):
    status_code, code = 503, "overloaded"
