from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from service.checkpoint import load_checkpoint
from service.fast_layers import PairwiseMaxPool2d, SigmoidTanh, cpu_layers
from service.folding import FoldedDecoder, UpsampledConv
from service.inference import SMALLEST_CPU_LAYERS_BATCH, Op, Predictor
from tests.conftest import SHIPPED_WEIGHTS

CHANNELS_LAST = torch.channels_last


@pytest.mark.parametrize("shape", [(1, 1, 2, 2), (3, 8, 28, 28), (2, 16, 14, 6), (5, 3, 4, 10)], ids=str)
def test_pairwise_max_pool_is_max_pool_exactly(shape: tuple[int, int, int, int]) -> None:
    torch.manual_seed(0)
    x = torch.randn(shape).contiguous(memory_format=CHANNELS_LAST)
    got = PairwiseMaxPool2d()(x)
    assert torch.equal(got, F.max_pool2d(x, 2))  # a maximum rounds nothing: bit for bit
    assert got.is_contiguous(memory_format=CHANNELS_LAST)


@pytest.mark.parametrize(
    "x",
    [torch.randn(2, 3, 8, 8), torch.randn(2, 3, 7, 8).contiguous(memory_format=CHANNELS_LAST),
     torch.randn(2, 3, 8, 5).contiguous(memory_format=CHANNELS_LAST)],
    ids=["nchw", "odd-height", "odd-width"],
)  # fmt: skip
def test_pairwise_max_pool_falls_back_where_the_views_do_not_apply(x: torch.Tensor) -> None:
    assert torch.equal(PairwiseMaxPool2d()(x), F.max_pool2d(x, 2))


def test_sigmoid_tanh_is_tanh_within_float_rounding() -> None:
    y = torch.linspace(-20, 20, 400_001)
    torch.testing.assert_close(SigmoidTanh()(y), torch.tanh(y), rtol=0, atol=2.4e-7)
    assert SigmoidTanh()(torch.zeros(3)).abs().max() == 0  # black stays exactly black after clamping


def test_cpu_layers_rewrite_pools_and_tanh_and_keep_the_rest() -> None:
    conv, relu, pool = nn.Conv2d(1, 2, 3), nn.ReLU(), nn.MaxPool2d(2)
    out = cpu_layers([conv, relu, pool, nn.Tanh(), nn.MaxPool2d(2)])
    assert out[0] is conv
    assert [type(layer) for layer in out] == [nn.Conv2d, PairwiseMaxPool2d, nn.ReLU, SigmoidTanh, PairwiseMaxPool2d]
    assert out[2] is relu


@pytest.mark.parametrize(
    "pool",
    [nn.MaxPool2d(3), nn.MaxPool2d(2, stride=1), nn.MaxPool2d(2, padding=1), nn.MaxPool2d(2, ceil_mode=True),
     nn.MaxPool2d(2, dilation=2), nn.AvgPool2d(2)],
    ids=["kernel-3", "stride-1", "padded", "ceil-mode", "dilated", "average"],
)  # fmt: skip
def test_other_pools_are_left_alone(pool: nn.Module) -> None:
    relu = nn.ReLU()
    assert cpu_layers([relu, pool]) == [relu, pool]


def test_the_rewritten_encoder_is_the_encoder_bit_for_bit() -> None:
    model = load_checkpoint(SHIPPED_WEIGHTS).model.eval().to(memory_format=CHANNELS_LAST)
    x = torch.rand(16, 1, 28, 28).contiguous(memory_format=CHANNELS_LAST)
    with torch.no_grad():
        assert torch.equal(nn.Sequential(*cpu_layers(model.en))(x), model.encode(x))


def test_the_rewritten_decoder_is_the_decoder_within_1e6() -> None:
    model = load_checkpoint(SHIPPED_WEIGHTS).model.eval().to(memory_format=CHANNELS_LAST)
    z = model.encode(torch.rand(16, 1, 28, 28).contiguous(memory_format=CHANNELS_LAST)).detach()
    with torch.no_grad():
        got = nn.Sequential(*cpu_layers(FoldedDecoder(model).layers))(z)
        torch.testing.assert_close(got, model.decode(z), rtol=0, atol=1e-6)


def test_a_one_channel_upsampled_conv_is_upsample_then_conv() -> None:
    """The final layer's channels-last path (one output channel: a plain reshuffle, not pixel_shuffle)."""
    torch.manual_seed(1)
    conv = nn.Conv2d(8, 1, 3, padding=1).to(memory_format=CHANNELS_LAST)
    x = torch.randn(4, 8, 6, 9).contiguous(memory_format=CHANNELS_LAST)
    with torch.no_grad():
        want = conv(F.interpolate(x, scale_factor=2, mode="nearest"))
        torch.testing.assert_close(UpsampledConv(conv)(x), want, rtol=1e-5, atol=1e-5)


def test_small_and_large_batches_get_the_same_answers() -> None:
    """Below SMALLEST_CPU_LAYERS_BATCH the predictor runs the layers as trained, from it on the CPU
    layers: one image gets the same result whichever batch it lands in, within 3e-6 (oneDNN picks
    its convolution kernels by batch size: the layers as trained alone differ by 1.6e-6 between
    batches of 1 and 8)."""
    predictor = Predictor(load_checkpoint(SHIPPED_WEIGHTS).model, torch.device("cpu"))
    images = np.random.default_rng(0).random((SMALLEST_CPU_LAYERS_BATCH, 28, 28), dtype=np.float32)
    alone = [predictor.run(Op.RECONSTRUCT, images[i : i + 1]) for i in range(len(images))]
    together = predictor.run(Op.RECONSTRUCT, images)
    np.testing.assert_allclose(np.concatenate([a[0] for a in alone]), together[0], atol=3e-6)
    np.testing.assert_allclose(np.concatenate([a[1] for a in alone]), together[1], rtol=1e-5, atol=1e-8)
    (latents,) = predictor.run(Op.ENCODE, images)
    np.testing.assert_allclose(predictor.run(Op.ENCODE, images[:1])[0], latents[:1], atol=3e-6)
    np.testing.assert_allclose(predictor.run(Op.DECODE, latents[:1])[0], predictor.run(Op.DECODE, latents)[0][:1],
                               atol=3e-6)  # fmt: skip
