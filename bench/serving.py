"""Serving, side by side in one run: this service against the HTTP ceiling, a peer-style FastAPI
service, and the raw model.

    python -m bench.serving          # about 4 minutes on 2 CPU cores

1. One PNG per request to /reconstruct, 64 keep-alive connections, three rounds interleaved
   (medians reported), against (a) the HTTP ceiling, bench/ceiling.py: a bare ASGI app under the
   same uvicorn (uvloop, httptools) that reads the body and answers with this service's own
   response bytes for that PNG; and (b) bench/naive_service.py, FastAPI as it is usually written.
   Each server's CPU time per request comes from /proc; this service's is split between the event
   loop's thread and the rest (the inference thread and torch's workers).
2. Where one request's time goes, in µs per stage: HTTP (the ceiling's CPU per request), the
   decode, forward and encode stages timed in-process on the same PNG (the forward at the mean
   batch size the server formed), and the rest of the event loop's time per request (the request
   layer, the endpoint and the batcher).
3. 256 images per request, as .npy and as multipart PNG, against the model's own eager forward
   pass at batch 256 in-process; rounds interleaved, medians reported.
4. The Open Inference Protocol, one UINT8 image per call, every output: REST /v2 (binary tensor
   data, HTTP/1.1) beside gRPC (raw contents, HTTP/2), both from h2load over 32 connections,
   rounds interleaved; each gRPC call's own status is checked in the server's metrics.
Load comes from wrk and h2load, separate processes, on loopback only.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx
import numpy as np
import orjson
import torch

from bench.h2load import grpc_frame, run_h2load
from bench.report import command_line, plot_path, write_section
from bench.workload import PNG, batch_bodies
from bench.wrk import LoadResult, run_wrk, run_wrk_for_requests
from service.checkpoint import load_checkpoint
from service.codecs.images import decode_image
from service.codecs.oip import MODEL_NAME
from service.inference import Op, Predictor
from service.main import create_app
from service.model import ModelConfig
from service.oip_grpc import predict_v2_pb2 as pb
from service.oip_grpc.server import SERVICE
from service.responses import OutputFormat, render_images
from service.scoring import Scores, is_anomaly
from service.settings import DEFAULT_CHECKPOINT, Settings
from tests.harness import REPO, LiveServer, free_port, start_server, stop_server, thread_cpu_seconds

TARGETS = (
    "(a) HTTP ceiling: bare ASGI, same uvicorn",
    "this service, POST /reconstruct",
    "(b) peer-style FastAPI service",
)
OIP_TARGETS = (
    "REST `/v2/models/mnist-ae/infer`, binary tensor data, HTTP/1.1",
    "gRPC `ModelInfer`, raw contents, HTTP/2",
)


def median_time(work: Callable[[], object], repeats: int) -> float:
    for _ in range(max(3, repeats // 10)):
        work()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        work()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def raw_forward_images_per_s(batch: int, repeats: int = 30) -> float:
    """The model alone, in-process: plain eager PyTorch (channels_last, inference mode)."""
    model = load_checkpoint(DEFAULT_CHECKPOINT).model.eval().to(memory_format=torch.channels_last)
    x = torch.rand(batch, 1, 28, 28).contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        return batch / median_time(lambda: model.reconstruct(x), repeats)


class InstantModel:
    """A stand-in predictor that answers at once with zeros: what the request path costs without the model."""

    calibration = None
    config = ModelConfig()

    def run(self, op: Op, batch: np.ndarray) -> tuple[np.ndarray, ...]:
        n = len(batch)
        if op is Op.RECONSTRUCT:  # images and scores: the calibrated path, decisions included
            zeros = np.zeros(n, np.float32)
            return np.zeros((n, 1, 28, 28), np.float32), zeros, zeros, np.full(n, 50, np.float32), zeros.astype(bool)
        return (np.zeros((n, 16, 7, 7), np.float32),)


async def in_process_micros(batch: int, rounds: int = 200) -> tuple[float, float]:
    """µs per request, ``batch`` requests at a time, in-process with the model answering at once: the
    whole app (request layer, endpoint, decode, batcher, encode), and the batcher alone."""
    settings = Settings(log_format="text", warmup_batches=0)
    app = create_app(settings, checkpoint=load_checkpoint(DEFAULT_CHECKPOINT))
    body = PNG.read_bytes()
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/reconstruct",
        "raw_path": b"/reconstruct",
        "root_path": "",
        "query_string": b"",
        "headers": [(b"content-type", b"image/png"), (b"content-length", str(len(body)).encode())],
        "server": ("127.0.0.1", 8000),
        "client": ("127.0.0.1", 5555),
    }

    async def receive() -> dict[str, object]:
        return {"type": "http.request", "body": body, "more_body": False}

    statuses: set[int] = set()

    async def send(message: dict[str, object]) -> None:
        if message["type"] == "http.response.start":
            statuses.add(int(message["status"]))  # type: ignore[call-overload]

    async with app.router.lifespan_context(app):
        while not app.state.service.ready:
            await asyncio.sleep(0.01)
        batcher = app.state.service.batcher
        batcher.predictor = InstantModel()  # type: ignore[assignment]
        image = np.zeros((1, 28, 28), np.float32)

        async def timed(one: Callable[[], Awaitable[object]]) -> float:
            for _ in range(rounds // 10):
                await asyncio.gather(*(one() for _ in range(batch)))
            started = time.perf_counter()
            for _ in range(rounds):
                await asyncio.gather(*(one() for _ in range(batch)))
            return 1e6 * (time.perf_counter() - started) / (rounds * batch)

        whole = await timed(lambda: app(dict(scope), receive, send))
        if statuses != {200}:  # an error path would be timed instead of the request's
            raise RuntimeError(f"the in-process requests answered {sorted(statuses)}, not only 200")
        queue = await timed(lambda: batcher.submit(Op.RECONSTRUCT, image))
    return whole, queue


def stage_micros(batch: int) -> dict[str, float]:
    """Each stage of one single-PNG /reconstruct request, in-process on one quiet thread, µs."""
    settings = Settings()
    body = PNG.read_bytes()
    checkpoint = load_checkpoint(DEFAULT_CHECKPOINT)
    predictor = Predictor(checkpoint.model, torch.device("cpu"), checkpoint.calibration)
    limits = {"size": 28, "max_pixels": settings.max_image_pixels, "resize": False, "what": "body"}
    image = decode_image(body, **limits)[None]  # what an image/png body becomes
    recon, mse, novelty, percentile, outlying = predictor.run(Op.RECONSTRUCT, image)
    images = np.repeat(image, batch, axis=0)
    decode = 1e6 * median_time(lambda: decode_image(body, **limits), 300)
    anomaly = is_anomaly(percentile, outlying, 0.99)
    scores = Scores(mse=mse, novelty=novelty, percentile=percentile, anomaly=anomaly, quantile=0.99)
    encode = 1e6 * median_time(lambda: render_images(recon, OutputFormat.json, scores=scores), 300)
    whole, queue = asyncio.run(in_process_micros(batch))
    return {
        "request layer and endpoint (ids, limits, metrics, query, headers, the answer's send)": whole
        - decode
        - encode
        - queue,
        "decode (PNG -> float32 image)": decode,
        "queue: submit, the hand-off to the inference thread and back, the task woken (model answering at once)": queue,
        f"forward, per image at batch {batch} (quiet)": 1e6
        * median_time(lambda: predictor.run(Op.RECONSTRUCT, images), 50)
        / batch,
        "encode (JSON answer)": encode,
    }


def mean_batch(server: LiveServer) -> float:
    text = httpx.get(f"{server.url}/metrics").text
    values = {
        line.split("{")[0]: float(line.split()[-1])
        for line in text.splitlines()
        if line.startswith("mnist_ae_batch_size_images_")
    }
    return values["mnist_ae_batch_size_images_sum"] / max(values["mnist_ae_batch_size_images_count"], 1)


def single_image_rounds(
    servers: dict[str, LiveServer], rounds: int, requests: int
) -> tuple[dict[str, list[LoadResult]], dict[str, list[dict[str, float]]]]:
    """wrk against each server in turn; each run's result and its server's CPU µs per request by thread."""
    results: dict[str, list[LoadResult]] = {name: [] for name in servers}
    cpu: dict[str, list[dict[str, float]]] = {name: [] for name in servers}
    for r in range(rounds):
        for name, server in servers.items():
            pid = server.process.pid
            url = f"{server.url}/reconstruct"
            before: dict[str, float] = {}

            def start_meter(pid: int = pid, before: dict[str, float] = before) -> None:
                before.update(thread_cpu_seconds(pid))

            result = run_wrk_for_requests(
                url, PNG, requests=requests, content_type="image/png", connections=64, before_run=start_meter
            )
            after = thread_cpu_seconds(pid)
            used = {thread: after[thread] - before.get(thread, 0.0) for thread in after}
            loop = used.pop("main")
            cpu[name].append(
                {
                    "event loop": 1e6 * loop / result.requests,
                    "other threads": 1e6 * sum(used.values()) / result.requests,
                }
            )
            assert result.non_2xx == 0 and result.socket_errors == 0, (name, result)
            results[name].append(result)
            print(f"  round {r + 1} {name}: {result.rps:,.0f} req/s p99 {result.p99_ms:.1f} ms", flush=True)
    return results, cpu


def oip_bodies(tmp: Path) -> tuple[Path, dict[str, str], Path, dict[str, str]]:
    """One UINT8 digit with every output asked for: a REST /v2 body (JSON, then the pixels) and its
    headers, and a gRPC ModelInfer call's body and headers."""
    pixels = np.load(REPO / "examples" / "digits.npy")[:1].astype(np.uint8)  # (1,28,28)
    header = orjson.dumps(
        {
            "inputs": [
                {"name": "images", "datatype": "UINT8", "shape": [1, 28, 28], "parameters": {"binary_data_size": 784}}
            ],
            "parameters": {"binary_data_output": True},
        }
    )
    rest = tmp / "v2.bin"
    rest.write_bytes(header + pixels.tobytes())
    rest_headers = {"content-type": "application/octet-stream", "inference-header-content-length": str(len(header))}
    request = pb.ModelInferRequest(model_name=MODEL_NAME, raw_input_contents=[pixels.tobytes()])
    request.inputs.add(name="images", datatype="UINT8", shape=[1, 28, 28])
    grpc = tmp / "grpc.bin"
    grpc.write_bytes(grpc_frame(request.SerializeToString()))
    return rest, rest_headers, grpc, {"content-type": "application/grpc", "te": "trailers"}


def grpc_calls_answered(server: LiveServer) -> int:
    """ModelInfer calls the server answered OK, from its request metrics."""
    text = httpx.get(f"{server.url}/metrics").text
    pattern = rf'^mnist_ae_http_requests_total{{[^}}]*route="/{SERVICE}/ModelInfer"[^}}]*status="200"[^}}]*}} (\S+)'
    found = re.search(pattern, text, re.M)
    return int(float(found.group(1))) if found else 0


def oip_rounds(server: LiveServer, grpc_port: int, tmp: Path, rounds: int, requests: int) -> dict[str, list[float]]:
    """req/s of REST /v2 and of gRPC, one image per call, in interleaved rounds."""
    rest, rest_headers, grpc, grpc_headers = oip_bodies(tmp)
    runs: dict[str, list[float]] = {OIP_TARGETS[0]: [], OIP_TARGETS[1]: []}
    rest_url = f"{server.url}/v2/models/{MODEL_NAME}/infer"
    grpc_url = f"http://127.0.0.1:{grpc_port}/{SERVICE}/ModelInfer"
    for _ in range(rounds):
        result = run_h2load(rest_url, rest, rest_headers, requests=requests, connections=32, http1=True)
        assert result.requests == requests, f"{requests - result.requests} REST /v2 calls failed"
        runs[OIP_TARGETS[0]].append(result.rps)
        before = grpc_calls_answered(server)
        result = run_h2load(grpc_url, grpc, grpc_headers, requests=requests, connections=32, http1=False)
        assert grpc_calls_answered(server) - before == requests, "some gRPC calls did not answer OK"
        runs[OIP_TARGETS[1]].append(result.rps)
    return runs


def median_of(values: list[float]) -> float:
    return statistics.median(values)


def plot(single: dict[str, float], batches: dict[str, float], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4), dpi=100)
    left.barh(list(single), list(single.values()), color=["#999", "#2a7", "#c55"])
    left.set_xlabel("requests/s (one PNG each, 64 connections)")
    left.set_title("one image per request")
    right.barh(list(batches), list(batches.values()), color=["#999", "#2a7", "#5a9"])
    right.set_xlabel("images/s (256 per request)")
    right.set_title("batches")
    for ax in (left, right):
        ax.grid(True, axis="x", alpha=0.3)
        ax.invert_yaxis()
    fig.tight_layout()
    fig.savefig(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=20_000, help="requests per single-image run")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    build = "CUDA build" if torch.version.cuda else "CPU-only build"
    section = f"serving-cpu-{'cuda-build' if torch.version.cuda else 'cpu-build'}"
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        npy, multipart, multipart_type = batch_bodies(tmp, 256)
        grpc_port = free_port()
        ours = start_server(tmp / "ours.log", {"MNIST_AE_GRPC_PORT": str(grpc_port)})
        answer = tmp / "answer.json"
        answer.write_bytes(
            httpx.post(
                f"{ours.url}/reconstruct", content=PNG.read_bytes(), headers={"content-type": "image/png"}
            ).content
        )
        uvicorn = ("-m", "uvicorn", "--loop", "uvloop", "--http", "httptools", "--no-access-log")
        ceiling = start_server(
            tmp / "ceiling.log",
            {"CEILING_RESPONSE": str(answer)},
            command=(*uvicorn, "bench.ceiling:app"),
            ready_path="/",
        )
        naive = start_server(
            tmp / "naive.log", {}, command=("-m", "uvicorn", "bench.naive_service:app"), ready_path="/healthz"
        )
        servers = dict(zip(TARGETS, (ceiling, ours, naive), strict=True))
        try:
            single, cpu = single_image_rounds(servers, args.rounds, args.requests)
            batch = mean_batch(ours)
            url = f"{ours.url}/reconstruct"
            # batches in interleaved rounds, the raw forward measured before each round and after the
            # last (the servers sit idle meanwhile): this machine's speed drifts, medians follow it
            raw_runs, batch_npy, batch_png = [], [], []
            for _ in range(args.rounds):
                raw_runs.append(raw_forward_images_per_s(256))
                batch_npy.append(
                    run_wrk(
                        url, npy, content_type="application/x-npy", accept="application/x-npy", connections=4, seconds=5
                    ).rps
                    * 256
                )
                batch_png.append(
                    run_wrk(
                        url,
                        multipart,
                        content_type=multipart_type,
                        accept="application/x-npy",
                        connections=4,
                        seconds=5,
                    ).rps
                    * 256
                )
            raw_runs.append(raw_forward_images_per_s(256))
            oip = oip_rounds(ours, grpc_port, tmp, args.rounds, args.requests // 2)
        finally:
            for server in servers.values():
                stop_server(server)
    stages = stage_micros(round(batch))
    raw = median_of(raw_runs)
    rps = {name: median_of([r.rps for r in runs]) for name, runs in single.items()}
    cpu_us = {name: {part: median_of([c[part] for c in runs]) for part in runs[0]} for name, runs in cpu.items()}
    ceiling_rps, ours_rps, naive_rps = (rps[name] for name in TARGETS)
    rows = [
        f"| {name} | {rps[name]:,.0f} | {median_of([r.p50_ms for r in runs]):.1f} | "
        f"{median_of([r.p99_ms for r in runs]):.1f} | {cpu_us[name]['event loop']:.0f} | "
        f"{cpu_us[name]['other threads']:.0f} |"
        for name, runs in single.items()
    ]
    http = cpu_us[TARGETS[0]]["event loop"] + cpu_us[TARGETS[0]]["other threads"]
    budget = [("HTTP: the ceiling's CPU per request (uvicorn, httptools, uvloop, the sockets)", http), *stages.items()]
    total = sum(value for _, value in budget)
    measured = cpu_us[TARGETS[1]]["event loop"] + cpu_us[TARGETS[1]]["other threads"]
    batches = {
        "raw model forward, batch 256 (in-process, eager PyTorch, as trained)": raw,
        "this service, 256 per request as .npy": median_of(batch_npy),
        "this service, 256 PNGs per request (multipart)": median_of(batch_png),
    }
    plot({name.split(":")[0]: value for name, value in rps.items()}, batches, plot_path(f"{section}.png"))
    body = "\n".join(
        [
            f"## Serving on CPU, torch {torch.__version__} ({build})",
            "",
            f"### One PNG per request: `/reconstruct`, 64 connections, {args.requests:,} requests a run, "
            f"median of {args.rounds} interleaved rounds",
            "",
            "| target | req/s | p50 ms | p99 ms | server CPU µs/request: event loop (main thread) | other threads |",
            "|---|---:|---:|---:|---:|---:|",
            *rows,
            "",
            f"- this service reaches **{ours_rps / ceiling_rps:.2f}x (a)**, the HTTP ceiling: a bare ASGI app "
            "answering with this service's own response bytes under the same uvicorn",
            f"- and **{ours_rps / naive_rps:.1f}x (b)**, the peer-style service (Pillow decode and ToTensor, one "
            "forward pass per request in the event loop, JSON lists) as `pip install fastapi uvicorn` runs it",
            f"- p99 latency {median_of([r.p99_ms for r in single[TARGETS[1]]]):.1f} ms, 0 errors",
            "",
            f"### Where one request's time goes (µs; batches of {batch:.0f} images on average under that load)",
            "",
            "| stage | µs per request |",
            "|---|---:|",
            *(f"| {name} | {value:.0f} |" for name, value in budget),
            f"| **sum of the stages** | **{total:.0f}** |",
            f"| measured under load: the server's CPU per request (event loop + other threads) | {measured:.0f} |",
            "",
            "HTTP is measured under the same load; the other stages in-process, on one quiet thread (the request "
            "layer and endpoint row is a whole request through the app with the model answering at once, less the "
            f"other rows). At {total:.0f} µs of work per request, 2 cores could serve at most "
            f"{2e6 / total:,.0f} req/s, {2e6 / total / ceiling_rps:.2f}x the ceiling, with nothing left for the load "
            "generator; what the measured CPU has beyond the sum is contention: two cores shared by wrk, the event "
            "loop and the forward pass's threads, caches, and the GIL passed between the loop and each layer of the "
            "forward pass.",
            "",
            f"### 256 images per request (4 connections, 5 s a run, median of {args.rounds} interleaved rounds)",
            "",
            "| | images/s | vs raw forward |",
            "|---|---:|---:|",
            *(f"| {k} | {v:,.0f} | {v / raw:.0%} |" for k, v in batches.items()),
            "",
            f"The raw figure is the median of {args.rounds + 1} measurements, before each round and after the last. "
            "The server runs the decoder with each upsampling folded into the convolution after it "
            "(service/folding.py), the same function within 1e-6, so it can beat the eager forward pass.",
            "",
            f"### The Open Inference Protocol: one UINT8 image per call, every output ({args.requests // 2:,} calls "
            f"a run from h2load over 32 connections, median of {args.rounds} interleaved rounds)",
            "",
            "| front door | req/s | vs REST |",
            "|---|---:|---:|",
            *(
                f"| {name} | {median_of(runs):,.0f} | {median_of(runs) / median_of(oip[OIP_TARGETS[0]]):.2f}x |"
                for name, runs in oip.items()
            ),
            "",
            "The same server process answers both: one micro-batcher, one guard, the same scoring.",
            "",
            f"![serving throughput](bench/plots/{section}.png)",
        ]
    )
    write_section(section, command_line(), body)


if __name__ == "__main__":
    main()
