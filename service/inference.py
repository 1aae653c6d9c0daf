"""The model behind the batcher: plain tensors in, plain tensors out. Knows nothing about HTTP.

Inputs arrive on the CPU as float32; they are moved to the model's device, run under
``torch.inference_mode`` and the results come back to the CPU as float32 numpy arrays.
"""

from __future__ import annotations

import enum
import logging
import time

import numpy as np
import torch

from service.model import AutoEncoder

log = logging.getLogger(__name__)


class Op(str, enum.Enum):
    ENCODE = "encode"  # images (N,1,28,28) -> latents (N,16,7,7)
    DECODE = "decode"  # latents (N,16,7,7) -> images (N,1,28,28) in [0,1]
    RECONSTRUCT = "reconstruct"  # images -> (images in [0,1], MSE per image)


class Predictor:
    """Runs one operation on one batch. Called from a single worker thread, one batch at a time."""

    def __init__(self, model: AutoEncoder, device: torch.device) -> None:
        self.model = model.to(device).eval()
        self.device = device
        self.config = model.config
        if device.type == "cpu":
            # measured ~2x faster for these small convolutions on CPU
            self.model = self.model.to(memory_format=torch.channels_last)

    @torch.inference_mode()
    def run(self, op: Op, batch: np.ndarray) -> tuple[np.ndarray, ...]:
        """``batch`` is (N,H,W) images or (N,C,h,w) latents, float32. Returns arrays with N rows each."""
        x = torch.from_numpy(batch).to(self.device, non_blocking=True)
        if op is Op.DECODE:
            return (self._to_numpy(self.model.decode_images(self._layout(x))),)
        images = self._layout(x.unsqueeze(1))  # (N,1,28,28)
        if op is Op.ENCODE:
            return (self._to_numpy(self.model.encode(images)),)
        recon = self.model.reconstruct(images)
        mse = (recon - images).pow(2).flatten(1).mean(dim=1)  # (N,)
        return self._to_numpy(recon), self._to_numpy(mse)

    def warmup(self, batches: int, batch_size: int) -> float:
        """Run every operation a few times so the first real request pays no first-call costs."""
        started = time.perf_counter()
        rng = np.random.default_rng(0)
        side = self.config.image_size
        for _ in range(batches):
            images = rng.random((batch_size, side, side), dtype=np.float32)
            (latents,) = self.run(Op.ENCODE, images)
            self.run(Op.DECODE, latents)
            self.run(Op.RECONSTRUCT, images)
        return time.perf_counter() - started

    def _layout(self, x: torch.Tensor) -> torch.Tensor:
        return x.contiguous(memory_format=torch.channels_last) if self.device.type == "cpu" else x

    @staticmethod
    def _to_numpy(t: torch.Tensor) -> np.ndarray:
        return t.float().contiguous().cpu().numpy()
