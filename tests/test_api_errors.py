"""Bad input of every kind gets a clear 4xx JSON error, and the server keeps answering correctly."""

from __future__ import annotations

import base64
import io
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image

from tests.conftest import image_file, in_process, npy, png_declaring, service_settings

pytestmark = pytest.mark.anyio

DIGIT = np.random.default_rng(0).integers(0, 256, (28, 28), dtype=np.uint8)
GOOD_PNG = image_file(DIGIT)
NPY = {"content-type": "application/x-npy"}
PNG = {"content-type": "image/png"}


def npy_header(shape: tuple[int, ...], dtype: str = "<f4", fortran: bool = False) -> bytes:
    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(buffer, {"descr": dtype, "fortran_order": fortran, "shape": shape})
    return buffer.getvalue()


def image_with_mode(mode: str, size: tuple[int, int] = (28, 28), fmt: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, size).save(buffer, format=fmt)
    return buffer.getvalue()


def pickled_npy() -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, np.array([{"x": 1}], dtype=object), allow_pickle=True)
    return buffer.getvalue()


# (id, method, path, request kwargs, status, error code, a fragment of the message)
CASES: list[tuple[str, str, str, dict[str, Any], int, str, str]] = [
    # bodies and content types
    ("empty-body-png", "POST", "/encode", {"content": b"", "headers": PNG}, 400, "malformed_body", "empty"),
    (
        "empty-body-json",
        "POST",
        "/reconstruct",
        {"content": b"", "headers": {"content-type": "application/json"}},
        400,
        "malformed_body",
        "empty",
    ),
    ("no-content-type", "POST", "/encode", {"content": GOOD_PNG}, 415, "unsupported_media_type", "no Content-Type"),
    (
        "text-plain",
        "POST",
        "/reconstruct",
        {"content": b"hello", "headers": {"content-type": "text/plain"}},
        415,
        "unsupported_media_type",
        "'text/plain' is not supported",
    ),
    ("form-urlencoded", "POST", "/encode", {"data": {"a": "b"}}, 415, "unsupported_media_type", "urlencoded"),
    (
        "png-to-decode",
        "POST",
        "/decode",
        {"content": GOOD_PNG, "headers": PNG},
        415,
        "unsupported_media_type",
        "application/json, application/x-npy",
    ),
    # broken images
    (
        "truncated-png",
        "POST",
        "/encode",
        {"content": GOOD_PNG[:60], "headers": PNG},
        415,
        "unsupported_media_type",
        "truncated",
    ),
    (
        "corrupt-png",
        "POST",
        "/encode",
        {"content": GOOD_PNG[:40] + b"\xff" * 30 + GOOD_PNG[70:], "headers": PNG},
        415,
        "unsupported_media_type",
        "body",
    ),
    (
        "text-as-png",
        "POST",
        "/reconstruct",
        {"content": b"definitely not a png", "headers": PNG},
        415,
        "unsupported_media_type",
        "not an image",
    ),
    (
        "zip-as-jpeg",
        "POST",
        "/reconstruct",
        {"content": b"PK\x03\x04" + b"\0" * 100, "headers": {"content-type": "image/jpeg"}},
        415,
        "unsupported_media_type",
        "not an image",
    ),
    (
        "decompression-bomb",
        "POST",
        "/encode",
        {"content": png_declaring(60000, 60000), "headers": PNG, "params": {"resize": "true"}},
        413,
        "payload_too_large",
        "pixels",
    ),
    (
        "bomb-over-setting",
        "POST",
        "/encode",
        {"content": png_declaring(3000, 3000), "headers": PNG, "params": {"resize": "true"}},
        413,
        "payload_too_large",
        "over the limit",
    ),
    (
        "zero-by-zero-png",
        "POST",
        "/encode",
        {"content": png_declaring(0, 0), "headers": PNG},
        415,
        "unsupported_media_type",
        "not an image",
    ),
    (
        "wrong-size-png",
        "POST",
        "/encode",
        {"content": image_with_mode("L", (32, 32)), "headers": PNG},
        422,
        "invalid_input",
        "32x32, expected 28x28",
    ),
    (
        "one-by-n-png",
        "POST",
        "/encode",
        {"content": image_with_mode("L", (1, 28)), "headers": PNG},
        422,
        "invalid_input",
        "1x28",
    ),
    (
        "multipart-empty-file-field",
        "POST",
        "/encode",
        {"data": {"file": "digit.png"}, "files": {"x": ("", b"")}},
        422,
        "invalid_input",
        "no image files in the multipart form",
    ),
    (
        "multipart-text-field-only",
        "POST",
        "/encode",
        {
            "content": b'--b\r\nContent-Disposition: form-data; name="file"\r\n\r\ndigit.png\r\n--b--\r\n',
            "headers": {"content-type": "multipart/form-data; boundary=b"},
        },
        422,
        "invalid_input",
        "-F 'file=@digit.png'",
    ),
    (
        "multipart-no-boundary",
        "POST",
        "/encode",
        {"content": b"xx", "headers": {"content-type": "multipart/form-data"}},
        400,
        "malformed_body",
        "multipart",
    ),
    (
        "multipart-bad-file",
        "POST",
        "/reconstruct",
        {"files": [("file", ("a.png", GOOD_PNG, "image/png")), ("file", ("b.png", b"garbage", "image/png"))]},
        415,
        "unsupported_media_type",
        "file 1 (b.png)",
    ),
    # JSON
    (
        "json-syntax",
        "POST",
        "/encode",
        {"content": b"{not json", "headers": {"content-type": "application/json"}},
        400,
        "malformed_body",
        "not valid JSON",
    ),
    (
        "json-deep-nesting",
        "POST",
        "/reconstruct",
        {
            "content": b'{"images": ' + b"[" * 20_000 + b"]" * 20_000 + b"}",
            "headers": {"content-type": "application/json"},
        },
        400,
        "malformed_body",
        "recursion",
    ),
    ("json-wrong-key", "POST", "/encode", {"json": {"imgs": []}}, 422, "invalid_input", "images: Field required"),
    ("json-not-object", "POST", "/encode", {"json": [1, 2]}, 422, "invalid_input", "object"),
    ("json-empty-list", "POST", "/encode", {"json": {"images": []}}, 422, "invalid_input", "at least 1"),
    (
        "json-string-pixels",
        "POST",
        "/encode",
        {"json": {"images": [[["0.5"] * 28] * 28]}},
        422,
        "invalid_input",
        "images[0][0][0]: Input should be a valid number",
    ),
    (
        "json-bool-pixels",
        "POST",
        "/encode",
        {"json": {"images": [[[True] * 28] * 28]}},
        422,
        "invalid_input",
        "valid number",
    ),
    (
        "json-nan",
        "POST",
        "/reconstruct",
        {"content": b'{"images": [[[NaN]]]}', "headers": {"content-type": "application/json"}},
        422,
        "invalid_input",
        "finite number",
    ),
    (
        "json-huge-number",
        "POST",
        "/reconstruct",
        {"content": b'{"images": [[[1e999]]]}', "headers": {"content-type": "application/json"}},
        422,
        "invalid_input",
        "finite number",
    ),
    (
        "json-huge-integer",
        "POST",
        "/reconstruct",
        {"content": b'{"images": [[[' + b"9" * 400 + b"]]]}", "headers": {"content-type": "application/json"}},
        422,
        "invalid_input",
        "images[0][0][0]",
    ),
    ("json-negative", "POST", "/encode", {"json": {"images": [[[-0.5] * 28] * 28]}}, 422, "invalid_input", "[0, 1]"),
    (
        "json-over-one",
        "POST",
        "/encode",
        {"json": {"images": [[[255] * 28] * 28]}},
        422,
        "invalid_input",
        "divide by 255",
    ),
    (
        "json-ragged",
        "POST",
        "/encode",
        {"json": {"images": [[[0.1] * 28] * 27 + [[0.1] * 3]]}},
        422,
        "invalid_input",
        "images[0]: rows have different lengths",
    ),
    (
        "json-wrong-size",
        "POST",
        "/encode",
        {"json": {"images": [[[0.1] * 20] * 20]}},
        422,
        "invalid_input",
        "20x20, expected 28x28",
    ),
    (
        "json-bad-base64",
        "POST",
        "/encode",
        {"json": {"images": ["***not base64***"]}},
        422,
        "invalid_input",
        "images[0]: not valid base64",
    ),
    (
        "json-base64-not-image",
        "POST",
        "/encode",
        {"json": {"images": [base64.b64encode(b"hello").decode()]}},
        415,
        "unsupported_media_type",
        "images[0]: not an image",
    ),
    ("json-number-item", "POST", "/encode", {"json": {"images": [5]}}, 422, "invalid_input", "images[0]"),
    (
        "json-extra-field",
        "POST",
        "/encode",
        {"json": {"images": [DIGIT.tolist()], "x": 1}},
        422,
        "invalid_input",
        "Extra inputs",
    ),
    # .npy
    (
        "npy-garbage",
        "POST",
        "/encode",
        {"content": b"\x93NUMPYgarbage", "headers": NPY},
        400,
        "malformed_body",
        "not a valid .npy",
    ),
    (
        "npy-pickled-objects",
        "POST",
        "/encode",
        {"content": pickled_npy(), "headers": NPY},
        422,
        "invalid_input",
        "pickled .npy data is never loaded",
    ),
    (
        "npy-complex",
        "POST",
        "/encode",
        {"content": npy(np.zeros((28, 28), np.complex64)), "headers": NPY},
        422,
        "invalid_input",
        "complex64",
    ),
    (
        "npy-int64",
        "POST",
        "/encode",
        {"content": npy(np.zeros((28, 28), np.int64)), "headers": NPY},
        422,
        "invalid_input",
        "uint8 (0..255) or float32",
    ),
    (
        "npy-float64-huge",
        "POST",
        "/encode",
        {"content": npy(np.full((28, 28), 1e300)), "headers": NPY},
        422,
        "invalid_input",
        "[0, 1]",
    ),
    (
        "npy-nan",
        "POST",
        "/reconstruct",
        {"content": npy(np.full((28, 28), np.nan, np.float32)), "headers": NPY},
        422,
        "invalid_input",
        "NaN",
    ),
    (
        "npy-inf",
        "POST",
        "/reconstruct",
        {"content": npy(np.full((28, 28), np.inf, np.float32)), "headers": NPY},
        422,
        "invalid_input",
        "NaN or infinity",
    ),
    (
        "npy-negative",
        "POST",
        "/reconstruct",
        {"content": npy(np.full((28, 28), -1, np.float32)), "headers": NPY},
        422,
        "invalid_input",
        "[0, 1]",
    ),
    (
        "npy-over-one",
        "POST",
        "/reconstruct",
        {"content": npy(np.full((28, 28), 2, np.float32)), "headers": NPY},
        422,
        "invalid_input",
        "[0, 1]",
    ),
    (
        "npy-huge-declared-shape",
        "POST",
        "/encode",
        {"content": npy_header((10**9, 28, 28)) + b"\0" * 100, "headers": NPY},
        413,
        "payload_too_large",
        "declares shape",
    ),
    (
        "npy-short-body",
        "POST",
        "/encode",
        {"content": npy(np.zeros((2, 28, 28), np.float32))[:-100], "headers": NPY},
        400,
        "malformed_body",
        "but the body holds",
    ),
    (
        "npy-wrong-shape",
        "POST",
        "/encode",
        {"content": npy(np.zeros((784,), np.float32)), "headers": NPY},
        422,
        "invalid_input",
        "expected (28,28), (N,28,28) or (N,1,28,28)",
    ),
    (
        "npy-zero-images",
        "POST",
        "/encode",
        {"content": npy(np.zeros((0, 28, 28), np.float32)), "headers": NPY},
        422,
        "invalid_input",
        "no images",
    ),
    # batch limits (this app allows 16 images per request)
    (
        "batch-over-limit-npy",
        "POST",
        "/reconstruct",
        {"content": npy(np.zeros((17, 28, 28), np.uint8)), "headers": NPY},
        413,
        "payload_too_large",
        "17 images in one request, over the limit of 16",
    ),
    (
        "batch-over-limit-multipart",
        "POST",
        "/encode",
        {"files": [("file", (f"{i}.png", GOOD_PNG, "image/png")) for i in range(17)]},
        413,
        "payload_too_large",
        "over the limit of 16",
    ),
    (
        "batch-over-limit-json",
        "POST",
        "/encode",
        {"json": {"images": [DIGIT.tolist()] * 17}},
        413,
        "payload_too_large",
        "over the limit of 16",
    ),
    # latents
    (
        "latents-wrong-shape",
        "POST",
        "/decode",
        {"json": {"latents": np.zeros((8, 7, 7)).tolist()}},
        422,
        "invalid_input",
        "expected (16,7,7) or (N,16,7,7)",
    ),
    (
        "latents-wrong-shape-npy",
        "POST",
        "/decode",
        {"content": npy(np.zeros((2, 16, 14, 14), np.float32)), "headers": NPY},
        422,
        "invalid_input",
        "(N,16,7,7)",
    ),
    (
        "latents-ragged",
        "POST",
        "/decode",
        {"json": {"latents": [[[0.0] * 7] * 7] * 15 + [[[0.0] * 6] * 7]}},
        422,
        "invalid_input",
        "uneven",
    ),
    (
        "latents-nan-npy",
        "POST",
        "/decode",
        {"content": npy(np.full((16, 7, 7), np.nan, np.float32)), "headers": NPY},
        422,
        "invalid_input",
        "NaN",
    ),
    (
        "latents-huge",
        "POST",
        "/decode",
        {"json": {"latents": np.full((16, 7, 7), 1e30).tolist()}},
        422,
        "invalid_input",
        "within",
    ),
    (
        "latents-strings",
        "POST",
        "/decode",
        {"json": {"latents": [[["a"] * 7] * 7] * 16}},
        422,
        "invalid_input",
        "valid number",
    ),
    ("latents-missing", "POST", "/decode", {"json": {"images": []}}, 422, "invalid_input", "latents"),
    # query parameters and negotiation
    (
        "bad-format-param",
        "POST",
        "/encode",
        {"content": GOOD_PNG, "headers": PNG, "params": {"format": "gif"}},
        422,
        "invalid_input",
        "format",
    ),
    (
        "bad-resize-param",
        "POST",
        "/encode",
        {"content": GOOD_PNG, "headers": PNG, "params": {"resize": "maybe"}},
        422,
        "invalid_input",
        "resize",
    ),
    (
        "unsatisfiable-accept",
        "POST",
        "/encode",
        {"content": GOOD_PNG, "headers": {**PNG, "accept": "text/html"}},
        406,
        "not_acceptable",
        "text/html",
    ),
    # routing
    ("unknown-path", "GET", "/nope", {}, 404, "not_found", "Not Found"),
    ("wrong-method", "GET", "/encode", {}, 405, "method_not_allowed", "/encode takes POST"),
    # body limits (this app allows 64 KiB)
    (
        "declared-body-too-large",
        "POST",
        "/encode",
        {"content": b"x" * 70_000, "headers": PNG},
        413,
        "payload_too_large",
        "over the limit of 65536 bytes",
    ),
    (
        "bad-content-length",
        "POST",
        "/encode",
        {"content": b"x", "headers": {**PNG, "content-length": "abc"}},
        400,
        "malformed_body",
        "Content-Length",
    ),
]


@pytest.fixture
async def strict_api(tiny_checkpoint: Path) -> Any:
    settings = service_settings(
        tiny_checkpoint, max_images_per_request=16, max_body_bytes=64 * 1024, max_image_pixels=4_000_000 // 4
    )
    async with in_process(settings) as (_, client):
        yield client


@pytest.mark.parametrize(
    ("method", "path", "kwargs", "status", "code", "fragment"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
async def test_bad_input_gets_a_clear_json_error(
    strict_api: httpx.AsyncClient,
    method: str,
    path: str,
    kwargs: dict[str, Any],
    status: int,
    code: str,
    fragment: str,
) -> None:
    response = await strict_api.request(method, path, **kwargs)
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    error = response.json()["error"]
    assert error["code"] == code
    assert fragment in error["message"], error["message"]
    assert "Traceback" not in response.text
    # and the server still serves a correct answer afterwards
    ok = await strict_api.post("/reconstruct", content=GOOD_PNG, headers=PNG)
    assert ok.status_code == 200 and ok.json()["shape"] == [1, 1, 28, 28]


def _image(mode: str, fmt: str = "PNG", **kwargs: Any) -> bytes:
    pixels = np.random.default_rng(1).integers(0, 256, (28, 28, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).convert(mode).save(buffer, format=fmt, **kwargs)
    return buffer.getvalue()


def _sixteen_bit() -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.arange(784, dtype=np.uint16).reshape(28, 28) * 80).save(buffer, format="PNG")
    return buffer.getvalue()


# unusual but valid: converted and answered, never a 4xx or 5xx
UNUSUAL_BUT_VALID = {
    "16-bit-png": ({"content": _sixteen_bit(), "headers": PNG}),
    "rgba-png": ({"content": _image("RGBA"), "headers": PNG}),
    "palette-png": ({"content": _image("P"), "headers": PNG}),
    "cmyk-jpeg": ({"content": _image("CMYK", "JPEG"), "headers": {"content-type": "image/jpeg"}}),
    "grayscale-alpha-png": ({"content": _image("LA"), "headers": PNG}),
    "bilevel-png": ({"content": _image("1"), "headers": PNG}),
    "fortran-order-npy": ({"content": npy(np.asfortranarray(np.zeros((2, 28, 28), np.float32))), "headers": NPY}),
    "big-endian-npy": ({"content": npy(np.zeros((28, 28), ">f4")), "headers": NPY}),
    "float64-npy-in-range": ({"content": npy(np.full((28, 28), 0.5)), "headers": NPY}),
    "jpeg-as-octet-stream": ({"content": _image("L", "JPEG"), "headers": {"content-type": "application/octet-stream"}}),
}


@pytest.mark.parametrize("kwargs", list(UNUSUAL_BUT_VALID.values()), ids=list(UNUSUAL_BUT_VALID))
async def test_unusual_but_valid_inputs_are_converted_and_answered(
    strict_api: httpx.AsyncClient, kwargs: dict[str, Any]
) -> None:
    response = await strict_api.post("/reconstruct", **kwargs)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["shape"][1:] == [1, 28, 28]
    assert all(0 <= v <= 1 for v in np.asarray(body["data"]).ravel())


def test_there_are_enough_cases() -> None:
    assert len(CASES) >= 40
    assert {case[4] for case in CASES} >= {400, 404, 405, 406, 413, 415, 422}


async def test_streamed_body_is_cut_off_at_the_limit(strict_api: httpx.AsyncClient) -> None:
    sent = 0

    async def chunks() -> Any:
        nonlocal sent
        for _ in range(1000):  # would be 1 MB; the limit is 64 KiB
            sent += 1024
            yield b"\0" * 1024

    response = await strict_api.post("/encode", content=chunks(), headers=NPY)  # no Content-Length: chunked
    assert response.status_code == 413
    assert response.json()["error"]["message"] == "body is over the limit of 65536 bytes"
    assert sent < 200 * 1024, "the server stopped reading soon after the limit"
