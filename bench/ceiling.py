"""The HTTP ceiling: a bare ASGI app that reads the request body and answers with fixed bytes.

    CEILING_RESPONSE=answer.json uvicorn bench.ceiling:app --loop uvloop --http httptools

bench.serving runs it under the same uvicorn as the service (uvloop and httptools), answering
with the service's own response bytes for the request it sends (``CEILING_RESPONSE``: a file
holding them; its media type from ``CEILING_MEDIA_TYPE``, JSON by default). Whatever the service
costs beyond this is its own: routing, middleware, decoding, batching, the model and encoding.
"""

from __future__ import annotations

import os
from pathlib import Path

from starlette.types import Receive, Scope, Send

_BODY = Path(os.environ["CEILING_RESPONSE"]).read_bytes() if "CEILING_RESPONSE" in os.environ else b"{}"
_HEADERS = [
    (b"content-type", os.environ.get("CEILING_MEDIA_TYPE", "application/json").encode()),
    (b"content-length", str(len(_BODY)).encode()),
]


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] == "lifespan":
        while (await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})
        return
    more = True
    while more:  # the whole body, as the service reads it
        message = await receive()
        more = message.get("more_body", False)
    await send({"type": "http.response.start", "status": 200, "headers": _HEADERS})
    await send({"type": "http.response.body", "body": _BODY})
