"""The model behind the batcher: numpy arrays in, numpy arrays out. Knows nothing about HTTP.

Each operation is one eager PyTorch function from a decoded batch to everything its response
needs (forward pass, clamping to [0,1], each image's scores and where they lie among normal
images), run in inference mode by the batcher's single worker thread. The percentile comes from
the calibration that travels with the weights, so a roll-out swaps both at once. On CPU the model
runs channels-last, about 2x faster for these small convolutions, and the decoder runs with each
2x upsampling folded into the convolution after it (service/folding.py): the same function within
1e-6, 1.2x faster from batches of 32 on.
"""

from __future__ import annotations

import enum
import time

import numpy as np
import torch
from torch import nn

from service.calibration import Calibration
from service.folding import FoldedDecoder
from service.model import AutoEncoder
from service.scoring import assess, novelty, reconstruction_mse


class Op(enum.StrEnum):
    ENCODE = "encode"  # images (N,28,28) -> latents (N,16,7,7)
    DECODE = "decode"  # latents (N,16,7,7) -> images (N,1,28,28) in [0,1]
    # images -> (images (N,1,28,28) in [0,1], and per image (N,): MSE, novelty (NaN without a head),
    # percentile of the decision score (NaN uncalibrated), MSE outside the normal range (bool))
    RECONSTRUCT = "reconstruct"
    ANALYZE = "analyze"  # images -> RECONSTRUCT's outputs and the latents (N,16,7,7): the v2 protocol's outputs


class Predictor:
    """Runs one operation on one batch. Called from a single worker thread, one batch at a time."""

    def __init__(self, model: AutoEncoder, device: torch.device, calibration: Calibration | None = None) -> None:
        self.device = device
        self.config = model.config
        self.calibration = calibration
        self._memory_format = torch.channels_last if device.type == "cpu" else torch.contiguous_format
        model = model.to(device).eval().to(memory_format=self._memory_format)
        self._features, self._to_code, self._head = model.en, model.to_code, model.novelty_head
        self._decoder: nn.Module = FoldedDecoder(model)

    def _images(self, batch: np.ndarray) -> torch.Tensor:
        x = torch.from_numpy(batch).to(self.device, non_blocking=True).unsqueeze(1)  # (N,1,28,28)
        return x.contiguous(memory_format=self._memory_format)

    @torch.inference_mode()
    def run(self, op: Op, batch: np.ndarray) -> tuple[np.ndarray, ...]:
        """``batch`` is (N,28,28) float32 images in [0,1] or (N,16,7,7) float32 latents.
        Returns float32 arrays with N rows each."""
        if op is Op.DECODE:
            z = torch.from_numpy(batch).to(self.device, non_blocking=True)
            images = self._decoder(z.contiguous(memory_format=self._memory_format))
            # clamped to [0,1] for users, as AutoEncoder.decode_images does
            outputs: tuple[torch.Tensor, ...] = (images.clamp(0.0, 1.0),)
        else:
            x = self._images(batch)
            features = self._features(x)  # (N,16,7,7)
            latents = self._to_code(features)  # the same, or (N,8,1,1) with a dense bottleneck
            if op is Op.ENCODE:
                outputs = (latents,)
            else:
                recon = self._decoder(latents).clamp(0.0, 1.0)  # (N,1,28,28), as AutoEncoder.reconstruct
                mse = reconstruction_mse(recon, x)  # (N,)
                novel = torch.full_like(mse, torch.nan) if self._head is None else novelty(self._head(features))
                outputs = (recon, mse, novel, latents) if op is Op.ANALYZE else (recon, mse, novel)
        # contiguous NCHW float32 on the CPU: what the codecs and the batcher's row split expect
        arrays = tuple(t.contiguous().cpu().numpy() for t in outputs)
        if op in (Op.RECONSTRUCT, Op.ANALYZE):
            # here, with the weights that made them: a roll-out swaps the weights and their calibration at once
            recon_, mse_, novel_ = arrays[:3]
            percentile, outlying = assess(mse_, None if self._head is None else novel_, self.calibration)
            # (recon, mse, novelty, percentile, outlying[, latents])
            arrays = (recon_, mse_, novel_, percentile, outlying, *arrays[3:])
        return arrays

    def warmup(self, batches: int, batch_size: int) -> float:
        """Run every operation a few times so the first real request pays no first-call costs."""
        started = time.perf_counter()
        rng = np.random.default_rng(0)
        side = self.config.image_size
        for _ in range(batches):
            for n in (1, batch_size):
                images = rng.random((n, side, side), dtype=np.float32)
                (latents,) = self.run(Op.ENCODE, images)
                self.run(Op.DECODE, latents)
                self.run(Op.RECONSTRUCT, images)
                self.run(Op.ANALYZE, images)
        return time.perf_counter() - started
