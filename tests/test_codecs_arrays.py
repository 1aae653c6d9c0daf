from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from service.codecs.arrays import LATENT_ABS_LIMIT, images_from_array, latents_from_array
from service.errors import InvalidInput, PayloadTooLarge

KW: dict[str, Any] = {"size": 28, "resize": False, "max_images": 8}


@pytest.mark.parametrize("shape", [(28, 28), (3, 28, 28), (3, 1, 28, 28)])
def test_accepted_image_shapes(shape: tuple[int, ...]) -> None:
    array = np.random.default_rng(0).random(shape, dtype=np.float32)
    out = images_from_array(array, **KW)
    assert out.shape == (1 if len(shape) == 2 else 3, 28, 28) and out.dtype == np.float32
    np.testing.assert_array_equal(out.reshape(-1), array.reshape(-1))


def test_uint8_is_scaled_to_unit_range() -> None:
    out = images_from_array(np.full((28, 28), 255, np.uint8), **KW)
    assert out.max() == 1.0 and out.dtype == np.float32


@pytest.mark.parametrize(
    ("value", "message"),
    [(np.nan, "NaN or infinity"), (np.inf, "NaN or infinity"), (-0.1, r"\[0, 1\]"), (1.5, "divide by 255")],
)
def test_bad_values_are_refused(value: float, message: str) -> None:
    array = np.zeros((28, 28), np.float32)
    array[3, 4] = value
    with pytest.raises(InvalidInput, match=message):
        images_from_array(array, **KW)


@pytest.mark.parametrize("dtype", ["int64", "bool", "complex64", "uint16"])
def test_other_dtypes_are_refused(dtype: str) -> None:
    with pytest.raises(InvalidInput, match="dtype"):
        images_from_array(np.zeros((28, 28), dtype=dtype), **KW)


def test_float64_within_range_is_accepted() -> None:
    assert images_from_array(np.full((28, 28), 0.5), **KW).dtype == np.float32


@pytest.mark.parametrize("shape", [(784,), (2, 2, 28, 28), (1, 2, 3, 28, 28), (28, 27)])
def test_wrong_shapes_are_refused(shape: tuple[int, ...]) -> None:
    with pytest.raises(InvalidInput):
        images_from_array(np.zeros(shape, np.float32), **KW)


def test_resize_scales_other_sizes() -> None:
    out = images_from_array(np.ones((2, 56, 56), np.float32), **{**KW, "resize": True})
    assert out.shape == (2, 28, 28)
    np.testing.assert_allclose(out, 1.0, atol=1e-5)


def test_image_count_limits() -> None:
    with pytest.raises(InvalidInput, match="no images"):
        images_from_array(np.zeros((0, 28, 28), np.float32), **KW)
    with pytest.raises(PayloadTooLarge, match="9 images in one request, over the limit of 8"):
        images_from_array(np.zeros((9, 28, 28), np.float32), **KW)


def test_latents() -> None:
    shape = (16, 7, 7)
    assert latents_from_array(np.ones(shape), latent_shape=shape, max_latents=4).shape == (1, 16, 7, 7)
    assert latents_from_array(np.ones((3, *shape)), latent_shape=shape, max_latents=4).shape == (3, 16, 7, 7)
    with pytest.raises(InvalidInput, match=r"expected \(16,7,7\) or \(N,16,7,7\)"):
        latents_from_array(np.ones((16, 7, 8)), latent_shape=shape, max_latents=4)
    with pytest.raises(PayloadTooLarge):
        latents_from_array(np.ones((5, *shape)), latent_shape=shape, max_latents=4)
    bad = np.ones(shape)
    bad[0, 0, 0] = np.nan
    with pytest.raises(InvalidInput, match="NaN"):
        latents_from_array(bad, latent_shape=shape, max_latents=4)
    with pytest.raises(InvalidInput, match="within"):
        latents_from_array(np.full(shape, 1e300), latent_shape=shape, max_latents=4)
    with pytest.raises(InvalidInput, match="within"):
        latents_from_array(np.full(shape, LATENT_ABS_LIMIT * 2), latent_shape=shape, max_latents=4)
