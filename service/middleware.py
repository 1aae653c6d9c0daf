"""Pure-ASGI middleware around every HTTP request.

- a request id: the client's ``X-Request-ID`` when it is sane, else a new one; bound to the
  logs and echoed in the response;
- the body limits: a declared ``Content-Length`` over the limit is refused before anything is
  read, and a streamed body is cut off the moment it passes the limit; a body whose next chunk
  takes longer than the timeout (a slow drip) is refused too;
- one access-log line and the request metrics, labelled by route template (bounded cardinality).
"""

from __future__ import annotations

import logging
import random
import re
import time

from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.deadlines import Deadlines
from service.errors import PayloadTooLarge, RequestTimeout, error_response
from service.logs import request_id_var
from service.metrics import Metrics

log = logging.getLogger("service.access")

_SANE_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


class RequestContextMiddleware:
    def __init__(self, app: ASGIApp, *, metrics: Metrics, max_body_bytes: int, body_timeout_s: float) -> None:
        self.app = app
        self.metrics = metrics
        self.max_body_bytes = max_body_bytes
        self.body_timeout_s = body_timeout_s
        # one watcher for every body read instead of a timer per chunk; a stall ends within a tick of the limit
        self._deadlines = Deadlines(tick_s=min(1.0, body_timeout_s / 4))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming_id, declared = "", None
        for name, value in scope["headers"]:  # ASGI servers lower-case header names
            if name == b"x-request-id":
                incoming_id = value.decode("latin-1")
            elif name == b"content-length":
                declared = value.decode("latin-1")
        # ids need to be unique, not secret: no syscall per request as uuid4 would make
        request_id = incoming_id if _SANE_REQUEST_ID.match(incoming_id) else f"{random.getrandbits(128):032x}"
        token = request_id_var.set(request_id)
        started = time.perf_counter()
        status = 500
        self.metrics.in_flight.inc()

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], (b"x-request-id", request_id.encode())]
            await send(message)

        try:
            refusal = self._refuse_declared_length(declared) if declared is not None else None
            if refusal is not None:
                await refusal(scope, receive, send_with_id)
                return
            await self.app(scope, self._limited(receive), send_with_id)
        finally:
            elapsed = time.perf_counter() - started
            route = getattr(scope.get("route"), "path", None) or "unmatched"
            self.metrics.in_flight.dec()
            self.metrics.observe_request(route, scope["method"], status, elapsed)
            log.info(
                "%s %s %d %.1fms",
                scope["method"], scope["path"], status, elapsed * 1000,
                extra={"method": scope["method"], "path": scope["path"], "status": status,
                       "duration_ms": round(elapsed * 1000, 3)},
            )  # fmt: skip
            request_id_var.reset(token)

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

    def _limited(self, receive: Receive) -> Receive:
        """Wrap ``receive``: count body bytes and time each chunk until the body is complete."""
        received = 0
        body_done = False

        async def limited_receive() -> Message:
            nonlocal received, body_done
            if body_done:
                return await receive()  # later calls only wait for a disconnect: no timeout
            try:
                message = await self._deadlines.wait(receive(), self.body_timeout_s)
            except TimeoutError:
                raise RequestTimeout(
                    f"the request body stalled: no data for {self.body_timeout_s:g} s", headers={"connection": "close"}
                ) from None
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body_bytes:
                    raise PayloadTooLarge(
                        f"body is over the limit of {self.max_body_bytes} bytes", headers={"connection": "close"}
                    )
                body_done = not message.get("more_body", False)
            else:
                body_done = True
            return message

        return limited_receive
