"""Layers for CPU inference that compute what the trained ones compute, faster on batches.

Profiled on 2 CPU cores at the batch sizes the server forms under load (about 32 images), three
of the trained layers cost far more than their arithmetic (BENCHMARKS.md, "The forward pass,
layer by layer", measures each against its replacement):

- ``MaxPool2d(2)`` runs ATen's generic pooling kernel, which also computes the indices of the
  maxima (for a backward pass that never comes). :class:`PairwiseMaxPool2d` takes the maximum of
  two row views, then of two column views, of the channels-last memory: 1.9-2.6x faster, and the
  very same numbers (a maximum does no rounding).
- ``ReLU -> MaxPool2d`` is ``MaxPool2d -> ReLU`` exactly (the ReLU is monotonic), on a quarter
  of the values.
- ``Tanh`` (ATen's vectorized tanh) is ``2 * sigmoid(2y) - 1``: the same function, within 2.4e-7
  of it in float32, 3.6x faster.

:func:`cpu_layers` rewrites a list of layers with them; ``service.inference`` applies it to the
encoder and the folded decoder on CPU, where tensors are channels-last, for batches of 8 images
and more. The rewritten model's outputs stay within 1e-6 of the trained model's
(tests/test_fast_layers.py).
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
import torch.nn.functional as F
from torch import nn


class PairwiseMaxPool2d(nn.Module):
    """``MaxPool2d(2)`` (stride 2, no padding, floor) as two element-wise maxima of strided views.

    Fast for channels-last tensors, whose memory is (N,H,W,C): a pair of rows is two halves of
    one contiguous block, and a pair of columns is two halves of 2C values. Other layouts and odd
    sizes go to ``F.max_pool2d``.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (N,C,H,W) -> (N,C,H/2,W/2)
        n, c, h, w = x.shape
        if h % 2 or w % 2 or not x.is_contiguous(memory_format=torch.channels_last):
            return F.max_pool2d(x, 2)
        pairs = x.permute(0, 2, 3, 1).reshape(n, h // 2, 2, w // 2, 2 * c)  # a view: (N,H/2,2,W/2,2C)
        rows = torch.maximum(pairs[:, :, 0], pairs[:, :, 1])  # (N,H/2,W/2,2C)
        pooled = torch.maximum(rows[..., :c], rows[..., c:])  # (N,H/2,W/2,C)
        return pooled.permute(0, 3, 1, 2)  # (N,C,H/2,W/2), channels-last


class SigmoidTanh(nn.Module):
    """``tanh(y)`` computed as ``2 * sigmoid(2y) - 1``: the same function, 4-5x faster on CPU
    (within 2.4e-7 of ``torch.tanh`` in float32)."""

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(y * 2).mul_(2).sub_(1)


def _is_pairwise_pool(layer: nn.Module) -> bool:
    def pair(value: int | tuple[int, ...]) -> tuple[int, ...]:
        return value if isinstance(value, tuple) else (value, value)

    return (
        isinstance(layer, nn.MaxPool2d)
        and pair(layer.kernel_size) == (2, 2)
        and pair(layer.stride if layer.stride is not None else layer.kernel_size) == (2, 2)
        and pair(layer.padding) == (0, 0)
        and pair(layer.dilation) == (1, 1)
        and not layer.ceil_mode
        and not layer.return_indices
    )


def cpu_layers(layers: Iterable[nn.Module]) -> list[nn.Module]:
    """``layers`` with each 2x2 max-pooling made a :class:`PairwiseMaxPool2d` (and moved ahead of
    a ReLU just before it), and each ``Tanh`` a :class:`SigmoidTanh`. Other layers are kept as
    they are (shared, not copied)."""
    out: list[nn.Module] = []
    for layer in layers:
        if _is_pairwise_pool(layer):
            if out and isinstance(out[-1], nn.ReLU):
                out.insert(len(out) - 1, PairwiseMaxPool2d())  # max-pool, then ReLU: the same values
            else:
                out.append(PairwiseMaxPool2d())
        elif isinstance(layer, nn.Tanh):
            out.append(SigmoidTanh())
        else:
            out.append(layer)
    return out
