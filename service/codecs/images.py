"""Encoded images (PNG, JPEG, anything Pillow reads) <-> (H,W) float32 arrays in [0,1].

Decoding checks the declared size from the header *before* any pixel data is decoded,
so a tiny file that declares a huge image (a decompression bomb) costs nothing.

The common case, an 8-bit grayscale PNG of exactly the model's size (what MNIST digits are),
is decoded by libspng through pyspng when it is installed: about 4 µs instead of Pillow's ~20,
most of which is Pillow's Python-level chunk parsing (docs/decisions.md). Anything
else, and anything libspng refuses, goes to Pillow, which decodes it or words the error.
"""

from __future__ import annotations

import io
import math
import struct
from collections.abc import Iterable

import numpy as np
from PIL import Image, UnidentifiedImageError

from service.errors import InvalidInput, PayloadTooLarge, UnsupportedMediaType

try:  # an optional speed-up, installed where wheels exist (x86_64 Linux, macOS: see pyproject.toml)
    import pyspng
except ImportError:  # pragma: no cover - exercised where no wheel exists
    pyspng = None

# modes holding 16- or 32-bit integer intensities; Pillow's convert("L") would clip them
_WIDE_INT_MODES = {"I;16": 65535, "I;16B": 65535, "I;16L": 65535, "I;16N": 65535, "I": 65535}
_ALPHA_MODES = {"RGBA", "LA", "PA", "RGBa", "La"}


def decode_image(data: bytes, *, size: int, max_pixels: int, resize: bool, what: str) -> np.ndarray:
    """Decode one encoded image to its (size,size) float32 intensities in [0,1], a white digit on black.

    Colour becomes luminance (ITU-R 601-2, as Pillow's "L"); transparent pixels count as black;
    16-bit images keep their full range. Anything not ``size`` x ``size`` is refused unless
    ``resize`` is set. ``what`` names the image in error messages ("images[3]", "part 'file'").
    """
    if not data:
        raise InvalidInput(f"{what}: empty image")
    pixels = _plain_gray_png(data, size)
    if pixels is not None:
        return unit_float(pixels)
    return decode_with_pillow(data, size=size, max_pixels=max_pixels, resize=resize, what=what)


def decode_images(items: Iterable[tuple[bytes, str]], *, size: int, max_pixels: int, resize: bool) -> np.ndarray:
    """Decode ``(data, what)`` pairs into one (N,size,size) float32 batch, each image exactly as
    :func:`decode_image` would (the first bad one raises, in order).

    The plain grayscale PNGs land as uint8 rows of one array, scaled to [0,1] in one pass at the
    end: a 256-file form then costs libspng's decoding and little else.
    """
    pairs = list(items)
    pixels = np.empty((len(pairs), size, size), dtype=np.uint8)
    others: dict[int, np.ndarray] = {}  # row -> what Pillow made of it, already float32
    for row, (data, what) in enumerate(pairs):
        if not data:
            raise InvalidInput(f"{what}: empty image")
        plain = _plain_gray_png(data, size)
        if plain is not None:
            pixels[row] = plain
        else:
            others[row] = decode_with_pillow(data, size=size, max_pixels=max_pixels, resize=resize, what=what)
    batch = unit_float(pixels)
    for row, image in others.items():
        batch[row] = image
    return batch


def unit_float(pixels: np.ndarray) -> np.ndarray:
    """uint8 intensities -> a new float32 array in [0,1] (float32 is returned as it is).

    The one scaling of 8-bit pixels: both image decoders, uint8 ``.npy`` bodies and training
    (``training.evaluate.images_to_float``) go through it, so they all see the same floats."""
    if pixels.dtype != np.uint8:
        return pixels
    gray = pixels.astype(np.float32)
    gray /= np.float32(255)
    return gray


_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _plain_gray_png(data: bytes, size: int) -> np.ndarray | None:
    """An 8-bit grayscale, non-interlaced, ``size`` x ``size`` PNG without transparency, decoded
    by libspng to (size,size) uint8; None for anything else (or if libspng refuses it), for Pillow."""
    if pyspng is None or len(data) < 33 or not data.startswith(_PNG_SIGNATURE) or data[12:16] != b"IHDR":
        return None
    width, height, depth, color_type, _, _, interlace = struct.unpack_from(">IIBBBBB", data, 16)
    # b"tRNS" anywhere (even by chance inside compressed data) sends the image to Pillow, which
    # composites transparency; that is only ever slower, never wrong
    if (width, height, depth, color_type, interlace) != (size, size, 8, 0, 0) or b"tRNS" in data:
        return None
    try:
        pixels: np.ndarray = pyspng.load(data, format="L")
    except RuntimeError:  # truncated, corrupt, bad CRC...: Pillow decides and explains
        return None
    if pixels.shape != (size, size) or pixels.dtype != np.uint8:  # pragma: no cover - libspng contract
        return None
    return pixels


def decode_with_pillow(data: bytes, *, size: int, max_pixels: int, resize: bool, what: str) -> np.ndarray:
    """:func:`decode_image` for every format and mode Pillow reads."""
    try:
        image = Image.open(io.BytesIO(data))  # reads the header only
    except Image.DecompressionBombError as exc:
        raise PayloadTooLarge(f"{what}: image declares more pixels than the limit of {max_pixels}: {exc}") from None
    except UnidentifiedImageError:
        raise UnsupportedMediaType(f"{what}: not an image Pillow can decode (PNG, JPEG, BMP, ...)") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise UnsupportedMediaType(f"{what}: unreadable image header: {exc}") from exc
    with image:
        width, height = image.size
        if width < 1 or height < 1:
            raise InvalidInput(f"{what}: image is {width}x{height}; it must be {size}x{size}")
        if width * height > max_pixels:
            raise PayloadTooLarge(
                f"{what}: image declares {width}x{height} = {width * height} pixels, over the limit of {max_pixels}"
            )
        if (width, height) != (size, size) and not resize:
            raise InvalidInput(
                f"{what}: image is {width}x{height}, expected {size}x{size}; add ?resize=true to scale it"
            )
        try:
            image.load()
            gray = _to_gray(image)
        except (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError) as exc:
            raise UnsupportedMediaType(f"{what}: corrupt or truncated {image.format or 'image'}: {exc}") from exc
    if gray.shape != (size, size):
        gray = resize_array(gray, size)
    return gray


def _to_gray(image: Image.Image) -> np.ndarray:
    """Any Pillow mode -> (H,W) float32 in [0,1]."""
    mode = image.mode
    if mode == "L":  # MNIST's own mode: no conversion; scaled as libspng's pixels are
        return unit_float(np.asarray(image))
    if mode in _WIDE_INT_MODES:
        values = np.asarray(image, dtype=np.float64)
        if values.min() < 0 or values.max() > _WIDE_INT_MODES[mode]:
            raise ValueError(f"{mode} pixel values outside 0..{_WIDE_INT_MODES[mode]}")
        return (values / _WIDE_INT_MODES[mode]).astype(np.float32)
    if mode == "F":
        values = np.asarray(image, dtype=np.float32)
        if not np.isfinite(values).all() or values.min() < 0 or values.max() > 1:
            raise ValueError("floating-point image values must be finite and in [0, 1]")
        return values
    if mode in _ALPHA_MODES or "transparency" in image.info:
        rgba = image.convert("RGBA")
        luminance = np.asarray(rgba.convert("L"), dtype=np.float32)
        alpha = np.asarray(rgba.getchannel("A"), dtype=np.float32)
        return luminance * alpha / (255.0 * 255.0)  # composited over black
    if mode not in ("L", "1", "P", "RGB"):
        image = image.convert("RGB")  # CMYK, YCbCr, LAB, HSV, ...
    return np.asarray(image.convert("L"), dtype=np.float32) / 255.0


def resize_array(gray: np.ndarray, size: int) -> np.ndarray:
    """(H,W) float in [0,1] -> (size,size), antialiased (Lanczos) when shrinking."""
    image = Image.fromarray(np.ascontiguousarray(gray, dtype=np.float32), mode="F")
    resized = image.resize((size, size), Image.Resampling.LANCZOS)
    return np.clip(np.asarray(resized, dtype=np.float32), 0.0, 1.0)


# --- encoding ------------------------------------------------------------------------------------


def to_uint8(images: np.ndarray) -> np.ndarray:
    """Float intensities in [0,1] -> uint8 0..255, rounded."""
    return np.clip(np.rint(images * 255.0), 0, 255).astype(np.uint8)


def png_bytes(gray: np.ndarray) -> bytes:
    """(H,W) float in [0,1] -> an 8-bit grayscale PNG."""
    buffer = io.BytesIO()
    Image.fromarray(to_uint8(gray), mode="L").save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


# a black -> purple -> red -> yellow -> white ramp (close to matplotlib's "inferno"), 256 entries:
# a zero error stays black, a large one shows bright whatever the digit
_HEAT_STOPS = np.array([(0, 0, 4), (87, 16, 110), (188, 55, 84), (249, 142, 9), (252, 255, 164)], dtype=np.float64)
_HEAT_LUT = (
    np.stack(
        [np.interp(np.linspace(0, 1, 256), np.linspace(0, 1, len(_HEAT_STOPS)), _HEAT_STOPS[:, c]) for c in range(3)],
        axis=1,
    )
    .round()
    .astype(np.uint8)
)  # (256,3)


def heatmap_png_bytes(values: np.ndarray) -> bytes:
    """(H,W) float in [0,1] -> an 8-bit RGB PNG through a fixed colour map (0 black, 1 pale yellow)."""
    buffer = io.BytesIO()
    Image.fromarray(_HEAT_LUT[to_uint8(values)], mode="RGB").save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def tile(images: np.ndarray, *, columns: int | None = None, gap: int = 2, fill: float = 0.5) -> np.ndarray:
    """(N,H,W) -> one (rows*(H+gap)-gap, cols*(W+gap)-gap) picture, row-major, separated by gray lines."""
    n, h, w = images.shape
    cols = columns or math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    canvas = np.full((rows * (h + gap) - gap, cols * (w + gap) - gap), fill, dtype=np.float32)
    for i in range(n):
        r, c = divmod(i, cols)
        canvas[r * (h + gap) : r * (h + gap) + h, c * (w + gap) : c * (w + gap) + w] = images[i]
    return canvas


def latent_picture(latent: np.ndarray) -> np.ndarray:
    """(16,7,7) latent code -> a 4x4 mosaic of its channels, each scaled by the code's own maximum.

    Latents follow a ReLU, so they are >= 0; dividing by the maximum maps them onto [0,1].
    """
    peak = float(latent.max())
    scaled = latent / peak if peak > 0 else np.zeros_like(latent)
    return tile(np.clip(scaled, 0.0, 1.0), columns=math.ceil(math.sqrt(latent.shape[0])), gap=1)
