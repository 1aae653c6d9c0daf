"""The Predictor alone: its graphs in float32 and bfloat16 on the shipped weights and real digits."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from service.checkpoint import load_checkpoint
from service.device import cpu_has_bfloat16
from service.inference import Op, Predictor
from tests.conftest import SHIPPED_WEIGHTS

# bfloat16 keeps 8 bits of mantissa: measured on the test set, no pixel of a reconstruction moves
# by more than 0.05 (12 grey levels of 255) and the per-image MSE by more than 1e-4
PIXEL_ATOL = 0.06
MSE_ATOL = 2e-4


@pytest.fixture(scope="module")
def digits(mnist_test: object) -> np.ndarray:
    """512 real test digits as the codecs hand them over: (N,28,28) float32 in [0,1]."""
    return (mnist_test.images[:512].numpy() / np.float32(255)).astype(np.float32)  # type: ignore[attr-defined]


@pytest.mark.parametrize("graph_mode", ["trace", "eager"])
def test_bfloat16_serves_float32_arrays_close_to_float32s(digits: np.ndarray, graph_mode: str) -> None:
    model = load_checkpoint(SHIPPED_WEIGHTS).model
    exact = Predictor(model, torch.device("cpu"))
    fast = Predictor(model, torch.device("cpu"), precision="bfloat16", graph_mode=graph_mode)  # type: ignore[arg-type]
    assert all(p.dtype == torch.float32 for p in model.parameters()), "the caller's model is not cast"

    recon, mse = fast.run(Op.RECONSTRUCT, digits)
    want_recon, want_mse = exact.run(Op.RECONSTRUCT, digits)
    assert recon.dtype == mse.dtype == np.float32 and recon.shape == (512, 1, 28, 28)
    assert recon.min() >= 0.0 and recon.max() <= 1.0, "still clamped to [0,1]"
    np.testing.assert_allclose(recon, want_recon, atol=PIXEL_ATOL)
    np.testing.assert_allclose(mse, want_mse, atol=MSE_ATOL)
    assert abs(mse.mean() / want_mse.mean() - 1) < 0.02, "the same quality over the batch"
    # the MSE is the reconstruction's own, taken in float32 against the request's pixels
    np.testing.assert_allclose(mse, ((recon - digits[:, None]) ** 2).reshape(512, -1).mean(1), rtol=1e-5)

    (latents,) = exact.run(Op.ENCODE, digits)
    (fast_latents,) = fast.run(Op.ENCODE, digits)
    assert fast_latents.dtype == np.float32
    np.testing.assert_allclose(fast_latents, latents, atol=0.05 * max(1.0, float(latents.max())))
    (images,) = fast.run(Op.DECODE, latents)
    np.testing.assert_allclose(images, exact.run(Op.DECODE, latents)[0], atol=PIXEL_ATOL)


def test_float32_is_the_default_and_unchanged(digits: np.ndarray) -> None:
    model = load_checkpoint(SHIPPED_WEIGHTS).model
    predictor = Predictor(model, torch.device("cpu"))
    assert predictor.precision == "float32"
    with torch.no_grad():
        want = model.reconstruct(torch.from_numpy(digits[:64]).unsqueeze(1)).numpy()
    np.testing.assert_allclose(predictor.run(Op.RECONSTRUCT, digits[:64])[0], want, atol=1e-6)


def test_cpu_bfloat16_support_is_a_plain_answer() -> None:
    assert isinstance(cpu_has_bfloat16(), bool)
