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
pixels): within 1e-6 of the trained model's output on the shipped weights (tests/test_folding.py).
On 2 CPU cores the decoder runs ~1.7x faster, a 256-image reconstruction ~1.3x (BENCHMARKS.md:
the raw rows of bench.serving, and bench.levers with MNIST_AE_FOLD_UPSAMPLING=false).
"""

from __future__ import annotations

import torch
from torch import nn

from service.model import AutoEncoder

SCALE = 2  # the seed's Upsample(scale_factor=2)


def fold_upsample_into_conv(conv: nn.Conv2d) -> nn.Conv2d:
    """A convolution on the low-resolution input that, followed by ``pixel_shuffle(., 2)``,
    equals ``conv`` applied after a nearest-neighbour 2x upsampling.

    ``conv`` is a stride-1 convolution with odd kernel k and "same" padding p = k // 2. Output
    pixel (2i+a, 2j+b) reads upsampled rows 2i+a+d for d in [-p, p], which are low-resolution rows
    i + floor((a+d)/2): offsets within [-r, r] for r = ceil(p/2). The folded kernel is (2r+1)^2,
    with padding r, and 4*O output channels ordered (o, a, b) as ``pixel_shuffle`` expects.
    """
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
    p = k // 2
    r = (p + 1) // 2
    weight = conv.weight.detach()  # (O,C,k,k)
    out_channels, in_channels = weight.shape[:2]
    side = 2 * r + 1
    folded = weight.new_zeros(out_channels, SCALE, SCALE, in_channels, side, side)
    for a in range(SCALE):
        for b in range(SCALE):
            for dy in range(k):
                for dx in range(k):
                    # high-res offset (a + dy - p) lands on low-res offset floor((a + dy - p) / 2)
                    row, col = (a + dy - p) // SCALE + r, (b + dx - p) // SCALE + r
                    folded[:, a, b, :, row, col] += weight[:, :, dy, dx]
    phases = SCALE * SCALE
    result = nn.Conv2d(in_channels, out_channels * phases, side, padding=r, bias=conv.bias is not None)
    result = result.to(device=weight.device, dtype=weight.dtype)
    with torch.no_grad():
        result.weight.copy_(folded.reshape(out_channels * phases, in_channels, side, side))
        if conv.bias is not None and result.bias is not None:
            result.bias.copy_(conv.bias.detach().repeat_interleave(phases))
    return result.to(memory_format=_memory_format(weight))


def _memory_format(weight: torch.Tensor) -> torch.memory_format:
    channels_last = weight.is_contiguous(memory_format=torch.channels_last) and not weight.is_contiguous()
    return torch.channels_last if channels_last else torch.contiguous_format


class FoldedDecoder(nn.Module):
    """``model.de`` with each ``Upsample -> Conv`` pair replaced by ``Conv(folded) -> pixel_shuffle``.

    Built from a trained model's layers (their weights are shared, not copied, except for the
    folded convolutions, which are computed once here); raw output, like ``AutoEncoder.decode``.
    """

    def __init__(self, model: AutoEncoder) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        pending_upsample = False
        for layer in model.de:
            if isinstance(layer, nn.Upsample):
                if layer.mode != "nearest" or layer.scale_factor not in (SCALE, float(SCALE), (SCALE, SCALE)):
                    raise ValueError(f"cannot fold {layer}: only nearest-neighbour 2x upsampling folds")
                pending_upsample = True
            elif pending_upsample:
                if not isinstance(layer, nn.Conv2d):
                    raise ValueError(f"cannot fold an upsampling followed by {layer}: expected a convolution")
                layers += [fold_upsample_into_conv(layer), nn.PixelShuffle(SCALE)]
                pending_upsample = False
            else:
                layers.append(layer)
        if pending_upsample:
            raise ValueError("the decoder ends in an upsampling: nothing to fold it into")
        self.layers = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:  # (N,16,7,7) -> (N,1,28,28), unclamped
        y: torch.Tensor = self.layers(z)
        return y
