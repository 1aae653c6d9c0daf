"""A peer-style FastAPI service, for comparison (not for use): how such a service is usually written.

    uvicorn bench.naive_service:app --port 8001

One request, one Pillow decode and torchvision ToTensor, one forward pass in the event loop,
JSON lists out; no batching, nothing tuned. bench.serving runs it the way a plain
``pip install fastapi uvicorn`` does (asyncio loop, h11 parser), and once more with uvloop and
httptools, to separate what the server stack gives from what this service's design gives.
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
try:
    from torchvision.transforms import ToTensor

    to_tensor = ToTensor()
except ImportError:  # torchvision's wheel does not load beside some torch builds; this is what ToTensor does

    def to_tensor(image: Image.Image) -> torch.Tensor:
        return torch.from_numpy(np.asarray(image, dtype=np.float32) / 255.0)[None]


@app.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@app.post("/reconstruct")
async def reconstruct(request: Request) -> dict[str, object]:
    image = Image.open(io.BytesIO(await request.body())).convert("L")
    x = to_tensor(image).unsqueeze(0)  # (1,1,28,28)
    with torch.no_grad():
        y = model(x).clamp(0, 1)
    return {"reconstruction": y[0, 0].tolist(), "mse": float(((y - x) ** 2).mean())}
