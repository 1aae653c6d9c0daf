"""The model behind the batcher: numpy arrays in, numpy arrays out. Knows nothing about HTTP.

Each operation is one small graph, from the decoded batch to everything the response needs
(layout change, forward pass, clamping, per-image MSE included), so the worker thread makes one
call per batch. By default the graphs are traced with ``torch.jit.trace``: a traced graph runs
entirely in C++ and gives up the GIL for its whole duration, whereas an eager forward pass
needs the GIL back between every layer, and the event loop thread, busy with HTTP, holds it
for up to ``sys.getswitchinterval()`` each time (bench/gil.py measures it; see BENCHMARKS.md).
"""

from __future__ import annotations

import enum
import logging
import time
import warnings
from typing import Literal

import numpy as np
import torch
from torch import nn

from service.fast_layers import cpu_layers
from service.folding import FoldedDecoder
from service.model import AutoEncoder

log = logging.getLogger(__name__)

GraphMode = Literal["trace", "eager"]
# below it, the layers as trained are as fast as service/fast_layers.py's or faster (fewer
# dispatches): on 2 CPU cores 1.00-1.13x at batch 1 over runs, equal at 4-8; from 32 on, the
# rewritten layers are 1.12-1.27x faster (bench.forward_layers)
SMALLEST_CPU_LAYERS_BATCH = 8
# images come as uint8 intensities (single PNGs) or float32 in [0,1]; the graphs divide by these
_DIVISORS = {torch.uint8: 255.0, torch.float32: 1.0}


class Op(str, enum.Enum):
    ENCODE = "encode"  # images (N,28,28) -> latents (N,16,7,7)
    DECODE = "decode"  # latents (N,16,7,7) -> images (N,1,28,28) in [0,1]
    RECONSTRUCT = "reconstruct"  # images -> (images (N,1,28,28) in [0,1], MSE per image (N,))


class _Encode(nn.Module):
    def __init__(self, encoder: nn.Module, channels_last: bool) -> None:
        super().__init__()
        self.encoder, self.channels_last = encoder, channels_last

    def forward(self, images: torch.Tensor, divisor: torch.Tensor) -> torch.Tensor:  # (N,28,28) -> (N,16,7,7)
        x = _unit_range(images, divisor).unsqueeze(1)  # (N,1,28,28)
        latents: torch.Tensor = self.encoder(_layout(x, self.channels_last))
        return latents.contiguous()


class _Decode(nn.Module):
    def __init__(self, decoder: nn.Module, channels_last: bool) -> None:
        super().__init__()
        self.decoder, self.channels_last = decoder, channels_last

    def forward(self, latents: torch.Tensor) -> torch.Tensor:  # (N,16,7,7) -> (N,1,28,28)
        # clamped to [0,1] for users, as AutoEncoder.decode_images does
        images: torch.Tensor = self.decoder(_layout(latents, self.channels_last))
        return images.clamp(0.0, 1.0).contiguous()


class _Reconstruct(nn.Module):
    def __init__(self, encoder: nn.Module, decoder: nn.Module, channels_last: bool) -> None:
        super().__init__()
        self.encoder, self.decoder, self.channels_last = encoder, decoder, channels_last

    def forward(self, images: torch.Tensor, divisor: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = _unit_range(images, divisor).unsqueeze(1)  # (N,1,28,28)
        # clamped to [0,1] for users, as AutoEncoder.reconstruct does
        recon = self.decoder(self.encoder(_layout(x, self.channels_last))).clamp(0.0, 1.0).contiguous()
        mse = (recon - x).pow(2).flatten(1).mean(dim=1)  # (N,)
        return recon, mse


def _unit_range(images: torch.Tensor, divisor: torch.Tensor) -> torch.Tensor:
    """uint8 intensities over 255, or float32 in [0,1] over 1: the same floats as
    service.codecs.images.unit_float, bit for bit (IEEE division either way)."""
    return images.to(torch.float32).div(divisor)


def _layout(x: torch.Tensor, channels_last: bool) -> torch.Tensor:
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


class Predictor:
    """Runs one operation on one batch. Called from a single worker thread, one batch at a time."""

    def __init__(
        self,
        model: AutoEncoder,
        device: torch.device,
        *,
        graph_mode: GraphMode = "trace",
        fold_upsampling: bool = True,
    ) -> None:
        self.device = device
        self.config = model.config
        # what each image dtype is divided by in the graph to land in [0,1]
        self._divisors = {dtype: torch.tensor(d, dtype=torch.float32, device=device) for dtype, d in _DIVISORS.items()}
        # channels_last: measured ~2x faster for these small convolutions on CPU
        channels_last = device.type == "cpu"
        model = model.to(device).eval()
        if channels_last:
            model = model.to(memory_format=torch.channels_last)
        # the same function as model.de, faster (service/folding.py)
        decoder: nn.Module = FoldedDecoder(model) if fold_upsampling else model.de
        self._graphs = self._build(model.en, decoder, channels_last, graph_mode)
        # from SMALLEST_CPU_LAYERS_BATCH images on, the same functions again in layers that are
        # faster on CPU for batches but cost a few more dispatches (service/fast_layers.py)
        self._batch_graphs: dict[Op, nn.Module] | None = None
        if channels_last:
            layers: nn.Sequential = decoder.layers if isinstance(decoder, FoldedDecoder) else model.de
            encoder, decoder = nn.Sequential(*cpu_layers(model.en)), nn.Sequential(*cpu_layers(layers))
            self._batch_graphs = self._build(encoder, decoder, channels_last, graph_mode)

    def _build(
        self, encoder: nn.Module, decoder: nn.Module, channels_last: bool, graph_mode: GraphMode
    ) -> dict[Op, nn.Module]:
        graphs: dict[Op, nn.Module] = {
            Op.ENCODE: _Encode(encoder, channels_last),
            Op.DECODE: _Decode(decoder, channels_last),
            Op.RECONSTRUCT: _Reconstruct(encoder, decoder, channels_last),
        }
        if graph_mode == "trace":
            graphs = {op: self._trace(op, graph) for op, graph in graphs.items()}
        return graphs

    def _trace(self, op: Op, graph: nn.Module) -> nn.Module:
        side = self.config.image_size
        example: tuple[torch.Tensor, ...] = (torch.rand((2, *self.config.latent_shape), device=self.device),)
        if op is not Op.DECODE:
            images = torch.randint(0, 256, (2, side, side), dtype=torch.uint8, device=self.device)
            example = (images, self._divisors[torch.uint8])
        with torch.no_grad(), warnings.catch_warnings():
            # torch.jit is deprecated in favour of torch.compile/export, which compile for tens of
            # seconds at start-up; a trace takes milliseconds and does what is needed here
            warnings.simplefilter("ignore", FutureWarning)
            warnings.simplefilter("ignore", torch.jit.TracerWarning)  # type: ignore[attr-defined]
            traced: nn.Module = torch.jit.trace(graph, example, check_trace=False)  # type: ignore[no-untyped-call]
        return traced

    @torch.inference_mode()
    def run(self, op: Op, batch: np.ndarray) -> tuple[np.ndarray, ...]:
        """``batch`` is (N,H,W) images, float32 in [0,1] or uint8 intensities, or (N,C,h,w) latents,
        float32. Returns float32 arrays with N rows each."""
        # As few torch calls from Python as there can be, the scaling of uint8 pixels included:
        # on CPU the graph call alone, which runs without the GIL and then has to win it back
        # from the event loop, which holds it most of the time under load.
        x = torch.from_numpy(batch)
        if self.device.type != "cpu":
            x = x.to(self.device, non_blocking=True)
        graphs = self._graphs
        if self._batch_graphs is not None and len(batch) >= SMALLEST_CPU_LAYERS_BATCH:
            graphs = self._batch_graphs
        if op is Op.DECODE:
            out = graphs[op](x)
        else:
            divisor = self._divisors.get(x.dtype)
            if divisor is None:
                raise TypeError(f"images must be uint8 or float32, not {x.dtype}")
            out = graphs[op](x, divisor)
        outputs = out if isinstance(out, tuple) else (out,)
        if self.device.type != "cpu":
            outputs = tuple(t.cpu() for t in outputs)
        return tuple(t.numpy() for t in outputs)

    def warmup(self, batches: int, batch_size: int) -> float:
        """Run every operation a few times so the first real request pays no first-call costs."""
        started = time.perf_counter()
        rng = np.random.default_rng(0)
        side = self.config.image_size
        for _ in range(batches):
            for n in (1, SMALLEST_CPU_LAYERS_BATCH, batch_size):  # each graph, the largest batch
                images = rng.random((n, side, side), dtype=np.float32)
                pixels = rng.integers(0, 256, (n, side, side), dtype=np.uint8)  # single PNGs' dtype
                (latents,) = self.run(Op.ENCODE, images)
                self.run(Op.DECODE, latents)
                self.run(Op.RECONSTRUCT, images)
                self.run(Op.ENCODE, pixels)
                self.run(Op.RECONSTRUCT, pixels)
        return time.perf_counter() - started
