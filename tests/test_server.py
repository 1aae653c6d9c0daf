"""Against a real uvicorn process serving the shipped model, with real PNG files of real MNIST digits."""

from __future__ import annotations

import asyncio
import io
import json
import os
import signal
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import torch

from service.checkpoint import load_checkpoint, metadata_path_for
from service.model import AutoEncoder
from service.scoring import reconstruction_mse
from tests.conftest import REPO, SHIPPED_WEIGHTS, image_file, npy
from tests.harness import LiveServer, start_server, stop_server, wait_until

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def shipped_model() -> AutoEncoder:
    return load_checkpoint(SHIPPED_WEIGHTS).model


def model_says(model: AutoEncoder, digits: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    x = torch.from_numpy(digits).float().div(255).unsqueeze(1)
    with torch.inference_mode():
        latents = model.encode(x)
        recon = model.reconstruct(x)
    mse = reconstruction_mse(recon, x)
    return latents.numpy(), recon.numpy(), mse.numpy()


def test_png_files_of_real_digits_match_the_in_process_model(
    live_server: LiveServer, test_digits: np.ndarray, shipped_model: AutoEncoder, tmp_path: Path
) -> None:
    digits = test_digits[:8]
    paths = []
    for i, digit in enumerate(digits):
        path = tmp_path / f"digit_{i}.png"
        path.write_bytes(image_file(digit))
        paths.append(path)
    latents, recon, mse = model_says(shipped_model, digits)
    files = [("file", (p.name, p.open("rb"), "image/png")) for p in paths]
    response = httpx.post(f"{live_server.url}/reconstruct", files=files, timeout=30)
    assert response.status_code == 200, response.text
    body = response.json()
    np.testing.assert_allclose(np.array(body["data"], np.float32), recon, atol=1e-5)
    np.testing.assert_allclose(body["mse"], mse, rtol=1e-4, atol=1e-7)
    recorded = json.loads(metadata_path_for(SHIPPED_WEIGHTS).read_text())["metrics"]["test_mse"]
    assert np.mean(body["mse"]) < 3 * recorded, "real digits reconstruct about as well as on the test set"

    encoded = httpx.post(
        f"{live_server.url}/encode",
        params={"format": "npy"},
        content=paths[0].read_bytes(),
        headers={"content-type": "image/png"},
    )
    np.testing.assert_allclose(np.load(io.BytesIO(encoded.content)), latents[:1], atol=1e-5)


def test_decode_and_png_output(live_server: LiveServer, test_digits: np.ndarray) -> None:
    latents = httpx.post(
        f"{live_server.url}/encode", content=npy(test_digits[:2]), headers={"content-type": "application/x-npy"}
    ).json()
    picture = httpx.post(f"{live_server.url}/decode", params={"format": "png"}, json={"latents": latents["data"]})
    assert picture.status_code == 200 and picture.headers["content-type"] == "image/png"
    assert picture.content.startswith(b"\x89PNG")


@pytest.mark.anyio
async def test_concurrent_clients_each_get_their_own_answer(
    live_server: LiveServer, test_digits: np.ndarray, shipped_model: AutoEncoder
) -> None:
    _, recon, mse = model_says(shipped_model, test_digits)
    headers = {"content-type": "image/png", "accept": "application/x-npy"}
    async with httpx.AsyncClient(base_url=live_server.url, timeout=30) as client:
        responses = await asyncio.gather(
            *(client.post("/reconstruct", content=image_file(d), headers=headers) for d in test_digits)
        )
    for i, response in enumerate(responses):
        assert response.status_code == 200
        np.testing.assert_allclose(np.load(io.BytesIO(response.content))[0], recon[i], atol=1e-5)
        assert float(response.headers["x-reconstruction-mse"]) == pytest.approx(float(mse[i]), rel=1e-4)
    metrics = httpx.get(f"{live_server.url}/metrics").text
    assert 'mnist_ae_http_requests_total{method="POST",route="/reconstruct",status="200"}' in metrics


def test_streamed_body_over_the_limit_is_cut_off(live_server: LiveServer) -> None:
    def chunks():
        for _ in range(64):  # 8 MiB offered; the server takes 4 MiB
            yield b"\0" * (128 * 1024)

    try:
        response = httpx.post(f"{live_server.url}/encode", content=chunks(), headers={"content-type": "image/png"})
    except httpx.TransportError:
        pytest.fail("the server should answer 413, not drop the connection")
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "payload_too_large"
    assert httpx.get(f"{live_server.url}/readyz").status_code == 200


def test_logs_are_json_lines_with_the_request_id(live_server: LiveServer) -> None:
    # by default the access log has a line for each error, not each success
    response = httpx.get(f"{live_server.url}/nope", headers={"x-request-id": "trace-me-42"})
    assert response.status_code == 404 and response.headers["x-request-id"] == "trace-me-42"

    def entries() -> list[dict[str, Any]]:
        return [json.loads(line) for line in live_server.log_lines() if line.startswith("{")]

    wait_until(lambda: any(e.get("request_id") == "trace-me-42" for e in entries()), "the request's log line")
    mine = [e for e in entries() if e.get("request_id") == "trace-me-42"]
    assert mine[0]["path"] == "/nope" and mine[0]["status"] == 404
    assert any(e["message"].startswith("ready") for e in entries())


def test_openapi_and_docs_are_served(live_server: LiveServer) -> None:
    assert httpx.get(f"{live_server.url}/docs").status_code == 200
    assert "/reconstruct" in httpx.get(f"{live_server.url}/openapi.json").json()["paths"]


def test_sigterm_stops_the_server_cleanly(tmp_path: Path) -> None:
    server = start_server(tmp_path / "log", {"MNIST_AE_CHECKPOINT": str(SHIPPED_WEIGHTS)})
    # uvicorn finishes its graceful shutdown, then re-raises the signal: "killed by SIGTERM" is a clean exit
    assert stop_server(server, timeout_s=30) in (0, -signal.SIGTERM)
    assert any("stopped (all accepted requests answered)" in line for line in server.log_lines())


def test_any_asgi_server_can_build_the_app_as_a_factory(tmp_path: Path) -> None:
    server = start_server(
        tmp_path / "log",
        {"MNIST_AE_CHECKPOINT": str(SHIPPED_WEIGHTS)},
        command=("-m", "uvicorn", "--factory", "service.main:create_app"),
    )
    try:
        response = httpx.post(
            f"{server.url}/reconstruct",
            content=(REPO / "examples" / "seven.png").read_bytes(),
            headers={"content-type": "image/png"},
        )
        assert response.status_code == 200 and response.json()["shape"] == [1, 1, 28, 28]
    finally:
        stop_server(server)


def test_several_workers_share_the_port_the_metrics_and_the_drain(tmp_path: Path) -> None:
    """--workers 2: two processes, each with its own model and batcher, behind one port; /metrics
    adds both up whichever answers; /admin/reload points to the supervisor; SIGTERM drains both."""
    metrics_dir = tmp_path / "metrics"
    metrics_dir.mkdir()
    server = start_server(
        tmp_path / "log",
        {
            "MNIST_AE_CHECKPOINT": str(SHIPPED_WEIGHTS),
            "MNIST_AE_API_KEY": "k",
            "MNIST_AE_DRAIN_GRACE_S": "1.5",
            "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir),
        },
        command=("-m", "service", "--workers", "2"),
    )
    auth = {"authorization": "Bearer k"}
    try:
        # ready means both workers are (the gauge adds them up)
        wait_until(lambda: "mnist_ae_ready 2.0" in httpx.get(f"{server.url}/metrics").text, "both workers ready")
        png = (REPO / "examples" / "seven.png").read_bytes()
        for _ in range(40):  # a connection each: the kernel hands them to either worker
            with httpx.Client(base_url=server.url, headers=auth) as client:
                response = client.post("/reconstruct", content=png, headers={"content-type": "image/png"})
                assert response.status_code == 200
        pids = {path.stem.rsplit("_", 1)[-1] for path in metrics_dir.glob("counter_*.db")}
        assert len(pids) == 2, f"both workers counted requests: {pids}"
        text = httpx.get(f"{server.url}/metrics").text
        assert 'mnist_ae_http_requests_total{method="POST",route="/reconstruct",status="200"} 40.0' in text
        assert 'mnist_ae_images_processed_total{op="reconstruct"} 40.0' in text
        refused = httpx.post(f"{server.url}/admin/reload", headers=auth)
        assert refused.status_code == 409 and "SIGHUP to their supervisor" in refused.json()["error"]["message"]
        server.process.send_signal(signal.SIGTERM)
        wait_until(lambda: httpx.get(f"{server.url}/readyz").status_code == 503, "draining: /readyz says 503")
        assert (
            httpx.post(
                f"{server.url}/reconstruct", content=png, headers={"content-type": "image/png", **auth}
            ).status_code
            == 200
        ), "and requests are still served during the grace"
        assert server.process.wait(30) == 0
        assert sum("stopped (all accepted requests answered)" in line for line in server.log_lines()) == 2
    finally:
        if server.process.poll() is None:
            stop_server(server)


def _worker_pids(supervisor: int) -> set[int]:
    """The worker processes uvicorn's supervisor ``supervisor`` has started (spawned interpreters)."""
    pids = set()
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            ppid = int((proc / "stat").read_text().rpartition(")")[2].split()[1])
            cmdline = (proc / "cmdline").read_bytes()
        except (OSError, ValueError, IndexError):
            continue
        if ppid == supervisor and b"spawn_main" in cmdline:
            pids.add(int(proc.name))
    return pids


def test_a_killed_worker_is_replaced_while_the_other_serves(tmp_path: Path) -> None:
    """kill -9 of one of two workers: new connections go to the other, whose /readyz and answers
    stay 200 throughout; the supervisor starts a replacement, which warms up and serves."""
    server = start_server(
        tmp_path / "log", {"MNIST_AE_CHECKPOINT": str(SHIPPED_WEIGHTS)}, command=("-m", "service", "--workers", "2")
    )
    png = (REPO / "examples" / "seven.png").read_bytes()

    def ready_count() -> int:
        return sum('"ready: warm-up took' in line for line in server.log_lines())

    try:
        wait_until(lambda: len(_worker_pids(server.process.pid)) == 2 and ready_count() == 2, "two workers ready")
        workers = _worker_pids(server.process.pid)
        victim = min(workers)
        os.kill(victim, signal.SIGKILL)
        statuses = []
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not (ready_count() == 3 and len(_worker_pids(server.process.pid)) == 2):
            statuses.append(httpx.get(f"{server.url}/readyz").status_code)  # a new connection each time
            answer = httpx.post(f"{server.url}/reconstruct", content=png, headers={"content-type": "image/png"})
            statuses.append(answer.status_code)
        replaced = _worker_pids(server.process.pid)
        assert ready_count() == 3 and len(replaced) == 2 and victim not in replaced, "a replacement is up"
        assert statuses and set(statuses) == {200}, "the other worker answered everything meanwhile"
        for _ in range(20):
            with httpx.Client(base_url=server.url) as client:
                assert (
                    client.post("/reconstruct", content=png, headers={"content-type": "image/png"}).status_code == 200
                )
    finally:
        stop_server(server)
