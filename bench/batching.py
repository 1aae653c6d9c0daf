"""Does micro-batching pay? The same server with batching on (the defaults) and off (batches of 1).

    python -m bench.batching

- throughput: 64 concurrent keep-alive connections POSTing one PNG each to /reconstruct;
- latency of a single client alone, where batching could only cost (with no batch wait, it should not).
Load comes from wrk, a separate process, on loopback only.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from bench.report import command_line, write_section
from bench.wrk import LoadResult, run_wrk
from tests.harness import REPO, start_server, stop_server

PNG = REPO / "examples" / "seven.png"
CONFIGS = {
    "batching on (the defaults: up to 256 images)": {"MNIST_AE_MAX_BATCH_IMAGES": "256", "MNIST_AE_MAX_WAIT_MS": "0"},
    "batching off (batches of 1)": {"MNIST_AE_MAX_BATCH_IMAGES": "1", "MNIST_AE_MAX_WAIT_MS": "0"},
}


def measure(env: dict[str, str], seconds: float) -> tuple[LoadResult, LoadResult]:
    with tempfile.TemporaryDirectory() as tmp:
        server = start_server(Path(tmp) / "server.log", {**env, "MNIST_AE_LOG_LEVEL": "WARNING"})
        try:
            url = f"{server.url}/reconstruct"
            run_wrk(url, PNG, content_type="image/png", connections=64, seconds=2)  # warm-up
            crowd = run_wrk(url, PNG, content_type="image/png", connections=64, seconds=seconds)
            alone = run_wrk(url, PNG, content_type="image/png", connections=1, seconds=seconds / 2)
        finally:
            stop_server(server)
    return crowd, alone


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=10.0, help="length of the 64-client run")
    args = parser.parse_args()
    rows, results = [], {}
    for name, env in CONFIGS.items():
        crowd, alone = results[name] = measure(env, args.seconds)
        assert crowd.non_2xx == 0 and alone.non_2xx == 0, "errors under load"
        rows.append(
            f"| {name} | {crowd.rps:,.0f} | {crowd.p50_ms:.1f} | {crowd.p99_ms:.1f} | "
            f"{alone.rps:,.0f} | {alone.p50_ms:.2f} | {alone.p99_ms:.2f} |"
        )
    (on_crowd, on_alone), (off_crowd, off_alone) = results.values()
    body = "\n".join(
        [
            "## Micro-batching: on versus off",
            "",
            "One PNG per request to `/reconstruct`, the shipped model on CPU. 64 clients: throughput under load; "
            "1 client: what batching costs when there is nobody to batch with.",
            "",
            "| server | 64 clients: req/s | p50 ms | p99 ms | 1 client: req/s | p50 ms | p99 ms |",
            "|---|---:|---:|---:|---:|---:|---:|",
            *rows,
            "",
            f"Batching gives {on_crowd.rps / off_crowd.rps:.2f}x the throughput at 64 clients. A lone client's median "
            f"latency changes by {on_alone.p50_ms - off_alone.p50_ms:+.2f} ms: batches are the requests that queued "
            "while the previous forward pass ran, and nobody waits for company.",
        ]
    )
    write_section("batching", command_line(), body)


if __name__ == "__main__":
    main()
