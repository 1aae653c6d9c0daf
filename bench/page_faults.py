"""Page faults per forward pass, with glibc's default (moving) malloc thresholds and with the fixed
ones the service sets (service.memory.keep_freed_blocks): the server's own traced graph, in
fresh processes alternating between the two, at several batch sizes; then two servers side by
side (MNIST_AE_KEEP_FREED_BLOCKS=true/false) under the usual loads, with their page faults.

    python -m bench.page_faults
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from bench.harness import REPO, start_server, stop_server
from bench.report import command_line, write_section
from bench.workload import PNG, batch_bodies
from bench.wrk import run_wrk, run_wrk_for_requests

BATCHES = (1, 32, 64, 256)

# one process per measurement: malloc's thresholds are process-wide and cannot be put back
CHILD = """
import json, resource, statistics, sys, time
import numpy as np, torch
from service.memory import keep_freed_blocks
if sys.argv[1] == "fixed":
    assert keep_freed_blocks()
from service.checkpoint import load_checkpoint
from service.inference import Op, Predictor
from service.settings import DEFAULT_CHECKPOINT
BATCHES = json.loads(sys.argv[2])
torch.set_num_threads(2)
predictor = Predictor(load_checkpoint(DEFAULT_CHECKPOINT).model, torch.device("cpu"))
result = {}
for batch in BATCHES:
    images = np.random.default_rng(0).random((batch, 28, 28), dtype=np.float32)
    for _ in range(20):
        predictor.run(Op.RECONSTRUCT, images)
    times, faults = [], resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(200):
        started = time.perf_counter()
        predictor.run(Op.RECONSTRUCT, images)
        times.append(time.perf_counter() - started)
    faults = (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults) / 200
    result[batch] = (batch / statistics.median(times), faults)
result["rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps(result))
"""


def measure(mode: str) -> dict[str, list[float]]:
    out = subprocess.run(
        [sys.executable, "-c", CHILD, mode, json.dumps(BATCHES)], cwd=REPO, capture_output=True, text=True, check=True
    )
    return json.loads(out.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def minor_faults(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[7])  # field 10: minflt


def servers_side_by_side(rounds: int) -> list[str]:
    """Two servers at once, rounds alternating: one-PNG requests, then 256-image .npy batches."""
    modes = {"fixed thresholds (the default)": "true", "glibc defaults": "false"}
    results: dict[str, dict[str, list[float]]] = {label: {} for label in modes}
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        npy, _, _ = batch_bodies(tmp, 256)
        servers = {}
        try:
            for label, value in modes.items():
                servers[label] = start_server(tmp / f"{value}.log", {"MNIST_AE_KEEP_FREED_BLOCKS": value})
            for r in range(rounds):
                for label, server in servers.items():
                    url, pid = f"{server.url}/reconstruct", server.process.pid
                    before = minor_faults(pid)
                    single = run_wrk_for_requests(url, PNG, requests=10_000, content_type="image/png", connections=64)
                    middle = minor_faults(pid)
                    batch = run_wrk(url, npy, content_type="application/x-npy", accept="application/x-npy",
                                    connections=4, seconds=5)  # fmt: skip
                    after = minor_faults(pid)
                    assert single.non_2xx == batch.non_2xx == 0
                    for key, value in (
                        ("single", single.rps),
                        ("single faults", (middle - before) / single.requests),
                        ("batch", batch.rps * 256),
                        ("batch faults", (after - middle) / batch.requests),
                    ):
                        results[label].setdefault(key, []).append(value)  # fmt: skip
                    print(f"  round {r + 1} {label}: {single.rps:,.0f} req/s, {batch.rps * 256:,.0f} images/s, "
                          f"faults per batch request {(after - middle) / batch.requests:.0f}", flush=True)  # fmt: skip
        finally:
            for server in servers.values():
                stop_server(server)
    med = {label: {key: statistics.median(values) for key, values in r.items()} for label, r in results.items()}
    base = med["glibc defaults"]
    return [
        f"| {label} | {m['single']:,.0f} | {m['single'] / base['single']:.2f}x | {m['single faults']:.1f} | "
        f"{m['batch']:,.0f} | {m['batch'] / base['batch']:.2f}x | {m['batch faults']:.0f} |"
        for label, m in med.items()
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    runs: dict[str, list[dict[str, list[float]]]] = {"glibc defaults": [], "fixed thresholds": []}
    for r in range(args.rounds):
        for mode, label in (("default", "glibc defaults"), ("fixed", "fixed thresholds")):
            runs[label].append(measure(mode))
            print(f"  round {r + 1} {label}: {runs[label][-1]}", flush=True)
    rows = []
    for batch in BATCHES:
        cells = []
        for label in runs:
            rates = [run[str(batch)][0] for run in runs[label]]
            faults = [run[str(batch)][1] for run in runs[label]]
            cells.append(f"{statistics.median(rates):,.0f} ({min(rates):,.0f}-{max(rates):,.0f}) | "
                         f"{statistics.median(faults):.0f}")  # fmt: skip
        gain = statistics.median(r[str(batch)][0] for r in runs["fixed thresholds"]) / statistics.median(
            r[str(batch)][0] for r in runs["glibc defaults"]
        )
        rows.append(f"| {batch} | {cells[0]} | {cells[1]} | {gain:.2f}x |")
    rss = {label: statistics.median(run["rss_mb"] for run in runs[label]) for label in runs}  # type: ignore[misc]
    served = servers_side_by_side(args.rounds)
    body = "\n".join([
        "## Page faults per forward pass: malloc's thresholds",
        "",
        "The server's traced graph (RECONSTRUCT, 2 torch threads), 200 passes per batch size after 20 warm-up "
        f"passes, in fresh processes alternating between the two settings, {args.rounds} rounds; medians, with "
        "the range of images/s. With glibc's defaults, a block over the mmap threshold is mapped fresh and "
        "unmapped on free, and the heap top is trimmed past the trim threshold, both of which move as the "
        "program runs: a pass can fault in every page of its activations again. `service.memory.keep_freed_blocks` "
        "fixes them (32 MB and 64 MB), so each pass reuses the pages of the one before.",
        "",
        "| batch | glibc defaults: images/s | page faults per pass | fixed thresholds: images/s | "
        "page faults per pass | gain |",
        "|---:|---:|---:|---:|---:|---:|",
        *rows,
        "",
        f"Peak resident memory of the measuring process: {rss['glibc defaults']:.0f} MB with glibc's defaults, "
        f"{rss['fixed thresholds']:.0f} MB with the fixed thresholds.",
        "",
        f"Two servers at once, {args.rounds} rounds alternating, medians: one PNG per request to `/reconstruct` "
        "(64 connections, 10,000 requests), then 256 images per request as `.npy` (4 connections, 5 s); page "
        "faults of the server process per request.",
        "",
        "| server | req/s | vs glibc defaults | faults per request | batched images/s | vs glibc defaults | "
        "faults per batch request |",
        "|---|---:|---:|---:|---:|---:|---:|",
        *served,
    ])  # fmt: skip
    write_section("page-faults", command_line(), body)


if __name__ == "__main__":
    main()
