"""Two checkouts of the service side by side, for changes that have no switch: both servers run
at once and the rounds alternate between them, so the machine's drift hits both alike.

    git worktree add /tmp/base <commit>
    python -m bench.ab --base /tmp/base --name batcher-queue

Single image: one PNG per request to /reconstruct, 64 connections. Batches: 256 images per
request as .npy, 4 connections. The section goes to BENCHMARKS.md as ``ab-<name>``.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import tempfile
from pathlib import Path

from bench.harness import REPO, CpuMeter, start_server, stop_server
from bench.report import command_line, write_section
from bench.workload import PNG, batch_bodies
from bench.wrk import run_wrk, run_wrk_for_requests


def commit_of(checkout: Path) -> str:
    out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=checkout, capture_output=True, text=True)
    # benchmark results (BENCHMARKS.md, plots) are not changes to the code being compared
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", ".",
                            ":!BENCHMARKS.md", ":!bench/plots"], cwd=checkout,
                           capture_output=True, text=True).stdout.strip()  # fmt: skip
    return out.stdout.strip() + ("+changes" if dirty else "")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base", type=Path, required=True, help="checkout to compare against")
    parser.add_argument("--name", required=True, help="what the change is (the section's name)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--requests", type=int, default=10_000, help="requests per single-image run")
    parser.add_argument("--multipart", action="store_true",
                        help="images as multipart forms (one file; 256 files), not a PNG body and .npy")  # fmt: skip
    parser.add_argument("--npy-single", action="store_true",
                        help="single images as one-image .npy bodies (as the Python client sends them)")  # fmt: skip
    args = parser.parse_args()
    checkouts = {"base": args.base.resolve(), "this checkout": REPO}
    commits = {label: commit_of(path) for label, path in checkouts.items()}
    single: dict[str, list[float]] = {label: [] for label in checkouts}
    p99: dict[str, list[float]] = {label: [] for label in checkouts}
    cpu_us: dict[str, list[float]] = {label: [] for label in checkouts}  # server CPU per single request
    batched: dict[str, list[float]] = {label: [] for label in checkouts}
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        npy, multipart, multipart_type = batch_bodies(tmp, 256)
        batch_body, batch_type = (multipart, multipart_type) if args.multipart else (npy, "application/x-npy")
        single_body = (PNG, "image/png")
        if args.multipart or args.npy_single:
            (tmp / "one").mkdir()
            one_npy, one_file, one_type = batch_bodies(tmp / "one", 1)
            single_body = (one_file, one_type) if args.multipart else (one_npy, "application/x-npy")
        servers = {}
        try:
            for label, path in checkouts.items():
                servers[label] = start_server(tmp / f"{label}.log", {"PYTHONPATH": str(path)}, cwd=path)
            for r in range(args.rounds):
                for label, server in servers.items():
                    url = f"{server.url}/reconstruct"
                    cpu_meter = CpuMeter(server.process.pid)
                    one = run_wrk_for_requests(url, single_body[0], requests=args.requests,
                                               content_type=single_body[1], connections=64,
                                               before_run=cpu_meter.start)  # fmt: skip
                    cpu_us[label].append(1e6 * cpu_meter.seconds() / one.requests)
                    big = run_wrk(url, batch_body, content_type=batch_type, accept="application/x-npy", connections=4,
                                  seconds=5)  # fmt: skip
                    assert one.non_2xx == big.non_2xx == 0 and one.socket_errors == 0, (label, one, big)
                    single[label].append(one.rps)
                    p99[label].append(one.p99_ms)
                    batched[label].append(big.rps * 256)
                    print(f"  round {r + 1} {label}: {one.rps:,.0f} req/s p99 {one.p99_ms:.1f} ms, "
                          f"server CPU {cpu_us[label][-1]:.0f} µs/request; batches {big.rps * 256:,.0f} images/s",
                          flush=True)  # fmt: skip
        finally:
            for server in servers.values():
                stop_server(server)
    med = {label: (statistics.median(single[label]), statistics.median(p99[label]), statistics.median(cpu_us[label]),
                   statistics.median(batched[label])) for label in checkouts}  # fmt: skip
    base = med["base"]
    rows = [
        f"| {label} ({commits[label]}) | {s:,.0f} | {s / base[0]:.2f}x | {p:.1f} | {c:.0f} | {c / base[2]:.2f}x "
        f"| {b:,.0f} | {b / base[3]:.2f}x |"
        for label, (s, p, c, b) in med.items()
    ]
    body = "\n".join([
        f"## Side by side: {args.name}",
        "",
        f"Both servers running at once, {args.rounds} alternating rounds, medians. Single image: one PNG per request "
        f"{'as a one-file multipart form ' if args.multipart else 'as a one-image .npy ' if args.npy_single else ''}"
        "to `/reconstruct`, 64 connections, "
        f"{args.requests:,} requests. Batches: 256 images per request "
        f"{'as 256 PNG files in a multipart form' if args.multipart else 'as `.npy`'}, 4 connections, 5 s.",
        "",
        "| server | req/s | vs base | p99 ms | server CPU µs/request | vs base | batched images/s | vs base |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
        *rows,
        "",
        "Server CPU per request: the server process's CPU time (all threads, user and system, from /proc) over "
        "each single-image run, divided by its requests; steadier than req/s on this machine, whose speed drifts.",
    ])  # fmt: skip
    shown_as = {str(args.base): f"<checkout of {commits['base']}>"}
    write_section(f"ab-{args.name}", command_line(shown_as), body)


if __name__ == "__main__":
    main()
