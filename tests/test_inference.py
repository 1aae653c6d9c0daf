"""The predictor: numpy batches in, numpy arrays out (the CPU layers: tests/test_fast_layers.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from service.checkpoint import load_checkpoint
from service.codecs.images import unit_float
from service.inference import SMALLEST_CPU_LAYERS_BATCH, Op, Predictor
from tests.conftest import SHIPPED_WEIGHTS


@pytest.fixture(scope="module")
def predictor() -> Predictor:
    return Predictor(load_checkpoint(SHIPPED_WEIGHTS).model, torch.device("cpu"))


@pytest.mark.parametrize("n", [1, SMALLEST_CPU_LAYERS_BATCH, 40])
def test_uint8_images_are_their_unit_floats_bit_for_bit(predictor: Predictor, n: int) -> None:
    """Single PNGs reach the predictor as uint8 intensities; it scales them exactly as the image
    codec would have, so the answer does not depend on where the scaling happened."""
    pixels = np.random.default_rng(n).integers(0, 256, (n, 28, 28), dtype=np.uint8)
    pixels[0].flat[:256] = np.arange(256)  # every value a byte can hold
    for op in (Op.ENCODE, Op.RECONSTRUCT):
        for got, want in zip(predictor.run(op, pixels), predictor.run(op, unit_float(pixels)), strict=True):
            assert got.dtype == np.float32
            np.testing.assert_array_equal(got, want)
