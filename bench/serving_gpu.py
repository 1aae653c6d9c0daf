"""Serving on a GPU (issue "Performance", point 5): the service with MNIST_AE_DEVICE=cuda against
the raw model forward on the same GPU, side by side in one run.

    python -m bench.serving_gpu                 # needs CUDA; about 3 minutes
    python -m bench.serving_gpu --device cpu    # the same steps on the CPU: a check of this script

Raw forward, medians of 50 timed passes after warm-up, synchronized: eager PyTorch on tensors
already on the device (the model alone: the GPU's ceiling), and the graph the server runs, from a
host float32 batch to host results (copies both ways included: the least a server must do per
batch). Servers: the defaults (batches up to 256 images, no wait) and one tuned for a GPU
(batches up to 1024 images, 1 ms wait), both running at once, rounds alternating. Load: 256
images per request as .npy at 4 and 16 connections, 256 PNGs as multipart at 4, and one PNG per
request at 64 connections; wrk in its own process, loopback only.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from bench.report import command_line, plot_path, write_section
from bench.workload import PNG, batch_bodies
from bench.wrk import run_wrk
from service.checkpoint import load_checkpoint
from service.inference import Op, Predictor
from service.settings import DEFAULT_CHECKPOINT
from tests.harness import LiveServer, start_server, stop_server

SERVERS = {
    "defaults (batches up to 256, no wait)": {},
    "tuned for a GPU (batches up to 1024, 1 ms wait)": {
        "MNIST_AE_MAX_BATCH_IMAGES": "1024",
        "MNIST_AE_MAX_WAIT_MS": "1",
    },
}


def timed_median(step: Callable[[], object], device: torch.device, repeats: int = 50) -> float:
    """Median seconds of one ``step``, the device synchronized around each."""

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    for _ in range(10):
        step()
    sync()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        step()
        sync()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def raw_forward(device: torch.device, batch: int) -> dict[str, float]:
    """Images/s of the model alone at ``batch``: eager on device tensors, and the server's graph host to host."""
    model = load_checkpoint(DEFAULT_CHECKPOINT).model.to(device).eval()
    predictor = Predictor(load_checkpoint(DEFAULT_CHECKPOINT).model, device)
    x = torch.rand(batch, 1, 28, 28, device=device)
    images = np.random.default_rng(0).random((batch, 28, 28), dtype=np.float32)
    with torch.inference_mode():
        eager = timed_median(lambda: model.reconstruct(x), device)
        served = timed_median(lambda: predictor.run(Op.RECONSTRUCT, images), device)
    return {"eager, on device": batch / eager, "server's graph, host to host": batch / served}


def load_rounds(
    servers: dict[str, LiveServer], bodies: dict[str, tuple[Path, str, int, int]], rounds: int, seconds: float
) -> dict[tuple[str, str], list[float]]:
    """images/s (requests/s for single images) and p99 per (server, load), rounds alternating."""
    results: dict[tuple[str, str], list[float]] = {}
    for r in range(rounds):
        for load, (body, content_type, images, connections) in bodies.items():
            for name, server in servers.items():
                result = run_wrk(
                    f"{server.url}/reconstruct",
                    body,
                    content_type=content_type,
                    accept="application/x-npy",
                    connections=connections,
                    seconds=seconds,
                    threads=2 if connections >= 16 else 1,
                )
                assert result.non_2xx == 0 and result.socket_errors == 0, (name, load, result)
                results.setdefault((name, load), []).append(result.rps * images)
                results.setdefault((name, load + " p99"), []).append(result.p99_ms)
                print(
                    f"  round {r + 1} {name}, {load}: {result.rps * images:,.0f}/s p99 {result.p99_ms:.1f} ms",
                    flush=True,
                )
    return results


def plot(rows: dict[str, float], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(11, 0.45 * len(rows) + 1.2), dpi=100)
    ax.barh(list(rows), list(rows.values()), color=["#999" if k.startswith("raw") else "#2a7" for k in rows])
    ax.set_xscale("log")
    ax.set_xlabel("images/s, 256 per request (log)")
    ax.set_title(title)
    ax.grid(True, axis="x", alpha=0.3, which="both")
    ax.invert_yaxis()
    fig.tight_layout()
    fig.savefig(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda", help="cuda, cuda:1, or cpu for a check of this script")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=5.0, help="per wrk run")
    args = parser.parse_args()
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("no CUDA device here; --device cpu runs the same steps on the CPU")
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    raw = {f"raw, batch {b}, {kind}": rate for b in (256, 1024) for kind, rate in raw_forward(device, b).items()}
    for name, rate in raw.items():
        print(f"  {name}: {rate:,.0f} images/s", flush=True)
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        npy, multipart, multipart_type = batch_bodies(tmp, 256)
        bodies = {
            "256 per request as .npy, 4 connections": (npy, "application/x-npy", 256, 4),
            "256 per request as .npy, 16 connections": (npy, "application/x-npy", 256, 16),
            "256 PNGs per request (multipart), 4 connections": (multipart, multipart_type, 256, 4),
            "one PNG per request, 64 connections": (PNG, "image/png", 1, 64),
        }
        servers: dict[str, LiveServer] = {}
        try:
            for i, (name, env) in enumerate(SERVERS.items()):
                servers[name] = start_server(tmp / f"server{i}.log", {"MNIST_AE_DEVICE": args.device, **env})
            results = load_rounds(servers, bodies, args.rounds, args.seconds)
        finally:
            for server in servers.values():
                stop_server(server)
    raw_256 = raw["raw, batch 256, eager, on device"]
    rows = [f"| {name} | {rate:,.0f} | {rate / raw_256:.1%} |" for name, rate in raw.items()]
    served: dict[str, float] = {}
    for name in SERVERS:
        for load in bodies:
            rate, p99 = statistics.median(results[(name, load)]), statistics.median(results[(name, load + " p99")])
            unit = "requests/s" if load.startswith("one PNG") else "images/s"
            rows.append(
                f"| server {name}: {load} | {rate:,.0f} {unit}, p99 {p99:.1f} ms | "
                f"{'' if unit == 'requests/s' else f'{rate / raw_256:.1%}'} |"
            )
            if unit == "images/s":
                served[f"{name.split(' (')[0]}: {load}"] = rate
    section = f"serving-{'gpu' if device.type == 'cuda' else 'gpu-script-on-cpu'}"
    plot(
        {**{k: v for k, v in raw.items()}, **served},
        plot_path(f"{section}.png"),
        f"Serving on {where}: the service against the raw forward",
    )
    body = "\n".join(
        [
            f"## Serving on {where}, torch {torch.__version__}",
            "",
            f"The service with `MNIST_AE_DEVICE={args.device}` against the model's own forward on the same device. "
            f"Raw: medians of 50 synchronized passes. Servers: both running at once, {args.rounds} rounds alternating, "
            f"{args.seconds:g} s per wrk run, medians. Percentages are of the eager forward at batch 256 on the "
            "device.",
            "",
            "| | throughput | vs raw eager, batch 256 |",
            "|---|---:|---:|",
            *rows,
            "",
            f"![serving on the GPU](bench/plots/{section}.png)",
        ]
    )
    write_section(section, command_line(), body)


if __name__ == "__main__":
    main()
