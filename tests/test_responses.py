from __future__ import annotations

import io

import numpy as np
import orjson
import pytest
from PIL import Image

from service.errors import NotAcceptable
from service.responses import OutputFormat, choose_format, render_images, render_latents
from service.wire import MSE_HEADER


@pytest.mark.parametrize(
    ("accept", "expected"),
    [
        (None, OutputFormat.json),
        ("*/*", OutputFormat.json),
        ("image/png", OutputFormat.png),
        ("application/x-npy", OutputFormat.npy),
        ("text/html,application/xhtml+xml,*/*;q=0.8", OutputFormat.json),  # a browser
        ("image/png;q=0.5, application/x-npy", OutputFormat.npy),
        ("image/*", OutputFormat.png),
        ("application/json;q=0, image/png", OutputFormat.png),
    ],
)
def test_accept_negotiation(accept: str | None, expected: OutputFormat) -> None:
    assert choose_format(None, accept) is expected


def test_format_parameter_wins_and_unsatisfiable_accept_is_406() -> None:
    assert choose_format(OutputFormat.npy, "image/png") is OutputFormat.npy
    with pytest.raises(NotAcceptable, match="text/html"):
        choose_format(None, "text/html")


def test_render_formats() -> None:
    images = np.random.default_rng(0).random((3, 1, 28, 28), dtype=np.float32)
    mse = np.array([0.1, 0.2, 0.3], np.float32)
    body = orjson.loads(render_images(images, OutputFormat.json, mse=mse).body)
    assert body["shape"] == [3, 1, 28, 28] and body["dtype"] == "float32"
    np.testing.assert_allclose(np.array(body["data"], np.float32), images)
    np.testing.assert_allclose(body["mse"], mse)

    npy = render_images(images, OutputFormat.npy, mse=mse)
    np.testing.assert_array_equal(np.load(io.BytesIO(npy.body)), images)
    assert npy.headers[MSE_HEADER] == "0.1,0.2,0.3"

    one = Image.open(io.BytesIO(render_images(images[:1], OutputFormat.png).body))
    assert one.size == (28, 28) and one.mode == "L"
    grid = Image.open(io.BytesIO(render_images(images, OutputFormat.png).body))
    assert grid.size == (2 * 28 + 2, 2 * 28 + 2)
    mosaic = Image.open(io.BytesIO(render_latents(np.ones((1, 16, 7, 7), np.float32), OutputFormat.png).body))
    assert mosaic.size == (31, 31)
