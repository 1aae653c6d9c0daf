"""One server process against two (``--workers 2``) on this machine, side by side in one run.

    python -m bench.workers          # about 2 minutes on 2 CPU cores

One worker runs torch with its default threads (one per core); two workers with one thread each.
Single PNGs over 64 connections, and 256-image .npy bodies over 4, interleaved rounds, medians.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

from bench.report import command_line, write_section
from bench.workload import PNG, batch_bodies
from bench.wrk import LoadResult, run_wrk
from tests.harness import start_server, stop_server

CONFIGS = {
    "1 worker, torch's default threads (2)": (("-m", "service"), {}),
    "2 workers, 1 torch thread each": (("-m", "service", "--workers", "2"), {"MNIST_AE_TORCH_THREADS": "1"}),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=6.0, help="per wrk run")
    args = parser.parse_args()
    single: dict[str, list[LoadResult]] = {name: [] for name in CONFIGS}
    batched: dict[str, list[float]] = {name: [] for name in CONFIGS}
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        npy, _, _ = batch_bodies(tmp, 256)
        servers = {
            name: start_server(tmp / f"{i}.log", env, command=command)
            for i, (name, (command, env)) in enumerate(CONFIGS.items())
        }
        try:
            for r in range(args.rounds):
                for name, server in servers.items():
                    url = f"{server.url}/reconstruct"
                    run_wrk(url, PNG, content_type="image/png", connections=64, seconds=1)  # every worker warm
                    one = run_wrk(url, PNG, content_type="image/png", connections=64, seconds=args.seconds)
                    many = run_wrk(
                        url,
                        npy,
                        content_type="application/x-npy",
                        accept="application/x-npy",
                        connections=4,
                        seconds=args.seconds,
                    )
                    assert one.non_2xx == many.non_2xx == 0 and one.socket_errors == 0, (name, one, many)
                    single[name].append(one)
                    batched[name].append(many.rps * 256)
                    print(f"  round {r + 1} {name}: {one.rps:,.0f} req/s, {many.rps * 256:,.0f} images/s", flush=True)
        finally:
            for server in servers.values():
                stop_server(server)
    rps = {name: statistics.median(r.rps for r in runs) for name, runs in single.items()}
    images = {name: statistics.median(values) for name, values in batched.items()}
    base = next(iter(CONFIGS))
    p99 = {name: statistics.median(r.p99_ms for r in runs) for name, runs in single.items()}
    rows = [
        f"| {name} | {rps[name]:,.0f} | {rps[name] / rps[base]:.2f}x | {p99[name]:.1f} | {images[name]:,.0f} | "
        f"{images[name] / images[base]:.2f}x |"
        for name in CONFIGS
    ]
    body = "\n".join(
        [
            "## Workers: one server process or two",
            "",
            f"Single PNGs to `/reconstruct` over 64 connections, and 256-image `.npy` bodies over 4, "
            f"{args.seconds:g} s a run, median of {args.rounds} interleaved rounds.",
            "",
            "| server | single PNG req/s | vs 1 worker | p99 ms | 256-image requests, images/s | vs 1 worker |",
            "|---|---:|---:|---:|---:|---:|",
            *rows,
            "",
            "Two workers each have their own event loop, interpreter and GIL: small requests gain from that; "
            "a big batch's forward pass gets one core instead of two.",
        ]
    )
    write_section("workers", command_line(), body)


if __name__ == "__main__":
    main()
