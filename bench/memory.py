"""Start-up and resident memory, one server at a time, each alone on the machine.

    python -m bench.memory          # about 4 minutes on 2 CPU cores

With the service's defaults: cold start from process spawn to /readyz 200, three times; then,
on one server, resident memory (VmRSS) idle after warm-up, after each of ``--rounds``
rounds of ``--requests`` one-PNG requests to /reconstruct (64 connections), after 10 s of
256-image .npy batches, and after a last round of one-PNG requests: the growth check. Memory is
also sampled every 0.2 s all along, for the plot (bench/plots/memory-*.png).

Why alone, and why this process never imports torch: the kernel pages a library out of a process
(MADV_PAGEOUT, service/memory.py) only where no other process maps the same page, as a second
server, a peer service or this script's own ``import torch`` would.
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.report import command_line, plot_path, torch_build, write_section
from bench.workload import PNG, batch_bodies
from bench.wrk import run_wrk, run_wrk_for_requests
from tests.harness import rss_mb, start_server, stop_server

CONFIGS: dict[str, dict[str, str]] = {"defaults": {}}
TARGET_MB = 600  # the bound on resident memory under load
SAMPLE_EVERY_S = 0.2


@dataclass
class Trace:
    """Resident memory sampled all along the load, and when each phase ended."""

    samples: list[tuple[float, float]] = field(default_factory=list)  # (seconds since idle, MB)
    phases: list[tuple[float, str]] = field(default_factory=list)  # (seconds since idle, phase that ended)


def sample_rss(pid: int, trace: Trace, started: float, stop: threading.Event) -> None:
    while not stop.wait(SAMPLE_EVERY_S):
        try:
            trace.samples.append((time.perf_counter() - started, rss_mb(pid)))
        except (OSError, RuntimeError):  # the server is gone
            return


def cold_starts(tmp: Path, env: dict[str, str], trials: int) -> list[float]:
    """Seconds from spawning the process to /readyz answering 200, ``trials`` times."""
    times = []
    for i in range(trials):
        t = time.perf_counter()
        server = start_server(tmp / f"cold{i}.log", env)
        times.append(time.perf_counter() - t)
        stop_server(server)
    return times


def memory_under_load(
    tmp: Path, env: dict[str, str], npy: Path, *, rounds: int, requests: int
) -> tuple[list[tuple[str, float]], int, Trace]:
    """(checkpoint, RSS in MB) along the load described at the top, the requests served, and RSS
    sampled every 0.2 s all along."""
    server = start_server(tmp / "memory.log", env)
    url = f"{server.url}/reconstruct"
    served = 0
    readings: list[tuple[str, float]] = []
    trace, started, stop = Trace(), time.perf_counter(), threading.Event()
    sampler = threading.Thread(target=sample_rss, args=(server.process.pid, trace, started, stop), daemon=True)

    def load(label: str, body: Path, **options: Any) -> None:
        nonlocal served
        if "seconds" in options:
            result = run_wrk(url, body, **options)
        else:
            result = run_wrk_for_requests(url, body, requests=requests, **options)
        assert result.non_2xx == 0 and result.socket_errors == 0, (label, result)
        served += result.requests
        readings.append((label, rss_mb(server.process.pid)))
        trace.phases.append((time.perf_counter() - started, label))

    try:
        readings.append(("idle after warm-up", rss_mb(server.process.pid)))
        trace.samples.append((0.0, readings[0][1]))
        sampler.start()
        for r in range(rounds):
            load(f"one-PNG round {r + 1}", PNG, content_type="image/png", connections=64)
        load(
            "10 s of 256-image .npy batches",
            npy,
            content_type="application/x-npy",
            accept="application/x-npy",
            connections=4,
            seconds=10,
        )
        load("a last one-PNG round", PNG, content_type="image/png", connections=64)
        log = server.log_lines()
    finally:
        stop.set()
        if sampler.is_alive():
            sampler.join()
        stop_server(server)
    paged_out = next((line for line in log if "paged out" in line), None)
    print(f"  {paged_out or 'nothing paged out'}", flush=True)
    return readings, served, trace


def plot(traces: dict[str, Trace], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(11, 4), dpi=100)
    for i, (name, trace) in enumerate(traces.items()):
        ax.plot([t for t, _ in trace.samples], [mb for _, mb in trace.samples], color=f"C{i}", label=name)
    # the phases of the first trace: every configuration goes through the same ones
    first = next(iter(traces.values()))
    previous = 0.0
    for end, label in first.phases:
        if "batches" in label:
            ax.axvspan(previous, end, color="gray", alpha=0.15, label="256-image .npy batches")
        else:
            ax.axvline(end, color="gray", linewidth=0.5, alpha=0.5)
        previous = end
    ax.axhline(TARGET_MB, color="red", linestyle="--", label=f"target: {TARGET_MB} MB")
    ax.set_ylim(0, TARGET_MB * 1.15)
    ax.set_xlabel("seconds since warm-up (thin lines: the end of each one-PNG round)")
    ax.set_ylabel("resident memory, MB")
    ax.set_title(title)
    ax.legend(loc="lower right", fontsize=8)
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=20_000, help="requests per single-image round")
    parser.add_argument("--rounds", type=int, default=3, help="one-PNG rounds before the batches")
    parser.add_argument("--trials", type=int, default=3, help="cold starts per configuration")
    args = parser.parse_args()
    version, cuda_build = torch_build()
    build = "CUDA build" if cuda_build else "CPU-only build"
    section = f"memory-{'cuda-build' if cuda_build else 'cpu-build'}"
    columns: dict[str, list[tuple[str, float]]] = {}
    cold: dict[str, list[float]] = {}
    served: dict[str, int] = {}
    traces: dict[str, Trace] = {}
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        npy, _, _ = batch_bodies(tmp, 256)
        for name, env in CONFIGS.items():
            print(f"{name}:", flush=True)
            cold[name] = cold_starts(tmp, env, args.trials)
            columns[name], served[name], traces[name] = memory_under_load(
                tmp, env, npy, rounds=args.rounds, requests=args.requests
            )
            for label, mb in columns[name]:
                print(f"  {label}: {mb:.0f} MB", flush=True)
    picture = f"{section}.png"
    plot(traces, plot_path(picture), f"Resident memory under load, torch {version} ({build})")
    names = list(CONFIGS)
    labels = [label for label, _ in columns[names[0]]]
    rows = [
        f"| {labels[i]} | " + " | ".join(f"{columns[n][i][1]:.0f}" for n in names) + " |" for i in range(len(labels))
    ]
    defaults = [mb for _, mb in columns["defaults"]]
    steps = [f"{b - a:+.0f}" for a, b in itertools.pairwise(defaults[1:-2])]  # between one-PNG rounds
    growth = f"over the one-PNG rounds {', '.join(steps)} MB from one to the next; " if steps else ""
    cold_text = "; ".join(
        f"{n}: {', '.join(f'{t:.2f}' for t in cold[n])} (median {statistics.median(cold[n]):.2f})" for n in names
    )
    body = "\n".join(
        [
            f"## Start-up and memory, torch {version} ({build})",
            "",
            f"Cold start, process spawn to `/readyz` 200 (seconds): {cold_text}",
            "",
            "Resident memory of the server (VmRSS, MB), one server alone on the machine:",
            "",
            "| after | " + " | ".join(names) + " |",
            "|---|" + "---:|" * len(names),
            *rows,
            "",
            "Requests answered, all 2xx: " + ", ".join(f"{n}: {served[n]:,}" for n in names) + ".",
            "",
            f"- with the defaults: **{max(defaults):.0f} MB at most** under load; {growth}"
            f"{defaults[-1] - defaults[-2]:+.0f} MB over the last round, after the batches",
            "- with a CUDA build of torch serving from the CPU, the server asks the kernel to page out the CUDA "
            "libraries' code after warm-up (service/memory.py)",
            "",
            f"![resident memory under load](bench/plots/{picture})",
        ]
    )
    write_section(section, command_line(), body)


if __name__ == "__main__":
    main()
