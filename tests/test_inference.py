"""The predictor: numpy batches in, numpy arrays out, as the model as trained computes them."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from service import scoring
from service.checkpoint import load_checkpoint
from service.inference import Op, Predictor
from tests.conftest import SHIPPED_WEIGHTS


@pytest.fixture(scope="module")
def predictor() -> Predictor:
    return Predictor(load_checkpoint(SHIPPED_WEIGHTS).model, torch.device("cpu"))


# channels-last convolutions and the folded upsampling sum in another order than the model as
# trained: float rounding, a few 1e-6 on noise images (and 1/100 of a PNG grey level at worst)
TOLERANCE = 5e-6


@pytest.mark.parametrize("n", [1, 7, 40])
def test_every_operation_is_the_trained_models_up_to_rounding(predictor: Predictor, n: int) -> None:
    model = load_checkpoint(SHIPPED_WEIGHTS).model.eval()
    images = np.random.default_rng(n).random((n, 28, 28), dtype=np.float32)
    x = torch.from_numpy(images).unsqueeze(1)
    with torch.no_grad():
        latents, recon = model.encode(x), model.reconstruct(x)
        novelty = scoring.novelty(model.novelty_logits(model.en(x)))
        decoded = model.decode_images(latents)
    (got_latents,) = predictor.run(Op.ENCODE, images)
    got_recon, got_mse, got_novelty, got_percentile, got_outlying = predictor.run(Op.RECONSTRUCT, images)
    (got_decoded,) = predictor.run(Op.DECODE, latents.numpy())
    for got in (got_latents, got_recon, got_mse, got_novelty, got_percentile, got_decoded):
        assert got.dtype == np.float32 and got.shape[0] == n and got.flags.c_contiguous
    assert np.isnan(got_percentile).all() and not got_outlying.any(), "no calibration given to this predictor"
    np.testing.assert_allclose(got_novelty, novelty.numpy(), atol=1e-4, rtol=1e-5)
    np.testing.assert_allclose(got_latents, latents.numpy(), atol=TOLERANCE, rtol=1e-6)  # codes reach ~10
    np.testing.assert_allclose(got_recon, recon.numpy(), atol=TOLERANCE, rtol=0)
    np.testing.assert_allclose(got_decoded, decoded.numpy(), atol=TOLERANCE, rtol=0)
    np.testing.assert_allclose(got_mse, ((recon - x) ** 2).flatten(1).mean(1).numpy(), atol=1e-7, rtol=0)


def test_rows_do_not_depend_on_their_batch(predictor: Predictor) -> None:
    """The batcher answers each request with its own rows of a shared pass: they must be what the
    request alone would have got."""
    images = np.random.default_rng(0).random((33, 28, 28), dtype=np.float32)
    alone = np.concatenate([predictor.run(Op.RECONSTRUCT, images[i : i + 1])[0] for i in range(len(images))])
    np.testing.assert_allclose(predictor.run(Op.RECONSTRUCT, images)[0], alone, atol=TOLERANCE, rtol=0)
