from __future__ import annotations

import io
from typing import Any

import numpy as np
import pytest
from PIL import Image

from service.codecs import images
from service.codecs.images import (
    decode_image,
    decode_images,
    decode_with_pillow,
    latent_picture,
    png_bytes,
    tile,
    unit_float,
)
from service.errors import InvalidInput, PayloadTooLarge, UnsupportedMediaType
from tests.conftest import png_declaring

LIMITS: dict[str, Any] = {"size": 28, "max_pixels": 1_000_000, "resize": False, "what": "img"}


def encode(image: Image.Image, fmt: str = "PNG", **kwargs: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **kwargs)
    return buffer.getvalue()


def digit(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (28, 28), dtype=np.uint8)


def test_grayscale_png_decodes_exactly() -> None:
    pixels = digit()
    out = decode_image(encode(Image.fromarray(pixels)), **LIMITS)
    assert out.dtype == np.float32 and out.shape == (28, 28)
    np.testing.assert_array_equal(out, pixels / np.float32(255))


def test_unit_float_scales_uint8_and_passes_floats_through() -> None:
    every_value = np.arange(256, dtype=np.uint8)
    np.testing.assert_array_equal(unit_float(every_value), every_value.astype(np.float32) / np.float32(255))
    floats = np.linspace(0, 1, 5, dtype=np.float32)
    assert unit_float(floats) is floats


needs_pyspng = pytest.mark.skipif(images.pyspng is None, reason="pyspng is not installed here")  # type: ignore[attr-defined]


@needs_pyspng
@pytest.mark.parametrize("options", [{}, {"optimize": True}, {"compress_level": 0}, {"compress_level": 9}])
def test_the_libspng_path_gives_pillows_floats_bit_for_bit(options: dict[str, Any]) -> None:
    for seed in range(20):
        pixels = digit(seed)
        pixels[: seed % 28] = 0  # runs of zeros: the encoder picks different row filters
        data = encode(Image.fromarray(pixels), **options)
        fast = images._plain_gray_png(data, 28)
        assert fast is not None, "a plain 8-bit grayscale PNG takes the libspng path"
        np.testing.assert_array_equal(fast, pixels)
        np.testing.assert_array_equal(decode_image(data, **LIMITS), decode_with_pillow(data, **LIMITS))


@needs_pyspng
def test_only_plain_grayscale_pngs_of_the_right_size_take_the_libspng_path() -> None:
    gray = Image.fromarray(digit())
    assert images._plain_gray_png(encode(gray), 28) is not None
    transparent = encode(gray, transparency=0)  # a tRNS chunk: Pillow composites it
    others = {
        "transparency": transparent,
        "rgb": encode(gray.convert("RGB")),
        "16-bit": encode(Image.fromarray(np.zeros((28, 28), np.uint16))),
        "other size": encode(Image.fromarray(np.zeros((29, 28), np.uint8))),
        "jpeg": encode(gray, "JPEG"),
        "truncated": encode(gray)[:60],
    }
    for name, data in others.items():
        assert images._plain_gray_png(data, 28) is None, name
    # and transparency still counts as black through decode_image
    assert decode_image(transparent, **LIMITS)[np.asarray(gray) == 0].max() == 0


def test_a_batch_decodes_as_its_images_one_by_one() -> None:
    """decode_images, which multipart forms use: plain PNGs scaled together, the rest by Pillow,
    every row exactly what decode_image gives for it, in order."""
    gray = Image.fromarray(digit(1))
    mixed = [
        encode(gray),
        encode(gray.convert("RGB")),  # Pillow
        encode(Image.fromarray(digit(2)), compress_level=0),
        encode(gray, transparency=0),  # Pillow: composited
        encode(Image.fromarray(digit(3)), "JPEG", quality=90),  # Pillow
        encode(Image.fromarray(digit(4))),
    ]
    limits = {k: v for k, v in LIMITS.items() if k != "what"}
    batch = decode_images(((data, f"file {i}") for i, data in enumerate(mixed)), **limits)
    assert batch.dtype == np.float32 and batch.shape == (6, 28, 28)
    for row, data in zip(batch, mixed, strict=True):
        np.testing.assert_array_equal(row, decode_image(data, **LIMITS))


def test_a_batch_stops_at_its_first_bad_image_and_names_it() -> None:
    good = encode(Image.fromarray(digit()))
    limits = {k: v for k, v in LIMITS.items() if k != "what"}
    with pytest.raises(InvalidInput, match=r"^file 1: empty image"):
        decode_images([(good, "file 0"), (b"", "file 1"), (b"junk", "file 2")], **limits)
    with pytest.raises(UnsupportedMediaType, match="file 2"):
        decode_images([(good, "file 0"), (good, "file 1"), (b"junk", "file 2")], **limits)
    assert decode_images([], **limits).shape == (0, 28, 28)


def test_rgb_becomes_luminance() -> None:
    rgb = np.zeros((28, 28, 3), dtype=np.uint8)
    rgb[..., 0] = 255  # pure red
    out = decode_image(encode(Image.fromarray(rgb)), **LIMITS)
    np.testing.assert_allclose(out, 76 / 255, atol=1 / 255)  # ITU-R 601-2: 0.299 * 255


def test_transparent_pixels_count_as_black() -> None:
    rgba = np.full((28, 28, 4), 255, dtype=np.uint8)
    rgba[:14, :, 3] = 0  # top half fully transparent
    out = decode_image(encode(Image.fromarray(rgba, "RGBA")), **LIMITS)
    assert out[:14].max() == 0 and out[14:].min() == 1


def test_sixteen_bit_png_keeps_its_range() -> None:
    values = np.linspace(0, 65535, 28 * 28).astype(np.uint16).reshape(28, 28)
    out = decode_image(encode(Image.fromarray(values)), **LIMITS)
    np.testing.assert_allclose(out, values / 65535, atol=1e-6)


@pytest.mark.parametrize("mode", ["P", "1", "CMYK", "LA", "I", "F"])
def test_other_modes_decode_to_unit_range(mode: str) -> None:
    image = Image.fromarray(digit()).convert(mode)
    if mode == "F":
        image = Image.fromarray(digit().astype(np.float32) / 255, "F")
    fmt = "TIFF" if mode in ("CMYK", "F", "I") else "PNG"
    out = decode_image(encode(image, fmt), **LIMITS)
    assert out.shape == (28, 28) and out.min() >= 0 and out.max() <= 1


def test_jpeg_decodes() -> None:
    out = decode_image(encode(Image.fromarray(digit()), "JPEG", quality=95), **LIMITS)
    assert out.shape == (28, 28)


def test_wrong_size_is_refused_unless_resize() -> None:
    big = encode(Image.fromarray(np.zeros((56, 40), np.uint8)))
    with pytest.raises(InvalidInput, match=r"img: image is 40x56, expected 28x28; add \?resize=true"):
        decode_image(big, **LIMITS)
    assert decode_image(big, **{**LIMITS, "resize": True}).shape == (28, 28)


def test_one_pixel_wide_image_is_refused() -> None:
    with pytest.raises(InvalidInput, match="1x28"):
        decode_image(encode(Image.fromarray(np.zeros((28, 1), np.uint8))), **LIMITS)


def test_decompression_bomb_is_refused_from_the_header_alone() -> None:
    bomb = png_declaring(100_000, 100_000)
    assert len(bomb) < 200
    with pytest.raises(PayloadTooLarge, match=r"over the limit|more pixels than the limit"):
        decode_image(bomb, **{**LIMITS, "resize": True})
    with pytest.raises(PayloadTooLarge, match="over the limit of 1000000"):
        decode_image(png_declaring(2000, 2000), **{**LIMITS, "resize": True})


def test_truncated_and_corrupt_images_are_415() -> None:
    good = encode(Image.fromarray(digit()))
    with pytest.raises(UnsupportedMediaType, match="img: corrupt or truncated PNG"):
        decode_image(good[: len(good) // 2], **LIMITS)
    corrupt = bytearray(good)
    corrupt[40:60] = b"\xff" * 20
    with pytest.raises(UnsupportedMediaType):
        decode_image(bytes(corrupt), **LIMITS)
    with pytest.raises(UnsupportedMediaType, match="not an image"):
        decode_image(b"hello, this is not an image", **LIMITS)
    with pytest.raises(InvalidInput, match="empty"):
        decode_image(b"", **LIMITS)


def test_png_round_trip_and_tiling() -> None:
    pixels = digit()
    again = decode_image(png_bytes(pixels / 255.0), **LIMITS)
    np.testing.assert_allclose(again, pixels / 255.0, atol=0.5 / 255 + 1e-7)
    grid = tile(np.ones((5, 28, 28)), gap=2)
    assert grid.shape == (2 * 28 + 2, 3 * 28 + 4)
    mosaic = latent_picture(np.random.default_rng(0).random((16, 7, 7)).astype(np.float32))
    assert mosaic.shape == (4 * 7 + 3, 4 * 7 + 3) and mosaic.max() == pytest.approx(1.0)
    assert latent_picture(np.zeros((16, 7, 7), np.float32)).max() <= 0.5  # all-zero code: no division by 0
