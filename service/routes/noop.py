"""POST /noop: reads the body and answers 204. Off by default (``MNIST_AE_ENABLE_NOOP_ROUTE``).

Benchmarks use it to measure what HTTP alone costs on this very server (same uvicorn, same
middleware, same body handling): the ceiling the inference routes are compared against.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.responses import Response

router = APIRouter(include_in_schema=False)


@router.post("/noop")
async def noop(request: Request) -> Response:
    await request.body()
    return Response(status_code=204)
