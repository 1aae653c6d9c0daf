"""A memory burst: many clients at once, each posting the largest legal JSON batch, against one
server given a memory limit; the server's peak resident memory against that limit.

    python -m bench.burst                                  # about 1 minute on 2 CPU cores
    python -m bench.burst --memory-limit-mb 100000         # the same load, practically no budget

96 clients each post a JSON body of 1,024 random 28x28 images (7.6 MB) to /reconstruct twice, all
at once. Resident memory (VmRSS) is sampled every 20 ms; the last column is after the burst, once
the memory a burst took has gone back (service/budget.py, service/request_layer.py).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import threading
import time
from pathlib import Path

import httpx
import numpy as np

from bench.report import command_line, write_section
from tests.conftest import SHIPPED_WEIGHTS
from tests.harness import rss_mb, start_server, stop_server


def largest_json_body(images: int = 1024) -> bytes:
    return json.dumps({"images": np.random.default_rng(0).random((images, 28, 28)).round(6).tolist()}).encode()


async def burst(
    url: str, body: bytes, clients: int, rounds: int, headers: dict[str, str] | None = None
) -> tuple[dict[int, int], list[float]]:
    """Each client posts ``body`` ``rounds`` times, all at once: the statuses, and how long each 503 took."""
    statuses: dict[int, int] = {}
    refusals: list[float] = []

    async def client(http: httpx.AsyncClient) -> None:
        for _ in range(rounds):
            started = time.perf_counter()
            response = await http.post("/reconstruct", content=body, headers={"content-type": "application/json"})
            statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
            if response.status_code == 503:
                refusals.append(time.perf_counter() - started)

    limits = httpx.Limits(max_connections=clients)
    async with httpx.AsyncClient(base_url=url, timeout=300, limits=limits, headers=headers) as http:
        await asyncio.gather(*(client(http) for _ in range(clients)))
    return statuses, refusals


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--memory-limit-mb", type=int, default=1024, help="the compose file's and manifests' limit")
    parser.add_argument("--clients", type=int, default=96)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    body = largest_json_body()
    env = {"MNIST_AE_CHECKPOINT": str(SHIPPED_WEIGHTS), "MNIST_AE_MEMORY_LIMIT_MB": str(args.memory_limit_mb)}
    with tempfile.TemporaryDirectory() as tmp:
        server = start_server(Path(tmp) / "server.log", env)
        pid = server.process.pid
        idle = rss_mb(pid)
        peak = [idle]
        stop = threading.Event()

        def sample() -> None:
            while not stop.wait(0.02):
                peak[0] = max(peak[0], rss_mb(pid))

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        started = time.perf_counter()
        statuses, refusals = asyncio.run(burst(server.url, body, args.clients, args.rounds))
        took = time.perf_counter() - started
        time.sleep(1.0)
        stop.set()
        sampler.join()
        after = rss_mb(pid)
        stop_server(server)
    limit = args.memory_limit_mb
    refused = f"{statistics.median(refusals):.2f} s" if refusals else "-"
    table = (
        "| limit | idle | peak | peak / limit | 1 s after | answered 200 / 503 | 503, median time | burst |\n"
        "|---|---|---|---|---|---|---|---|\n"
        f"| {limit} MB | {idle:.0f} MB | **{peak[0]:.0f} MB** | **{100 * peak[0] / limit:.1f}%** | {after:.0f} MB "
        f"| {statuses.get(200, 0)} / {statuses.get(503, 0)} | {refused} | {took:.1f} s |"
    )
    heading = (
        f"## A memory burst: {args.clients} clients x {args.rounds} JSON bodies of 1,024 images "
        f"({len(body) / 2**20:.1f} MB)\n\nResident memory of the server (VmRSS), its limit from "
        "`MNIST_AE_MEMORY_LIMIT_MB`; the target is 85% of it (docs/deployment.md).\n\n"
    )
    write_section("burst", command_line(), heading + table)


if __name__ == "__main__":
    main()
