"""service.request_body: request bodies to model-ready arrays (most cases run through the API in
test_api*.py; these call it directly)."""

from __future__ import annotations

import warnings
from functools import partial

import pytest

from service import request_body
from service.codecs.images import decode_image
from service.errors import InvalidInput
from service.settings import Settings


def test_json_numbers_past_float32_are_refused_without_runtime_warnings() -> None:
    body = b'{"images": [[' + b",".join([b"[" + b",".join([b"1e39"] * 28) + b"]"] * 28) + b"]]}"
    decode = partial(decode_image, size=28, max_pixels=10**6, resize=False, fast_png=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # numpy's "overflow encountered in cast" would land in the logs
        with pytest.raises(InvalidInput, match=r"contain NaN or infinity|must be in"):
            request_body._json_images(body, Settings(), decode, size=28, resize=False)
