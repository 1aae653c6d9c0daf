"""Serving, side by side in one run: this service against its own no-op endpoint, a peer-style
FastAPI service, and the raw model. Start-up and memory: bench/memory.py.

    python -m bench.serving          # about 4 minutes on 2 CPU cores

1. One PNG per request to /reconstruct, 64 keep-alive connections, 20k requests a run, three
   rounds interleaved (medians reported), against (a) this server's POST /noop (same server,
   same middleware and hot path, same per-call checks, body read, nothing else: HTTP's own
   cost) and (b) bench/naive_service.py.
2. 256 images per request, as .npy and as multipart PNG, against the model's own forward pass
   at batch 256 in-process; rounds interleaved with the raw measurements, medians reported.
Load comes from wrk, a separate process, on loopback only.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from bench.harness import LiveServer, start_server, stop_server
from bench.report import command_line, plot_path, write_section
from bench.workload import PNG, batch_bodies
from bench.wrk import LoadResult, run_wrk, run_wrk_for_requests
from service.checkpoint import load_checkpoint
from service.settings import DEFAULT_CHECKPOINT


def raw_forward_images_per_s(batch: int, repeats: int = 50) -> dict[str, float]:
    """The model alone, in-process, median of ``repeats`` passes: plain eager PyTorch
    (channels_last, inference mode), the traced graph of the layers as trained, and the traced
    graph the server itself runs (upsampling folded into the convolutions, service/folding.py)."""
    from service.inference import Op, Predictor

    model = load_checkpoint(DEFAULT_CHECKPOINT).model.eval().to(memory_format=torch.channels_last)
    predictor = Predictor(load_checkpoint(DEFAULT_CHECKPOINT).model, torch.device("cpu"))
    unfolded = Predictor(load_checkpoint(DEFAULT_CHECKPOINT).model, torch.device("cpu"), fold_upsampling=False)
    x = torch.rand(batch, 1, 28, 28).contiguous(memory_format=torch.channels_last)
    images = np.random.default_rng(0).random((batch, 28, 28), dtype=np.float32)
    passes = {
        "eager": lambda: model.reconstruct(x),
        "traced, as trained": lambda: unfolded.run(Op.RECONSTRUCT, images),
        "traced": lambda: predictor.run(Op.RECONSTRUCT, images),
    }
    rates = {}
    with torch.inference_mode():
        for name, forward in passes.items():
            times = []
            for _ in range(10):
                forward()
            for _ in range(repeats):
                t = time.perf_counter()
                forward()
                times.append(time.perf_counter() - t)
            rates[name] = batch / statistics.median(times)
    return rates


def single_image_rounds(
    ours: LiveServer, naive: LiveServer, naive_fast: LiveServer, rounds: int, requests: int
) -> dict[str, list[LoadResult]]:
    targets = {
        "(a) this server, POST /noop": f"{ours.url}/noop",
        "this server, POST /reconstruct": f"{ours.url}/reconstruct",
        "(b) peer-style FastAPI (uvicorn defaults)": f"{naive.url}/reconstruct",
        "(b') peer-style FastAPI on uvloop + httptools": f"{naive_fast.url}/reconstruct",
    }
    results: dict[str, list[LoadResult]] = {name: [] for name in targets}
    for r in range(rounds):
        for name, url in targets.items():
            result = run_wrk_for_requests(url, PNG, requests=requests, content_type="image/png", connections=64)
            assert result.non_2xx == 0 and result.socket_errors == 0, (name, result)
            results[name].append(result)
            print(f"  round {r + 1} {name}: {result.rps:,.0f} req/s p99 {result.p99_ms:.1f} ms", flush=True)
    return results


def median_of(results: list[LoadResult], attr: str) -> float:
    return statistics.median(getattr(r, attr) for r in results)


def plot(single: dict[str, float], batches: dict[str, float], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4), dpi=100)
    left.barh(list(single), list(single.values()), color=["#999", "#2a7", "#c55", "#e99"])
    left.set_xlabel("requests/s (one PNG each, 64 connections)")
    left.set_title("one image per request")
    right.barh(list(batches), list(batches.values()), color=["#999", "#bbb", "#2a7", "#5a9"])
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
        ours = start_server(tmp / "ours.log", {"MNIST_AE_ENABLE_NOOP_ROUTE": "true"})
        peer = ("-m", "uvicorn", "bench.naive_service:app")
        naive = start_server(tmp / "naive.log", {}, command=(*peer, "--loop", "asyncio", "--http", "h11"),
                             ready_path="/healthz")  # fmt: skip
        fast = (*peer, "--loop", "uvloop", "--http", "httptools")
        naive_fast = start_server(tmp / "naive_fast.log", {}, command=fast, ready_path="/healthz")
        try:
            single = single_image_rounds(ours, naive, naive_fast, args.rounds, args.requests)
            url = f"{ours.url}/reconstruct"
            # batches in interleaved rounds, the raw forward measured before each round and after the
            # last (the servers sit idle meanwhile): this machine's speed drifts, medians follow it
            raw_runs, batch_npy, batch_png = [], [], []
            for _ in range(args.rounds):
                raw_runs.append(raw_forward_images_per_s(256))
                batch_npy.append(run_wrk(url, npy, content_type="application/x-npy", accept="application/x-npy",
                                         connections=4, seconds=5).rps * 256)  # fmt: skip
                batch_png.append(run_wrk(url, multipart, content_type=multipart_type, accept="application/x-npy",
                                         connections=4, seconds=5).rps * 256)  # fmt: skip
            raw_runs.append(raw_forward_images_per_s(256))
        finally:
            for server in (ours, naive, naive_fast):
                stop_server(server)
    raw = statistics.median(r["eager"] for r in raw_runs)
    raw_traced = statistics.median(r["traced"] for r in raw_runs)
    raw_unfolded = statistics.median(r["traced, as trained"] for r in raw_runs)

    noop, mine, peer, peer_fast = (single[k] for k in single)
    rps = {k: median_of(v, "rps") for k, v in single.items()}
    rows = [
        f"| {name} | {rps[name]:,.0f} | {median_of(v, 'p50_ms'):.1f} | {median_of(v, 'p99_ms'):.1f} |"
        for name, v in single.items()
    ]
    ours_rps = median_of(mine, "rps")
    batches = {
        "raw model forward, batch 256 (in-process, eager PyTorch)": raw,
        "raw traced graph, batch 256 (in-process, the layers as trained)": raw_unfolded,
        "raw traced graph, batch 256 (in-process, upsampling folded, CPU layers: what the server runs)": raw_traced,
        "this server, 256 per request as .npy": statistics.median(batch_npy),
        "this server, 256 PNGs per request (multipart)": statistics.median(batch_png),
    }
    plot({k.split(",")[0] if k.startswith("(") else k: v for k, v in rps.items()}, batches,
         plot_path(f"{section}.png"))  # fmt: skip
    body = "\n".join([
        f"## Serving on CPU, torch {torch.__version__} ({build})",
        "",
        f"### One PNG per request: `/reconstruct`, 64 connections, {args.requests:,} requests a run, "
        f"median of {args.rounds} interleaved rounds",
        "",
        "| target | req/s | p50 ms | p99 ms |",
        "|---|---:|---:|---:|",
        *rows,
        "",
        f"- this service reaches **{ours_rps / median_of(noop, 'rps'):.1%} of (a)**, its own no-op endpoint "
        "(the cost of HTTP alone on this server)",
        f"- and **{ours_rps / median_of(peer, 'rps'):.1f}x (b)**, the peer-style service "
        "(Pillow decode and ToTensor, one forward pass per request in the event loop, JSON lists) as "
        f"`pip install fastapi uvicorn` runs it; {ours_rps / median_of(peer_fast, 'rps'):.1f}x (b'), the same "
        "code on uvloop and httptools",
        f"- p99 latency {median_of(mine, 'p99_ms'):.1f} ms",
        "",
        f"### 256 images per request (4 connections, 5 s a run, median of {args.rounds} interleaved rounds)",
        "",
        "| | images/s | vs raw forward |",
        "|---|---:|---:|",
        *(f"| {k} | {v:,.0f} | {v / raw:.0%} |" for k, v in batches.items()),
        "",
        f"The raw figures are medians of {args.rounds + 1} measurements, taken before each round and after the last. "
        "The server runs traced graphs (service/inference.py) with each nearest-neighbour upsampling folded into the "
        "convolution after it (service/folding.py) and, on CPU, batches of 8+ in layers rewritten for it "
        "(service/fast_layers.py), the same function within 1e-6, so it can beat the eager forward pass.",
        "",
        f"![serving throughput](bench/plots/{section}.png)",
    ])  # fmt: skip
    write_section(section, command_line(), body)


if __name__ == "__main__":
    main()
