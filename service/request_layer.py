"""The one pure-ASGI layer every HTTP request goes through, and where the inference routes are served.

For every request:
- a request id: the client's ``X-Request-ID`` when it is sane, else a new one; bound to the
  logs and echoed in the response;
- the body limits: a declared ``Content-Length`` over the limit is refused before anything is
  read, a streamed body is cut off the moment it passes the limit, and a body whose next chunk
  takes longer than the timeout (a slow drip) is refused too;
- the memory budget (service/budget.py): a request with a body holds its share of the bytes in
  flight from its headers (or chunk by chunk) until its response is sent; one that does not fit
  is answered 503 with ``Retry-After`` at once, its body dropped unread. When a burst has passed, the memory it
  took goes back to the system;
- while the server drains (service/signals.py), ``Connection: close`` on every response: a client
  on a kept-alive connection finishes its exchange and reconnects, to a server that is not stopping
  (Envoy's drain). Without it, the connection stays pinned here until the listener shuts, and the
  requests sent on it meanwhile are lost;
- the request metrics, labelled by route template (bounded cardinality), and one access-log line
  (by default for errors only: at thousands of requests a second, a line for each success would
  cost 15% of the event loop, and the metrics count them anyway).

A request to one of the inference paths is then answered here: its body read, its query parsed by
its route's model, and both handed, with the headers and the service's state, to the route's
function (service/routes/inference.py); errors become responses in service/error_responses.py. Every
other request goes on to FastAPI (health, readiness, /model, /metrics, /v2, /docs, and the 404s).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable, Mapping

from starlette.requests import ClientDisconnect
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.budget import Held, request_bytes
from service.error_responses import error_response, error_response_for
from service.errors import PayloadTooLarge, RequestTimeout
from service.logs import request_id_for, request_id_var
from service.memory import TRIM_THRESHOLD_BYTES, return_freed_memory
from service.routes.inference import InferenceRoute
from service.state import ServiceState
from service.wire import REQUEST_ID_HEADER

log = logging.getLogger("service.access")

_REQUEST_ID = REQUEST_ID_HEADER.lower().encode()  # ASGI header names are lower-case bytes
_REQUEST_ID_KEY = REQUEST_ID_HEADER.lower()
_CONNECTION_CLOSE = (b"connection", b"close")
_LOG_FROM_STATUS = {"all": 0, "errors": 400, "off": 1000}  # the access_log setting: lowest status logged


class RequestLayer:
    def __init__(self, app: ASGIApp, *, state: ServiceState, routes: Mapping[str, InferenceRoute]) -> None:
        self.app = app
        self.state = state
        self.metrics = state.metrics
        self.max_body_bytes = state.settings.max_body_bytes
        self.body_timeout_s = state.settings.body_timeout_s
        self.routes = routes
        self.log_from_status = _LOG_FROM_STATUS[state.settings.access_log]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        # ASGI servers lower-case header names; of a repeated header, the last counts
        headers = {name.decode("latin-1"): value.decode("latin-1") for name, value in scope["headers"]}
        tracing = self.state.tracing
        if tracing is None:
            await self._handle(scope, receive, send, headers)
            return
        attributes = {"http.request.method": scope["method"], "url.path": scope["path"]}
        with tracing.request(scope["method"], headers, attributes):  # named after its route once known
            await self._handle(scope, receive, send, headers)

    async def _handle(self, scope: Scope, receive: Receive, send: Send, headers: dict[str, str]) -> None:
        incoming_id, declared = headers.get(_REQUEST_ID_KEY, ""), headers.get("content-length")
        request_id = request_id_for(incoming_id)
        id_header = (_REQUEST_ID, request_id.encode())
        token = request_id_var.set(request_id)
        started = time.perf_counter()
        status = 500
        route = self.routes.get(_route_path(scope))
        self.metrics.in_flight.inc()
        held = Held(self.state.budget)

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = self._headers(message.get("headers", ()), id_header)
            await send(message)

        try:
            refusal = self._refuse_declared_length(declared) if declared is not None else None
            if refusal is None and declared not in (None, "0") and not held.take(request_bytes(int(declared))):
                refusal = error_response_for(held.overloaded(), f"{scope['method']} {scope['path']}")
            if refusal is not None:
                await refusal(scope, receive, send_with_id)
            elif route is None:
                await self.app(scope, self._limited(receive, held, declared is None), send_with_id)
            else:
                response = await self._serve(route, scope, self._limited(receive, held, declared is None), headers)
                status = response.status_code
                # sent as it is, without Response.__call__'s generality (background tasks, HEAD...)
                raw_headers = self._headers(response.raw_headers, id_header)
                await send({"type": "http.response.start", "status": status, "headers": raw_headers})
                await send({"type": "http.response.body", "body": response.body})
        finally:
            if held.release() and held.budget is not None and held.budget.take_peak() >= TRIM_THRESHOLD_BYTES:
                # a burst has passed; off the event loop, as malloc_trim walks the heap
                self.state.background(asyncio.to_thread(return_freed_memory))
            elapsed = time.perf_counter() - started
            template = route.path if route else getattr(scope.get("route"), "path", None) or "unmatched"
            if self.state.tracing is not None:
                self.state.tracing.answered(f"{scope['method']} {template}", template, status, request_id)
            self.metrics.in_flight.dec()
            self.metrics.observe_request(template, scope["method"], status, elapsed)
            if status >= self.log_from_status:
                log.info(
                    "%s %s %d %.1fms",
                    scope["method"],
                    scope["path"],
                    status,
                    elapsed * 1000,
                    extra={
                        "method": scope["method"],
                        "path": scope["path"],
                        "status": status,
                        "duration_ms": round(elapsed * 1000, 3),
                    },
                )
            request_id_var.reset(token)

    def _headers(
        self, headers: Iterable[tuple[bytes, bytes]], id_header: tuple[bytes, bytes]
    ) -> list[tuple[bytes, bytes]]:
        """A response's headers, with the request id, and ``Connection: close`` while draining."""
        headers = [*headers, id_header]
        if self.state.draining and not any(name == b"connection" for name, _ in headers):
            headers.append(_CONNECTION_CLOSE)
        return headers

    async def _serve(
        self, route: InferenceRoute, scope: Scope, receive: Receive, headers: Mapping[str, str]
    ) -> Response:
        """The endpoint's answer, or the error response for what it raised."""
        if scope["method"] != "POST":
            return error_response(405, "method_not_allowed", f"{route.path} takes POST", {"allow": "POST"})
        try:
            body = await _read_body(receive)
            query = route.parse_query(scope["query_string"])
            return await route.endpoint(body, headers, query, self.state)
        except Exception as exc:
            return error_response_for(exc, f"POST {scope['path']}")

    def _refuse_declared_length(self, declared: str) -> Response | None:
        """A response refusing the request outright, if its Content-Length is invalid or over the limit."""
        if not declared.isdigit():
            response = error_response(400, "malformed_body", f"invalid Content-Length {declared[:40]!r}")
        elif int(declared) > self.max_body_bytes:
            message = f"body of {declared} bytes is over the limit of {self.max_body_bytes} bytes"
            response = error_response(413, PayloadTooLarge.code, message)
        else:
            return None
        response.headers["connection"] = "close"
        return response

    def _limited(self, receive: Receive, held: Held, streamed: bool) -> Receive:
        """Wrap ``receive``: count body bytes and time each chunk until the body is complete; a
        ``streamed`` body (no Content-Length) takes its share of the memory budget chunk by chunk."""
        received = 0
        body_done = False

        async def limited_receive() -> Message:
            nonlocal received, body_done
            if body_done:
                return await receive()  # later calls only wait for a disconnect: no timeout
            try:
                async with asyncio.timeout(self.body_timeout_s):
                    message = await receive()
            except TimeoutError:
                raise RequestTimeout(
                    f"the request body stalled: no data for {self.body_timeout_s:g} s", headers={"connection": "close"}
                ) from None
            if message["type"] == "http.request":
                chunk = len(message.get("body", b""))
                received += chunk
                if received > self.max_body_bytes:
                    raise PayloadTooLarge(
                        f"body is over the limit of {self.max_body_bytes} bytes", headers={"connection": "close"}
                    )
                if streamed and chunk and not held.take_chunk(chunk):
                    raise held.overloaded()
                body_done = not message.get("more_body", False)
            else:
                body_done = True
            return message

        return limited_receive


async def _read_body(receive: Receive) -> bytes:
    """The whole request body (``receive`` enforces the limits). A plain loop: Starlette's
    ``Request.body()`` goes through an async generator, ~7 µs more per request."""
    chunks = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnect()
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def _route_path(scope: Scope) -> str:
    """The path the app's routes see: without the ``root_path`` a proxy mounted the app under."""
    path: str = scope["path"]
    root: str = scope.get("root_path", "")
    return path[len(root) :] if root and path.startswith(root) else path
