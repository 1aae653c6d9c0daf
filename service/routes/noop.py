"""POST /noop: reads the body and answers 204. Off by default (``MNIST_AE_ENABLE_NOOP_ROUTE``).

Benchmarks use it to measure what HTTP alone costs on this very server: the ceiling the
inference routes are compared against. It is served like them (same uvicorn, same middleware,
same hot path, same per-call checks) and only skips the model: no decoding, batching or encoding.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.responses import Response

from service.deps import InferenceCallDep

router = APIRouter(include_in_schema=False)


@router.post("/noop")
async def noop(request: Request, call: InferenceCallDep) -> Response:
    await request.body()
    return Response(status_code=204)
