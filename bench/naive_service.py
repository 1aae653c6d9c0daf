"""A peer-style FastAPI service, for comparison (not for use): how such a service is usually written.

    python -m uvicorn bench.naive_service:app --port 8001

One request, one Pillow decode, one forward pass in the event loop, JSON lists out; no batching.
"""

from __future__ import annotations

import io
import os

import numpy as np
import torch
from fastapi import FastAPI, Request
from PIL import Image

from service.checkpoint import load_checkpoint
from service.settings import DEFAULT_CHECKPOINT

app = FastAPI()
model = load_checkpoint(os.environ.get("MNIST_AE_CHECKPOINT", DEFAULT_CHECKPOINT)).model.eval()


@app.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@app.post("/reconstruct")
async def reconstruct(request: Request) -> dict[str, object]:
    image = Image.open(io.BytesIO(await request.body())).convert("L")
    x = torch.from_numpy(np.asarray(image, dtype=np.float32) / 255.0)[None, None]
    with torch.no_grad():
        y = model(x).clamp(0, 1)
    return {"reconstruction": y[0, 0].tolist(), "mse": float(((y - x) ** 2).mean())}
