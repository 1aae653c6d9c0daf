from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from service.folding import FoldedDecoder, UpsampledConv
from service.model import AutoEncoder, ModelConfig


@pytest.mark.parametrize("kernel_size", [1, 3, 5, 7])
@pytest.mark.parametrize("memory_format", [torch.contiguous_format, torch.channels_last], ids=["nchw", "nhwc"])
def test_folded_conv_equals_upsample_then_conv(kernel_size: int, memory_format: torch.memory_format) -> None:
    torch.manual_seed(kernel_size)
    conv = nn.Conv2d(5, 3, kernel_size, padding=kernel_size // 2).to(memory_format=memory_format)
    x = torch.randn(4, 5, 6, 9).contiguous(memory_format=memory_format)  # not square: rows and columns differ
    with torch.no_grad():
        want = conv(F.interpolate(x, scale_factor=2, mode="nearest"))  # (4,3,12,18)
        got = UpsampledConv(conv)(x)
    assert got.shape == want.shape
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    "conv",
    [
        nn.Conv2d(2, 2, 3, padding=0),
        nn.Conv2d(2, 2, 3, padding=1, stride=2),
        nn.Conv2d(2, 2, 4, padding=2),
        nn.Conv2d(2, 2, 3, padding=1, padding_mode="reflect"),
        nn.Conv2d(2, 2, 3, padding=1, groups=2),
    ],
    ids=["no-padding", "stride-2", "even-kernel", "reflect-padding", "grouped"],
)
def test_convs_that_do_not_fold_are_refused(conv: nn.Conv2d) -> None:
    with pytest.raises(ValueError, match="cannot fold"):
        UpsampledConv(conv)


def test_a_bilinear_upsampling_is_refused() -> None:
    model = AutoEncoder()
    model.de[2] = nn.Upsample(scale_factor=2, mode="bilinear")
    with pytest.raises(ValueError, match="only nearest-neighbour 2x"):
        FoldedDecoder(model)


@pytest.mark.parametrize(
    "config", [ModelConfig(), ModelConfig(hidden_channels=4, latent_channels=6, kernel_size=5, image_size=16)], ids=str
)
def test_folded_decoder_is_the_decoder(config: ModelConfig) -> None:
    torch.manual_seed(0)
    model = AutoEncoder(config).eval()
    folded = FoldedDecoder(model)
    assert not any(isinstance(layer, nn.Upsample) for layer in folded.layers)
    z = torch.rand(8, *config.latent_shape)
    with torch.no_grad():
        torch.testing.assert_close(folded(z), model.decode(z), rtol=1e-5, atol=1e-6)
