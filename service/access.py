"""Optional API-key access: ``Authorization: Bearer <key>``, compared in constant time."""

from __future__ import annotations

import hmac
from typing import TYPE_CHECKING, Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import SecretStr

from service.errors import Unauthorized

if TYPE_CHECKING:  # state.py imports check_api_key from here
    from service.state import ServiceState

# documents the scheme in OpenAPI (Swagger's "Authorize" button); the check is check_api_key
BEARER = HTTPBearer(auto_error=False, description="the API key, when the service is configured with one")
SECURITY_SCHEME_NAME = BEARER.scheme_name  # "HTTPBearer": what operations name in their "security"


def check_api_key(authorization: str | None, api_key: SecretStr | None) -> None:
    """Raise 401 unless ``api_key`` is unset or the Authorization header carries it as a bearer token."""
    if api_key is None:
        return
    scheme, _, token = (authorization or "").partition(" ")
    given = token.strip().encode() if scheme.lower() == "bearer" else b""
    # compare_digest takes the same time wherever the strings differ: no timing oracle for the key
    if not hmac.compare_digest(given, api_key.get_secret_value().encode()):
        raise Unauthorized(
            "missing or wrong API key: send 'Authorization: Bearer <key>'", headers={"www-authenticate": "Bearer"}
        )


async def require_api_key(
    request: Request, _credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(BEARER)]
) -> None:
    """The same check as a FastAPI dependency, for /model and /admin/reload."""
    state: ServiceState = request.app.state.service
    check_api_key(request.headers.get("authorization"), state.settings.api_key)
