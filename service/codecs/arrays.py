"""Arrays from any input format -> the model's inputs, with every shape, dtype and range check.

Images come out as (N,size,size) float32 in [0,1]; latents as (N,C,h,w) float32, finite.
"""

from __future__ import annotations

import numpy as np

from service.codecs.images import resize_array, unit_float
from service.errors import InvalidInput, PayloadTooLarge

# decoding latents far outside anything the encoder produces only yields saturated noise;
# the bound keeps the arithmetic finite (the trained encoder's codes stay well under 100)
LATENT_ABS_LIMIT = 1e4


def check_count(n: int, *, max_items: int, noun: str) -> None:
    if n < 1:
        raise InvalidInput(f"no {noun} in the request")
    if n > max_items:
        raise PayloadTooLarge(f"{n} {noun} in one request, over the limit of {max_items}")


def images_from_array(array: np.ndarray, *, size: int, resize: bool, max_images: int) -> np.ndarray:
    """(H,W), (N,H,W) or (N,1,H,W) of uint8 0..255 or floats in [0,1] -> (N,size,size) float32."""
    if array.ndim == 4 and array.shape[1] == 1:
        array = array[:, 0]
    elif array.ndim == 2:
        array = array[None]
    if array.ndim != 3:
        raise InvalidInput(f"image array has shape {array.shape}; expected (28,28), (N,28,28) or (N,1,28,28)")
    check_count(array.shape[0], max_items=max_images, noun="images")
    images = unit_range(array, what="image values")
    if images.shape[1:] != (size, size):
        if not resize:
            raise InvalidInput(
                f"images are {images.shape[2]}x{images.shape[1]}, expected {size}x{size}; "
                "add ?resize=true to scale them"
            )
        if min(images.shape[1:]) < 1:
            raise InvalidInput(f"images of shape {images.shape[1:]} cannot be resized")
        images = np.stack([resize_array(img, size) for img in images])
    return images


def unit_range(array: np.ndarray, *, what: str) -> np.ndarray:
    """uint8 -> /255; floats must be finite and in [0,1]. Returns float32 (a copy, writable)."""
    if array.dtype == np.uint8:
        return unit_float(array)  # the same floats as a PNG's pixels, bit for bit
    if array.dtype.kind != "f":
        raise InvalidInput(f"{what} have dtype {array.dtype}; send uint8 (0..255) or float32 ([0,1])")
    if array.size:
        if not np.isfinite(array).all():
            raise InvalidInput(f"{what} contain NaN or infinity")
        low, high = float(array.min()), float(array.max())
        if low < 0.0 or high > 1.0:
            hint = "; for 0..255 pixels divide by 255, or send uint8 .npy" if 1.0 < high <= 255.0 and low >= 0 else ""
            raise InvalidInput(f"{what} must be in [0, 1]; got min {low:g}, max {high:g}{hint}")
    return array.astype(np.float32)


def latents_from_array(array: np.ndarray, *, latent_shape: tuple[int, int, int], max_latents: int) -> np.ndarray:
    """(C,h,w) or (N,C,h,w) finite floats -> (N,C,h,w) float32."""
    if array.ndim == 3:
        array = array[None]
    if array.ndim != 4 or tuple(array.shape[1:]) != latent_shape:
        dims = ",".join(map(str, latent_shape))
        raise InvalidInput(f"latents have shape {array.shape}; expected ({dims}) or (N,{dims})")
    check_count(array.shape[0], max_items=max_latents, noun="latents")
    if array.dtype.kind not in "fiu":
        raise InvalidInput(f"latents have dtype {array.dtype}; send float32")
    if not np.isfinite(array).all():
        raise InvalidInput("latents contain NaN or infinity")
    if array.size and float(np.abs(array).max()) > LATENT_ABS_LIMIT:
        raise InvalidInput(f"latent values must lie within ±{LATENT_ABS_LIMIT:g}")
    latents = array.astype(np.float32)  # safe: bounded above
    return latents
