"""Optional API-key access: ``Authorization: Bearer <key>``, compared in constant time."""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from service.errors import Unauthorized
from service.state import ServiceState

# documents the scheme in OpenAPI (Swagger's "Authorize" button); the check itself is below
_bearer = HTTPBearer(auto_error=False, description="the API key, when the service is configured with one")


async def require_api_key(
    request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
) -> None:
    """A dependency for protected routes; a no-op unless the ``api_key`` setting is set."""
    state: ServiceState = request.app.state.service
    key = state.settings.api_key
    if key is None:
        return
    given = credentials.credentials.encode() if credentials is not None else b""
    # compare_digest takes the same time wherever the strings differ: no timing oracle for the key
    if not hmac.compare_digest(given, key.get_secret_value().encode()):
        raise Unauthorized(
            "missing or wrong API key: send 'Authorization: Bearer <key>'", headers={"www-authenticate": "Bearer"}
        )
