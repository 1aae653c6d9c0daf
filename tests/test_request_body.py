"""service.request_body: request bodies to model-ready arrays (most cases run through the API in
test_api*.py; these call it directly)."""

from __future__ import annotations

import base64
import io
import json
import warnings
from functools import partial
from typing import Any

import numpy as np
import pytest
from PIL import Image

from service import request_body
from service.codecs.images import decode_image, decode_images
from service.errors import InvalidInput
from service.settings import Settings
from tests.conftest import image_file


def test_json_numbers_past_float32_are_refused_without_runtime_warnings() -> None:
    body = b'{"images": [[' + b",".join([b"[" + b",".join([b"1e39"] * 28) + b"]"] * 28) + b"]]}"
    limits: dict[str, Any] = {"size": 28, "max_pixels": 10**6, "resize": False}
    decode, decode_batch = partial(decode_image, **limits), partial(decode_images, **limits)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # numpy's "overflow encountered in cast" would land in the logs
        with pytest.raises(InvalidInput, match=r"contain NaN or infinity|must be in"):
            request_body._json_images(body, Settings(), decode, decode_batch, size=28, resize=False)


def _json(items: list[object]) -> bytes:
    return json.dumps({"images": items}).encode()


def test_json_items_of_both_kinds_decode_as_each_alone() -> None:
    """All base64 strings go to decode_images as one batch; pixel lists mixed with strings go item
    by item; either way each image comes out as it would alone."""
    limits: dict[str, Any] = {"size": 28, "max_pixels": 10**6, "resize": False}
    decode, decode_batch = partial(decode_image, **limits), partial(decode_images, **limits)
    digits = np.random.default_rng(0).integers(0, 256, (3, 28, 28), dtype=np.uint8)
    encoded = [base64.b64encode(image_file(d)).decode() for d in digits]
    rgb = io.BytesIO()
    Image.fromarray(digits[2]).convert("RGB").save(rgb, "PNG")  # Pillow's path, among libspng's
    strings = [*encoded[:2], base64.b64encode(rgb.getvalue()).decode()]
    want = digits.astype(np.float32) / np.float32(255)

    def read(items: list[Any]) -> np.ndarray:
        return request_body._json_images(_json(items), Settings(), decode, decode_batch, size=28, resize=False)

    np.testing.assert_array_equal(read(strings), want)
    np.testing.assert_array_equal(read([encoded[0], (digits[1] / 255).tolist(), encoded[2]]), want)
    with pytest.raises(InvalidInput, match=r"^images\[1\]: not valid base64"):
        read([encoded[0], "****", encoded[2]])
