"""The decoder rewritten for inference: each nearest-neighbour 2x upsampling folded into the
convolution after it. Same function, fewer and cheaper passes over memory.

The decoder as trained ends in ``Upsample(x2) -> Conv(8->1) -> Tanh``: the upsampling writes a
(N,8,28,28) tensor of repeated pixels, and a convolution with one output channel then reads it,
the slowest shape there is for CPU convolution kernels. But every output pixel of that pair at
(2i+a, 2j+b) only sees low-resolution pixels near (i, j), through a kernel that depends on the
phase (a, b) alone. So the pair is one convolution on the low-resolution input, with 4x the output
channels (one per phase), followed by ``pixel_shuffle``, which puts each phase where it belongs:

    conv(upsample(x), w)  ==  pixel_shuffle(conv(x, fold(w)), 2)        # (N,C,h,w) -> (N,O,2h,2w)

exactly, up to float rounding (the folded kernel sums weights the original applied to equal
pixels): within float rounding of the trained model's output (tests/test_folding.py,
tests/test_inference.py). On 2 CPU cores a reconstruction runs 1.2x faster from batches of 32 on,
and the server's 256-image requests 1.10x (docs/decisions.md).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from service.model import AutoEncoder

SCALE = 2  # the seed's Upsample(scale_factor=2)


def _check_foldable(conv: nn.Conv2d) -> int:
    """The kernel size k of ``conv``, a stride-1 'same' convolution with an odd square kernel."""
    k = conv.kernel_size[0]
    if (
        conv.kernel_size != (k, k)
        or k % 2 != 1
        or conv.padding != (k // 2, k // 2)
        or conv.stride != (1, 1)
        or conv.dilation != (1, 1)
        or conv.groups != 1
        or conv.padding_mode != "zeros"
    ):
        raise ValueError(f"cannot fold an upsampling into {conv}: expected a stride-1 'same' conv with an odd kernel")
    return k


def _fold_map(k: int, like: torch.Tensor) -> torch.Tensor:
    """(2,2,K,K,k,k) of 0/1: which tap (dy,dx) of the k x k kernel lands, for output phase (a,b),
    on which tap (u,v) of the folded K x K kernel on the low-resolution input.

    Output pixel (2i+a, 2j+b) reads upsampled rows 2i+a+d for d in [-p, p] (p = k // 2), which
    are low-resolution rows i + floor((a+d)/2): offsets within [-r, r] for r = ceil(p/2), so
    K = 2r + 1, with padding r.
    """
    p = k // 2
    r = (p + 1) // 2
    side = 2 * r + 1
    fold_map = torch.zeros(SCALE, SCALE, side, side, k, k, dtype=like.dtype, device=like.device)
    for a in range(SCALE):
        for b in range(SCALE):
            for dy in range(k):
                for dx in range(k):
                    fold_map[a, b, (a + dy - p) // SCALE + r, (b + dx - p) // SCALE + r, dy, dx] = 1
    return fold_map


def _memory_format(weight: torch.Tensor) -> torch.memory_format:
    channels_last = weight.is_contiguous(memory_format=torch.channels_last) and not weight.is_contiguous()
    return torch.channels_last if channels_last else torch.contiguous_format


class UpsampledConv(nn.Module):
    """``conv(upsample_2x(x))``, computed as ``pixel_shuffle(conv2d(x, folded), 2)``: (N,C,h,w) -> (N,O,2h,2w).

    The folded kernel, computed once from ``conv``'s weights, has 4*O output channels, ordered
    (o, a, b) as ``pixel_shuffle`` expects. For inference: later changes to ``conv`` are not seen.
    """

    def __init__(self, conv: nn.Conv2d) -> None:
        super().__init__()
        k = _check_foldable(conv)
        self.padding = (k // 2 + 1) // 2
        with torch.no_grad():
            fold_map = _fold_map(k, conv.weight)  # (2,2,K,K,k,k)
            out_channels, in_channels = conv.weight.shape[:2]
            side = fold_map.shape[2]
            folded = torch.einsum("ocyx,abuvyx->oabcuv", conv.weight, fold_map)  # (O,2,2,C,K,K)
            folded = folded.reshape(out_channels * SCALE * SCALE, in_channels, side, side)
            folded_bias = None if conv.bias is None else conv.bias.repeat_interleave(SCALE * SCALE)  # (4*O,)
        # buffers, so that .to(device) moves them
        self.weight: torch.Tensor
        self.bias: torch.Tensor | None
        self.register_buffer("weight", folded.contiguous(memory_format=_memory_format(conv.weight)))
        self.register_buffer("bias", folded_bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        phases = F.conv2d(x, self.weight, self.bias, padding=self.padding)  # (N,4*O,h,w)
        if phases.shape[1] == SCALE * SCALE and phases.is_contiguous(memory_format=torch.channels_last):
            # one output channel, channels-last: memory (N,h,w,a,b) -> (N,h,a,w,b) is the image;
            # one copy, twice as fast as pixel_shuffle's channels-last kernel for this shape
            n, _, h, w = phases.shape
            grid = phases.permute(0, 2, 3, 1).reshape(n, h, w, SCALE, SCALE).permute(0, 1, 3, 2, 4)
            return grid.reshape(n, 1, SCALE * h, SCALE * w)
        return F.pixel_shuffle(phases, SCALE)


class FoldedDecoder(nn.Module):
    """``model.from_code`` then ``model.de`` with each ``Upsample -> Conv`` pair replaced by an
    :class:`UpsampledConv`.

    Shares the model's other layers; raw output, like ``AutoEncoder.decode``. For inference.
    """

    def __init__(self, model: AutoEncoder) -> None:
        super().__init__()
        layers: list[nn.Module] = [model.from_code]  # an identity in the seed's layout
        pending_upsample = False
        for layer in model.de:
            if isinstance(layer, nn.Upsample):
                if layer.mode != "nearest" or layer.scale_factor not in (SCALE, float(SCALE), (SCALE, SCALE)):
                    raise ValueError(f"cannot fold {layer}: only nearest-neighbour 2x upsampling folds")
                pending_upsample = True
            elif pending_upsample:
                if not isinstance(layer, nn.Conv2d):
                    raise ValueError(f"cannot fold an upsampling followed by {layer}: expected a convolution")
                layers.append(UpsampledConv(layer))
                pending_upsample = False
            else:
                layers.append(layer)
        if pending_upsample:
            raise ValueError("the decoder ends in an upsampling: nothing to fold it into")
        self.layers = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:  # (N,16,7,7) or (N,8,1,1) -> (N,1,28,28), unclamped
        y: torch.Tensor = self.layers(z)
        return y
