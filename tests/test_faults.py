"""Faults: a failing batch, clients that vanish, slow drips, SIGTERM under load, bad checkpoints."""

from __future__ import annotations

import asyncio
import io
import json
import signal
import socket
import threading
from pathlib import Path

import httpx
import numpy as np
import pytest
import safetensors.torch

from service.checkpoint import metadata_path_for, save_checkpoint
from service.fileio import sha256_hex
from service.inference import Op, Predictor
from service.model import AutoEncoder, ModelConfig
from tests.conftest import SHIPPED_WEIGHTS, image_file, in_process, npy, service_settings
from tests.harness import start_server, stop_server, wait_until

POISON = 0.123  # a batch holding an image whose first pixel is exactly this makes the model "fail"
NPY = {"content-type": "application/x-npy", "accept": "application/x-npy"}


def images(first_pixel: float, n: int = 1) -> bytes:
    array = np.full((n, 28, 28), 0.5, dtype=np.float32)
    array[:, 0, 0] = first_pixel
    return npy(array)


@pytest.fixture
def failing_predictor(monkeypatch: pytest.MonkeyPatch) -> None:
    real_run = Predictor.run

    def run(self: Predictor, op: Op, batch: np.ndarray) -> tuple[np.ndarray, ...]:
        if op is not Op.DECODE and bool((batch[:, 0, 0] == np.float32(POISON)).any()):
            raise RuntimeError("simulated device failure")
        return real_run(self, op, batch)

    monkeypatch.setattr(Predictor, "run", run)


@pytest.mark.anyio
@pytest.mark.usefixtures("failing_predictor")
async def test_a_failing_batch_fails_only_its_own_requests(tiny_checkpoint: Path) -> None:
    settings = service_settings(tiny_checkpoint, max_batch_images=1)  # every request is a batch of its own
    async with in_process(settings) as (_, client):
        responses = await asyncio.gather(
            *(client.post("/reconstruct", content=images(POISON if i == 3 else 0.25), headers=NPY) for i in range(8))
        )
        statuses = [r.status_code for r in responses]
        assert statuses == [200, 200, 200, 500, 200, 200, 200, 200]
        error = responses[3].json()["error"]
        assert error["code"] == "inference_failed" and "RuntimeError" in error["message"]
        assert "Traceback" not in responses[3].text
        metrics = (await client.get("/metrics")).text
        assert 'mnist_ae_batch_failures_total{op="reconstruct"} 1.0' in metrics


@pytest.mark.anyio
@pytest.mark.usefixtures("failing_predictor")
async def test_everyone_in_the_failing_batch_gets_500_then_the_server_recovers(tiny_checkpoint: Path) -> None:
    settings = service_settings(tiny_checkpoint, max_batch_images=64, max_wait_ms=500)
    async with in_process(settings) as (_, client):
        responses = await asyncio.gather(
            *(client.post("/encode", content=images(POISON if i == 0 else 0.25), headers=NPY) for i in range(4))
        )
        assert {r.status_code for r in responses} <= {200, 500} and responses[0].status_code == 500
        assert all(r.json()["error"]["code"] == "inference_failed" for r in responses if r.status_code == 500)
        after = await client.post("/encode", content=images(0.25), headers=NPY)
        assert after.status_code == 200 and np.load(io.BytesIO(after.content)).shape == (1, 16, 7, 7)


@pytest.mark.anyio
async def test_a_slow_drip_body_times_out(tiny_checkpoint: Path) -> None:
    async with in_process(service_settings(tiny_checkpoint, body_timeout_s=0.3)) as (_, client):

        async def drip():
            yield b"\x93NUMPY"
            await asyncio.sleep(2)
            yield b"never mind"

        response = await client.post("/encode", content=drip(), headers=NPY)
        assert response.status_code == 408
        assert response.json()["error"] == {
            "code": "request_timeout",
            "message": "the request body stalled: no data for 0.3 s",
        }
        assert (await client.post("/encode", content=images(0.25), headers=NPY)).status_code == 200


@pytest.mark.integration
def test_a_slow_drip_over_a_real_socket_times_out(tmp_path: Path) -> None:
    server = start_server(
        tmp_path / "log", {"MNIST_AE_CHECKPOINT": str(SHIPPED_WEIGHTS), "MNIST_AE_BODY_TIMEOUT_S": "1"}
    )
    try:
        host, port = server.url.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port)), timeout=10) as sock:
            sock.sendall(b"POST /encode HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\nContent-Length: 5000\r\n\r\n")
            sock.sendall(b"\x89PNG")  # then nothing more
            chunks = []
            while chunk := sock.recv(4096):  # the server closes the connection after answering
                chunks.append(chunk)
            reply = b"".join(chunks).decode(errors="replace")
        assert reply.startswith("HTTP/1.1 408"), reply
        assert "request_timeout" in reply
        assert httpx.get(f"{server.url}/readyz").status_code == 200
    finally:
        server.process.kill()


@pytest.fixture
def gated_predictor(monkeypatch: pytest.MonkeyPatch) -> tuple[threading.Event, threading.Event]:
    """(running, gate): every forward pass sets ``running``, then waits for ``gate``."""
    running, gate = threading.Event(), threading.Event()
    gate.set()
    real_run = Predictor.run

    def run(self: Predictor, op: Op, batch: np.ndarray) -> tuple[np.ndarray, ...]:
        running.set()
        assert gate.wait(10), "the test never opened the gate"
        return real_run(self, op, batch)

    monkeypatch.setattr(Predictor, "run", run)
    return running, gate


@pytest.mark.anyio
async def test_clients_that_disconnect_mid_batch_do_not_hurt_the_others(
    tiny_checkpoint: Path, gated_predictor: tuple[threading.Event, threading.Event]
) -> None:
    running, gate = gated_predictor
    batch = npy(np.random.default_rng(3).integers(0, 256, (64, 28, 28), dtype=np.uint8))
    # one request per forward pass: the first runs while the others queue behind it
    async with in_process(service_settings(tiny_checkpoint, max_batch_images=64)) as (_, client):
        reference = np.load(io.BytesIO((await client.post("/reconstruct", content=batch, headers=NPY)).content))
        gate.clear()
        running.clear()
        quitters = [asyncio.create_task(client.post("/reconstruct", content=batch, headers=NPY)) for _ in range(4)]
        stayers = [asyncio.create_task(client.post("/reconstruct", content=batch, headers=NPY)) for _ in range(4)]
        assert await asyncio.to_thread(running.wait, 10), "the first quitter's forward pass is running"
        for task in quitters:
            task.cancel()  # their clients go away: the first mid-batch, the others while queued
        gate.set()
        for response in await asyncio.gather(*stayers):
            assert response.status_code == 200
            np.testing.assert_allclose(np.load(io.BytesIO(response.content)), reference, atol=1e-6)
        await asyncio.gather(*quitters, return_exceptions=True)
        assert all(task.cancelled() for task in quitters)
        after = await client.post("/reconstruct", content=batch, headers=NPY)
        assert after.status_code == 200, "the batcher goes on"


@pytest.mark.anyio
async def test_every_response_says_connection_close_while_draining(tiny_checkpoint: Path) -> None:
    """Kept-alive clients must reconnect elsewhere once the drain begins: inference answers, errors
    (one that says so itself included) and FastAPI's routes alike."""
    async with in_process(service_settings(tiny_checkpoint, max_body_bytes=4096)) as (app, client):
        assert "connection" not in (await client.get("/healthz")).headers
        app.state.service.draining = True
        responses = [
            await client.get("/healthz"),
            await client.get("/readyz"),
            await client.post("/reconstruct", content=images(0.5), headers=NPY),
            await client.post("/encode", content=b"x" * 8192, headers=NPY),  # 413, which closes anyway
            await client.get("/no-such-page"),
        ]
    assert [r.status_code for r in responses] == [200, 503, 200, 413, 404]
    assert all(r.headers["connection"] == "close" for r in responses), [r.headers for r in responses]


class KeptAliveLoad:
    """Clients posting PNGs to /reconstruct over kept-alive connections until stopped, and what
    became of each request: answered (its status; for those sent once ``marked`` is set, whether
    the answer said ``Connection: close``), never answered, or refused before it was sent."""

    def __init__(self, url: str, bodies: list[bytes]) -> None:
        self.url, self.bodies = url, bodies
        self.statuses: list[int] = []
        self.closing: list[bool] = []
        self.unanswered: list[str] = []
        self.refused = 0
        self.marked, self.stop, self._answered = asyncio.Event(), asyncio.Event(), asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        self._tasks = [asyncio.create_task(self._client(body)) for body in self.bodies]

    async def finish(self) -> None:
        self.stop.set()
        await asyncio.gather(*self._tasks)

    async def until_answered(self, count: int) -> None:
        while len(self.statuses) < count:
            self._answered.clear()
            await self._answered.wait()

    async def _client(self, body: bytes) -> None:
        async with httpx.AsyncClient(base_url=self.url, timeout=30) as client:
            while not self.stop.is_set():
                marked = self.marked.is_set()
                try:
                    response = await client.post("/reconstruct", content=body, headers={"content-type": "image/png"})
                except httpx.ConnectError:
                    self.refused += 1  # the listener has closed: not accepted, so nothing was lost
                    await asyncio.sleep(0.05)
                    continue
                except httpx.TransportError as exc:  # sent, and never answered
                    self.unanswered.append(repr(exc))
                    continue
                if marked:
                    self.closing.append(response.headers.get("connection") == "close")
                self.statuses.append(response.status_code)
                self._answered.set()


@pytest.mark.integration
@pytest.mark.anyio
@pytest.mark.parametrize("workers", [1, 2])
async def test_sigterm_under_keep_alive_load_loses_no_request(
    tmp_path: Path, test_digits: np.ndarray, workers: int
) -> None:
    """8 clients on kept-alive connections, then SIGTERM: served through the grace with
    ``Connection: close``, then stopped. A request can be lost only in the instant its connection
    closes: at most one per client. Refused connections (the listener gone) lose nothing."""
    server = start_server(
        tmp_path / "log",
        {"MNIST_AE_CHECKPOINT": str(SHIPPED_WEIGHTS), "MNIST_AE_DRAIN_GRACE_S": "1.5"},
        command=("-m", "service", "--workers", str(workers)),
    )
    load = KeptAliveLoad(server.url, [image_file(digit) for digit in test_digits[:8]])
    load.start()
    await load.until_answered(64)  # under load
    server.process.send_signal(signal.SIGTERM)

    def drain_began() -> bool:
        return sum("/readyz says 503" in line for line in server.log_lines()) == workers

    await asyncio.to_thread(wait_until, drain_began, "the drain began")
    load.marked.set()
    served_before = len(load.statuses)
    await load.until_answered(served_before + 16)  # served during the grace period
    async with httpx.AsyncClient(base_url=server.url, timeout=5) as probe:
        draining = await probe.get("/readyz")
    assert draining.status_code == 503 and "draining" in draining.json()["error"]["message"]
    exit_code = await asyncio.to_thread(server.process.wait, 30)  # the bound: well within 30 s
    await load.finish()
    # uvicorn finishes its graceful shutdown, then re-raises the signal: "killed by SIGTERM" is a clean exit
    assert exit_code in (0, -signal.SIGTERM)
    assert len(load.statuses) > served_before, "requests kept being served during the grace period"
    assert set(load.statuses) == {200}, "every answered request succeeded"
    assert load.closing and all(load.closing), "Connection: close on every answer during the drain"
    assert len(load.unanswered) <= len(load.bodies), load.unanswered
    stopped = [line for line in server.log_lines() if "stopped (all accepted requests answered)" in line]
    assert len(stopped) == workers


@pytest.mark.integration
@pytest.mark.anyio
async def test_a_sighup_restart_of_the_workers_under_keep_alive_load_loses_no_request(
    tmp_path: Path, test_digits: np.ndarray
) -> None:
    """SIGHUP to the supervisor of 2 workers: each is replaced in turn by a new one, warm before it
    takes a connection, and drains (``Connection: close``) as it goes; at most one request lost
    per client, and none refused with an error."""
    server = start_server(
        tmp_path / "log",
        {"MNIST_AE_CHECKPOINT": str(SHIPPED_WEIGHTS), "MNIST_AE_DRAIN_GRACE_S": "1"},
        command=("-m", "service", "--workers", "2"),
    )

    def count(text: str) -> int:
        return sum(text in line for line in server.log_lines())

    load = KeptAliveLoad(server.url, [image_file(digit) for digit in test_digits[:8]])
    try:
        wait_until(lambda: count('"ready: warm-up took') == 2, "both workers ready")
        load.start()
        await load.until_answered(64)
        server.process.send_signal(signal.SIGHUP)
        await asyncio.to_thread(
            wait_until, lambda: count("stopped (all accepted requests answered)") == 2, "both replaced", 90
        )
        served = len(load.statuses)
        await load.until_answered(served + 32)  # the new workers serve
        await load.finish()
        assert count('"ready: warm-up took') == 4, "two new workers, each warm before serving"
        assert set(load.statuses) == {200}, "no request answered with an error"
        assert len(load.unanswered) <= len(load.bodies), load.unanswered
    finally:
        if not load.stop.is_set():
            await load.finish()
        stop_server(server)


def _bad_checkpoint(problem: str, directory: Path) -> Path:
    path = directory / "autoencoder.safetensors"
    if problem == "missing":
        return path
    save_checkpoint(AutoEncoder(), path)
    meta_path = metadata_path_for(path)
    if problem == "truncated":
        path.write_bytes(path.read_bytes()[:5000])
    elif problem == "tampered":
        data = bytearray(path.read_bytes())
        data[-4] ^= 0x01
        path.write_bytes(bytes(data))
    else:
        if problem == "wrong architecture":
            state = AutoEncoder(ModelConfig(latent_channels=8)).state_dict()
        else:  # NaN weights
            state = {k: v.clone() for k, v in AutoEncoder().state_dict().items()}
            state["en.0.weight"][0] = float("nan")
        blob = safetensors.torch.save(state)
        path.write_bytes(blob)
        meta = json.loads(meta_path.read_text())
        meta["weights_sha256"] = sha256_hex(blob)  # consistent hash: only the content is wrong
        meta_path.write_text(json.dumps(meta))
    return path


@pytest.mark.integration
@pytest.mark.parametrize(
    ("problem", "says"),
    [
        ("missing", "file not found"),
        ("truncated", "sha256"),
        ("tampered", "sha256"),
        ("wrong architecture", "do not fit architecture"),
        ("NaN weights", "non-finite"),
    ],
)
def test_the_service_refuses_to_start_on_a_bad_checkpoint(problem: str, says: str, tmp_path: Path) -> None:
    path = _bad_checkpoint(problem, tmp_path)
    with pytest.raises(RuntimeError, match="exited with 2") as info:
        start_server(tmp_path / "log", {"MNIST_AE_CHECKPOINT": str(path)}, timeout_s=30)
    output = str(info.value).split("\n", 1)[1].strip().splitlines()
    assert len(output) == 1, output
    assert output[0].startswith(f"error: cannot start: checkpoint {path}") and says in output[0]


@pytest.mark.integration
@pytest.mark.parametrize(
    ("env", "says"),
    [
        ({"MNIST_AE_MAX_BATCH_IMAGES": "lots"}, "MNIST_AE_MAX_BATCH_IMAGES='lots': Input should be a valid integer"),
        ({"MNIST_AE_BODY_TIMEOUT_S": "0"}, "MNIST_AE_BODY_TIMEOUT_S='0': Input should be greater than 0"),
        ({"MNIST_AE_API_KEY": " "}, "MNIST_AE_API_KEY: Value error, the API key is empty"),
    ],
)
def test_the_service_refuses_to_start_on_a_bad_setting(env: dict[str, str], says: str, tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="exited with 2") as info:
        start_server(tmp_path / "log", env, timeout_s=30)
    output = str(info.value).split("\n", 1)[1].strip().splitlines()
    assert len(output) == 1, output  # one line, no traceback
    assert output[0].startswith(f"error: cannot start: {says}")
