from __future__ import annotations

import io

import numpy as np
import orjson
import pytest
from PIL import Image

from service.errors import NotAcceptable
from service.responses import OutputFormat, choose_format, render_images, render_latents
from service.scoring import Scores
from service.wire import ANOMALY_HEADER, MSE_HEADER, NOVELTY_HEADER, PERCENTILE_HEADER, QUANTILE_HEADER


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
    percentile = np.array([12.5, 99.25, 100.0], np.float32)
    novelty = np.array([-9.5, 3.25, 12.0], np.float32)
    scores = Scores(mse=mse, novelty=novelty, percentile=percentile, anomaly=percentile > 99, quantile=0.99)
    body = orjson.loads(render_images(images, OutputFormat.json, scores=scores).body)
    assert body["shape"] == [3, 1, 28, 28] and body["dtype"] == "float32"
    np.testing.assert_allclose(np.array(body["data"], np.float32), images)
    np.testing.assert_allclose(body["mse"], mse)
    assert body["percentile"] == [12.5, 99.25, 100.0] and body["anomaly"] == [False, True, True]
    assert body["anomaly_quantile"] == 0.99 and body["novelty"] == [-9.5, 3.25, 12.0]

    npy = render_images(images, OutputFormat.npy, scores=scores)
    np.testing.assert_array_equal(np.load(io.BytesIO(npy.body)), images)
    assert npy.headers[MSE_HEADER] == "0.1,0.2,0.3"
    assert npy.headers[PERCENTILE_HEADER] == "12.5,99.25,100" and npy.headers[ANOMALY_HEADER] == "false,true,true"
    assert npy.headers[QUANTILE_HEADER] == "0.99" and npy.headers[NOVELTY_HEADER] == "-9.5,3.25,12"

    # an uncalibrated model: the MSE alone, and the JSON says plainly that there is no decision
    bare = Scores(mse=mse, novelty=None, percentile=None, anomaly=None, quantile=None)
    body = orjson.loads(render_images(images, OutputFormat.json, scores=bare).body)
    assert body["percentile"] is None and body["anomaly"] is None and body["anomaly_quantile"] is None
    assert body["novelty"] is None, "a model without a novelty head"
    headers = render_images(images, OutputFormat.png, scores=bare).headers
    assert MSE_HEADER in headers and PERCENTILE_HEADER not in headers and ANOMALY_HEADER not in headers
    assert NOVELTY_HEADER not in headers

    # an error map: squared errors as an array, an RGB heatmap of the absolute error as PNG
    errors = np.zeros((2, 1, 28, 28), np.float32)
    errors[1, 0, 10:20, 10:20] = 0.25  # an absolute error of 0.5 in a square
    heat = Image.open(io.BytesIO(render_images(errors, OutputFormat.png, heatmap=True).body))
    assert heat.mode == "RGB" and heat.size == (2 * 28 + 2, 28)
    pixels = np.asarray(heat)
    assert (pixels[:, :28] == pixels[0, 0]).all() and pixels[0, 0].sum() < 10  # no error: black
    assert pixels[15, 30 + 15].sum() > 200  # the square shows

    one = Image.open(io.BytesIO(render_images(images[:1], OutputFormat.png).body))
    assert one.size == (28, 28) and one.mode == "L"
    grid = Image.open(io.BytesIO(render_images(images, OutputFormat.png).body))
    assert grid.size == (2 * 28 + 2, 2 * 28 + 2)
    mosaic = Image.open(io.BytesIO(render_latents(np.ones((1, 16, 7, 7), np.float32), OutputFormat.png).body))
    assert mosaic.size == (31, 31)
