"""Rolling out a checkpoint while serving: POST /admin/reload and SIGHUP (service/reload.py)."""

from __future__ import annotations

import asyncio
import io
import json
import os
import signal
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch

from service.checkpoint import load_checkpoint, metadata_path_for, save_checkpoint
from service.inference import Op, Predictor
from service.model import AutoEncoder, ModelConfig
from tests.conftest import TINY_CALIBRATION, in_process, npy, service_settings
from tests.harness import start_server, stop_server, wait_until

pytestmark = pytest.mark.anyio

KEY = "s3cret-key"
AUTH = {"authorization": f"Bearer {KEY}"}
IMAGES = np.random.default_rng(7).integers(0, 256, (5, 28, 28), dtype=np.uint8)


def new_checkpoint(path: Path, seed: int, config: ModelConfig | None = None) -> Path:
    torch.manual_seed(seed)
    save_checkpoint(AutoEncoder(config).eval(), path, metrics={"test_mse": 0.1})
    return path


def expected(path: Path) -> np.ndarray:
    """The reconstructions ``path``'s model gives IMAGES, as the service computes them."""
    checkpoint = load_checkpoint(path)
    return Predictor(checkpoint.model, torch.device("cpu")).run(Op.RECONSTRUCT, IMAGES.astype(np.float32) / 255)[0]


async def reconstruct(client: httpx.AsyncClient) -> np.ndarray:
    response = await client.post(
        "/reconstruct",
        content=npy(IMAGES),
        headers={"content-type": "application/x-npy", "accept": "application/x-npy", **AUTH},
    )
    assert response.status_code == 200, response.text
    return np.load(io.BytesIO(response.content))


@pytest.fixture
async def keyed(tiny_checkpoint: Path, tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    settings = service_settings(tiny_checkpoint, api_key=KEY, checkpoint_dir=tmp_path / "rollouts")
    async with in_process(settings) as (_, client):
        yield client


async def sha256(client: httpx.AsyncClient) -> str:
    return str((await client.get("/model", headers=AUTH)).json()["checkpoint_sha256"])


async def test_a_checkpoint_from_the_allowed_directory_is_rolled_out(keyed: httpx.AsyncClient, tmp_path: Path) -> None:
    before = await sha256(keyed)
    new = new_checkpoint(tmp_path / "rollouts" / "v2" / "autoencoder.safetensors", seed=2)
    response = await keyed.post("/admin/reload", json={"checkpoint": "v2"}, headers=AUTH)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["previous_sha256"] == before and body["sha256"] == load_checkpoint(new).sha256 != before
    assert await sha256(keyed) == body["sha256"]
    np.testing.assert_allclose(await reconstruct(keyed), expected(new), atol=1e-6)
    # new_checkpoint has no calibration: the decisions go with the model they were made for
    assert (await keyed.get("/model", headers=AUTH)).json()["calibration"] is None
    scored = await keyed.post(
        "/reconstruct", content=npy(IMAGES), headers={"content-type": "application/x-npy", **AUTH}
    )
    assert scored.json()["anomaly"] is None
    metrics = (await keyed.get("/metrics")).text
    assert 'mnist_ae_model_reloads_total{outcome="loaded"} 1.0' in metrics


async def test_without_a_body_the_configured_checkpoint_is_read_again(
    tiny_checkpoint: Path, keyed: httpx.AsyncClient
) -> None:
    new_checkpoint(tiny_checkpoint, seed=3)  # replaced in place, as on a volume
    response = await keyed.post("/admin/reload", headers=AUTH)
    assert response.status_code == 200, response.text
    assert response.json()["sha256"] == load_checkpoint(tiny_checkpoint).sha256
    np.testing.assert_allclose(await reconstruct(keyed), expected(tiny_checkpoint), atol=1e-6)


def _tamper(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))


def _bad_calibration(path: Path) -> None:
    new_checkpoint(path, 7)
    metadata = json.loads(metadata_path_for(path).read_text())
    metadata["calibration"] = {**TINY_CALIBRATION.to_dict(), "digits": [0, 12]}
    metadata_path_for(path).write_text(json.dumps(metadata))


def _nan(path: Path) -> None:
    model = AutoEncoder().eval()
    with torch.no_grad():
        model.de[0].weight[0, 0, 0, 0] = float("nan")  # type: ignore[operator]
    save_checkpoint(model, path)


@pytest.mark.parametrize(
    ("make", "says"),
    [
        (lambda path: (new_checkpoint(path, 4), _tamper(path)), "does not match"),  # type: ignore[func-returns-value]
        (lambda path: new_checkpoint(path, 5, ModelConfig(hidden_channels=4)), "does not match the expected"),
        (_nan, "non-finite"),
        (lambda path: (new_checkpoint(path, 6), metadata_path_for(path).write_text("{")), "not valid JSON"),
        (_bad_calibration, "bad calibration"),
    ],
    ids=["tampered", "other-architecture", "nan", "bad-metadata", "bad-calibration"],
)
async def test_a_bad_checkpoint_is_refused_and_the_old_one_serves_on(
    keyed: httpx.AsyncClient, tmp_path: Path, make: object, says: str
) -> None:
    before, answers = await sha256(keyed), await reconstruct(keyed)
    path = tmp_path / "rollouts" / "bad" / "autoencoder.safetensors"
    path.parent.mkdir(parents=True)
    make(path)  # type: ignore[operator]
    response = await keyed.post("/admin/reload", json={"checkpoint": "bad"}, headers=AUTH)
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["code"] == "invalid_checkpoint" and says in error["message"] and before in error["message"]
    assert await sha256(keyed) == before
    np.testing.assert_array_equal(await reconstruct(keyed), answers)
    assert 'mnist_ae_model_reloads_total{outcome="refused"} 1.0' in (await keyed.get("/metrics")).text


@pytest.mark.parametrize("name", ["no-such-run", "0" * 300])  # a name longer than any file system holds
async def test_a_missing_checkpoint_is_not_found_and_the_old_one_serves_on(keyed: httpx.AsyncClient, name: str) -> None:
    before = await sha256(keyed)
    response = await keyed.post("/admin/reload", json={"checkpoint": name}, headers=AUTH)
    assert response.status_code == 404, response.text
    error = response.json()["error"]
    assert (
        error["code"] == "checkpoint_not_found" and "file not found" in error["message"] and before in error["message"]
    )
    assert await sha256(keyed) == before


@pytest.mark.parametrize("name", ["x\u0000y", "run\n1", "\u007f"])
async def test_a_name_with_control_characters_is_refused_plainly(keyed: httpx.AsyncClient, name: str) -> None:
    """A NUL byte once reached the path check and answered 500 (embedded null byte)."""
    response = await keyed.post("/admin/reload", json={"checkpoint": name}, headers=AUTH)
    assert response.status_code == 422, response.text
    assert response.json()["error"]["code"] == "invalid_input"


@pytest.mark.parametrize(("name", "status"), [("../../etc", 403), ("/etc/passwd", 403)])
async def test_only_the_allowed_directory_is_read(keyed: httpx.AsyncClient, name: str, status: int) -> None:
    response = await keyed.post("/admin/reload", json={"checkpoint": name}, headers=AUTH)
    assert response.status_code == status and "outside the allowed directory" in response.json()["error"]["message"]


async def test_reload_needs_the_key_and_a_key_configured(tiny_checkpoint: Path, keyed: httpx.AsyncClient) -> None:
    assert (await keyed.post("/admin/reload")).status_code == 401
    assert (await keyed.post("/admin/reload", json={"checkpoint": 3}, headers=AUTH)).status_code == 422
    async with in_process(service_settings(tiny_checkpoint)) as (_, open_client):
        refused = await open_client.post("/admin/reload")
    assert refused.status_code == 403 and "SIGHUP" in refused.json()["error"]["message"]


async def test_no_request_fails_while_a_checkpoint_is_rolled_out(keyed: httpx.AsyncClient, tmp_path: Path) -> None:
    """Requests keep coming through the swap: every one is answered 200, by the old model or the new."""
    new = new_checkpoint(tmp_path / "rollouts" / "v3" / "autoencoder.safetensors", seed=8)
    old_answer = await reconstruct(keyed)
    new_answer = expected(new)
    stop, answered = asyncio.Event(), asyncio.Event()
    answers: list[np.ndarray] = []

    async def client() -> None:
        while not stop.is_set():
            answers.append(await reconstruct(keyed))
            answered.set()

    async def until_answered(count: int) -> None:
        while len(answers) < count:
            answered.clear()
            await answered.wait()

    clients = [asyncio.create_task(client()) for _ in range(8)]
    await until_answered(16)  # under load before the swap
    response = await keyed.post("/admin/reload", json={"checkpoint": "v3"}, headers=AUTH)
    await until_answered(len(answers) + 16)  # and after it
    stop.set()
    await asyncio.gather(*clients)  # reconstruct() asserts each answer's 200
    assert response.status_code == 200, response.text
    assert len(answers) >= 32
    for answer in answers:
        assert np.allclose(answer, old_answer, atol=1e-6) or np.allclose(answer, new_answer, atol=1e-6)
    np.testing.assert_allclose(answers[-1], new_answer, atol=1e-6)


@pytest.mark.integration
def test_sighup_rolls_out_the_configured_checkpoint(tmp_path: Path) -> None:
    path = new_checkpoint(tmp_path / "served" / "autoencoder.safetensors", seed=9)
    server = start_server(tmp_path / "log", {"MNIST_AE_CHECKPOINT": str(path)})
    try:
        before = httpx.get(f"{server.url}/model").json()["checkpoint_sha256"]
        new_checkpoint(path, seed=10)
        want = load_checkpoint(path).sha256
        os.kill(server.process.pid, signal.SIGHUP)
        wait_until(lambda: httpx.get(f"{server.url}/model").json()["checkpoint_sha256"] == want, "the roll-out")
        assert want != before
        response = httpx.post(
            f"{server.url}/reconstruct",
            content=npy(IMAGES),
            headers={"content-type": "application/x-npy", "accept": "application/x-npy"},
        )
        np.testing.assert_allclose(np.load(io.BytesIO(response.content)), expected(path), atol=1e-6)
        # a bad file on SIGHUP: refused, logged, and the server serves on
        metadata_path_for(path).write_text(json.dumps({"format": "nonsense"}))
        os.kill(server.process.pid, signal.SIGHUP)
        wait_until(lambda: any("roll-out refused" in line for line in server.log_lines()), "the refusal logged")
        assert httpx.get(f"{server.url}/model").json()["checkpoint_sha256"] == want
    finally:
        stop_server(server)
