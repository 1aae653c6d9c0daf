"""Anomaly decisions over HTTP, in-process: the fields in every format, the quantile setting and
its per-request override, the error map, /model, the metrics, and uncalibrated checkpoints."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import torch
from PIL import Image

from service.calibration import Calibration
from service.checkpoint import save_checkpoint
from service.client import AsyncAutoencoderClient
from service.model import AutoEncoder, ModelConfig
from service.wire import ANOMALY_HEADER, MSE_HEADER, PERCENTILE_HEADER, QUANTILE_HEADER
from tests.conftest import TINY_CALIBRATION, image_file, in_process, npy, service_settings

pytestmark = pytest.mark.anyio

IMAGES = np.random.default_rng(7).integers(0, 256, (4, 28, 28), dtype=np.uint8)
NPY: dict[str, Any] = {"content": npy(IMAGES), "headers": {"content-type": "application/x-npy"}}


async def scores(client: httpx.AsyncClient, **params: object) -> dict[str, Any]:
    response = await client.post("/reconstruct", params=params, **NPY)  # type: ignore[arg-type]
    assert response.status_code == 200, response.text
    body: dict[str, list[object]] = response.json()
    return body


@pytest.fixture
def centred_checkpoint(tmp_path: Path, random_model: AutoEncoder) -> Path:
    """The random model, calibrated so that IMAGES[0] lands at the 75th percentile of "normal"."""
    x = torch.from_numpy(IMAGES[:1].astype(np.float32) / 255)[:, None]
    with torch.no_grad():
        mse = float((random_model.reconstruct(x) - x).pow(2).mean())
    normal = np.linspace(0, mse / 0.75, 10001)  # evenly spread: mse is the 75th percentile
    calibration = Calibration.from_scores(normal, np.arange(10001) % 10, split="validation")
    path = tmp_path / "centred" / "autoencoder.safetensors"
    save_checkpoint(random_model, path, calibration=calibration)
    return path


async def test_reconstruct_answers_mse_percentile_and_a_decision(api: httpx.AsyncClient) -> None:
    body = await scores(api)
    mse = np.array(body["mse"], dtype=np.float32)
    percentile = TINY_CALIBRATION.mse.percentiles(mse)  # a model without a novelty head decides on its MSE
    np.testing.assert_allclose(body["percentile"], percentile, atol=1e-4)
    expected = [p > 99 or p <= 0 for p in percentile]
    assert body["anomaly"] == expected and body["anomaly_quantile"] == 0.99 and body["novelty"] is None


async def test_the_fields_ride_in_headers_for_png_and_npy(api: httpx.AsyncClient) -> None:
    json_body = await scores(api)
    for fmt in ("png", "npy"):
        response = await api.post("/reconstruct", params={"format": fmt}, **NPY)
        assert response.status_code == 200
        headers = response.headers
        np.testing.assert_allclose([float(v) for v in headers[MSE_HEADER].split(",")], json_body["mse"], rtol=1e-5)
        percentiles = [float(v) for v in headers[PERCENTILE_HEADER].split(",")]
        np.testing.assert_allclose(percentiles, json_body["percentile"], atol=0.01)
        assert [v == "true" for v in headers[ANOMALY_HEADER].split(",")] == json_body["anomaly"]
        assert headers[QUANTILE_HEADER] == "0.99"


async def test_anomaly_quantile_moves_the_threshold(centred_checkpoint: Path) -> None:
    async with in_process(service_settings(centred_checkpoint)) as (app, api):
        first = await scores(api)
        assert first["percentile"][0] == pytest.approx(75, abs=0.05)
        assert first["anomaly"][0] is False  # 75th percentile < the default 0.99
        assert (await scores(api, anomaly_quantile=0.7))["anomaly"][0] is True
        assert (await scores(api, anomaly_quantile=0.8))["anomaly"][0] is False
        # the client's way of asking, and the decision in its result
        async with AsyncAutoencoderClient("http://testserver", transport=httpx.ASGITransport(app=app)) as client:
            result = await client.reconstruct(IMAGES[:1], anomaly_quantile=0.7)
            assert result.anomaly is not None and result.anomaly.tolist() == [True]
            assert result.percentile is not None and result.percentile[0] == pytest.approx(75, abs=0.05)
            assert result.anomaly_quantile == 0.7
            assert (await client.reconstruct(IMAGES[:1])).anomaly_quantile == 0.99
    # the server's default, set by the operator
    async with in_process(service_settings(centred_checkpoint, anomaly_quantile=0.7)) as (_, api):
        body = await scores(api)
        assert body["anomaly"][0] is True and body["anomaly_quantile"] == 0.7
        info = (await api.get("/model")).json()["calibration"]
        assert info["anomaly_quantile"] == 0.7 and info["threshold"] == pytest.approx(body["mse"][0] * 0.7 / 0.75)


@pytest.mark.parametrize("value", ["0.3", "1", "0.9999", "-1", "nan", "inf", "abc"])
async def test_a_bad_anomaly_quantile_is_a_clear_422(api: httpx.AsyncClient, value: str) -> None:
    response = await api.post("/reconstruct", params={"anomaly_quantile": value}, **NPY)
    assert response.status_code == 422, response.text
    assert response.json()["error"]["code"] == "invalid_input"
    assert "anomaly_quantile" in response.json()["error"]["message"]


async def test_the_error_map_as_array_and_as_heatmap(api: httpx.AsyncClient) -> None:
    recon = np.load(io.BytesIO((await api.post("/reconstruct", params={"format": "npy"}, **NPY)).content))
    response = await api.post("/reconstruct", params={"format": "npy", "error_map": "true"}, **NPY)
    errors = np.load(io.BytesIO(response.content))
    x = (IMAGES.astype(np.float32) / 255)[:, None]
    np.testing.assert_allclose(errors, (recon - x) ** 2, atol=1e-6)
    mse = [float(v) for v in response.headers[MSE_HEADER].split(",")]
    np.testing.assert_allclose(errors.reshape(4, -1).mean(axis=1), mse, rtol=1e-4)  # the map averages to the score
    png = await api.post(
        "/reconstruct",
        params={"format": "png", "error_map": "true"},
        content=image_file(IMAGES[0]),
        headers={"content-type": "image/png"},
    )
    picture = Image.open(io.BytesIO(png.content))
    assert picture.mode == "RGB" and picture.size == (28, 28) and ANOMALY_HEADER in png.headers
    body = (await api.post("/reconstruct", params={"error_map": "true"}, **NPY)).json()
    np.testing.assert_allclose(np.array(body["data"]), errors, atol=1e-6)
    assert len(body["anomaly"]) == 4


async def test_model_shows_the_calibration_and_the_threshold(api: httpx.AsyncClient) -> None:
    info = (await api.get("/model")).json()["calibration"]
    assert info["normal_digits"] == list(range(10)) and info["split"] == "validation" and info["images"] == 1001
    assert info["anomaly_quantile"] == 0.99
    assert info["decision_score"] == "mse" and info["version"] == 2
    assert info["threshold"] == pytest.approx(TINY_CALIBRATION.threshold(0.99))
    assert info["scores"]["mse"]["p99"] == pytest.approx(0.199)  # evenly spread over [0.1, 0.2]
    assert set(info["scores"]["mse"]["per_digit"]) == {str(d) for d in range(10)}
    assert info["normal_mse_range"] == [0.1, 0.2]


async def test_the_metrics_count_scores_and_flags(centred_checkpoint: Path) -> None:
    async with in_process(service_settings(centred_checkpoint)) as (_, api):
        flagged = 0
        for quantile in (0.7, 0.8, 0.7):
            flagged += sum(bool(v) for v in (await scores(api, anomaly_quantile=quantile))["anomaly"])
        await scores(api)  # at the default
        text = (await api.get("/metrics")).text
        assert f"mnist_ae_anomalies_flagged_total {float(flagged)}" in text
        assert "mnist_ae_reconstruction_mse_count 16.0" in text  # 4 requests of 4 images
        assert 'mnist_ae_reconstruction_mse_bucket{le="0.5"}' in text


async def test_an_uncalibrated_model_says_so(uncalibrated_checkpoint: Path) -> None:
    async with in_process(service_settings(uncalibrated_checkpoint)) as (_, api):
        body = await scores(api)
        assert len(body["mse"]) == 4
        assert body["percentile"] is None and body["anomaly"] is None and body["anomaly_quantile"] is None
        npy_answer = await api.post("/reconstruct", params={"format": "npy"}, **NPY)
        assert MSE_HEADER in npy_answer.headers and ANOMALY_HEADER not in npy_answer.headers
        refused = await api.post("/reconstruct", params={"anomaly_quantile": "0.9"}, **NPY)
        assert refused.status_code == 422 and "no calibration" in refused.json()["error"]["message"]
        assert "training.calibrate" in refused.json()["error"]["message"]
        assert (await api.get("/model")).json()["calibration"] is None
        assert "mnist_ae_anomalies_flagged_total 0.0" in (await api.get("/metrics")).text


async def test_a_one_class_model_serves_like_any_other(tmp_path: Path) -> None:
    """The dense-bottleneck variant trained on 3s: (8,1,1) codes both ways, its digits in /model."""
    torch.manual_seed(3)
    model = AutoEncoder(ModelConfig(code_size=8)).eval()
    calibration = Calibration.from_scores(np.linspace(0.01, 0.05, 500), np.full(500, 3), split="validation")
    path = tmp_path / "threes" / "autoencoder.safetensors"
    save_checkpoint(model, path, training={"digits": [3], "code_size": 8}, calibration=calibration)
    async with in_process(service_settings(path)) as (_, api):
        info = (await api.get("/model")).json()
        assert info["latent_shape"] == [8, 1, 1] and info["calibration"]["normal_digits"] == [3]
        assert set(info["calibration"]["images_per_digit"]) == {"3"}
        codes = np.load(io.BytesIO((await api.post("/encode", params={"format": "npy"}, **NPY)).content))
        assert codes.shape == (4, 8, 1, 1)
        decoded = await api.post(
            "/decode", params={"format": "npy"}, content=npy(codes), headers={"content-type": "application/x-npy"}
        )
        recon = np.load(io.BytesIO((await api.post("/reconstruct", params={"format": "npy"}, **NPY)).content))
        np.testing.assert_allclose(np.load(io.BytesIO(decoded.content)), recon, atol=1e-6)
        body = await scores(api)
        assert len(body["anomaly"]) == 4 and body["anomaly_quantile"] == 0.99
        png = await api.post("/encode", params={"format": "png"}, **NPY)
        assert png.status_code == 200 and png.headers["content-type"] == "image/png"
