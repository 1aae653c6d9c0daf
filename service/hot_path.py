"""ASGI middleware that calls the inference endpoints directly, without FastAPI's routing.

FastAPI declares /encode, /decode and /reconstruct (``service.routes.inference``): their
documentation and the endpoint functions live there, and every other route runs through
FastAPI as usual. On the hot path, though, FastAPI's per-request machinery (matching every
route in turn, solving dependencies, three layers of exception middleware, the exit stack) cost
more than decoding and encoding the images. This middleware sits innermost among the user
middleware, inside the request-id, body-limit, metrics and CORS layers, and for a POST to one of
those three paths calls the *same* endpoint function with the *same* :func:`inference_call`,
turning errors into the same JSON as the app's exception handlers. BENCHMARKS.md measures it.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from fastapi.routing import APIRoute
from starlette._utils import get_route_path  # what FastAPI's router matches with, root_path removed
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from service.deps import inference_call
from service.errors import APIError, api_error_response, client_gone_response, internal_error_response
from service.state import ServiceState

log = logging.getLogger(__name__)


class InferenceHotPath:
    def __init__(self, app: ASGIApp, *, routes: Iterable[APIRoute], state: ServiceState) -> None:
        self.app = app
        self.state = state
        self.routes = {route.path: route for route in routes if "POST" in (route.methods or ())}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        is_post = scope["type"] == "http" and scope["method"] == "POST"
        route = self.routes.get(get_route_path(scope)) if is_post else None
        if route is None:
            await self.app(scope, receive, send)
            return
        scope["route"] = route  # what FastAPI's router would have set: metrics and logs label by it
        request = Request(scope, receive)
        response: Response
        try:
            response = await route.endpoint(request, inference_call(request, self.state))
        except APIError as exc:
            response = api_error_response(exc)
        except ClientDisconnect:
            response = client_gone_response()
        except Exception:
            log.exception("unhandled error on POST %s", scope["path"])
            response = internal_error_response()
        await response(scope, receive, send)
