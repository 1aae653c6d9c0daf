"""What each serving lever is worth: the single-image and 256-image benchmarks with one lever
turned off at a time, side by side in one run.

    python -m bench.levers          # about 5 minutes on 2 CPU cores, 10 servers (~7 GB) at once
"""

from __future__ import annotations

import argparse
import contextlib
import re
import statistics
import tempfile
from pathlib import Path

from bench.harness import start_server, stop_server
from bench.report import command_line, write_section
from bench.workload import batch_bodies, single_and_batched
from bench.wrk import LoadResult

# name -> (environment, extra `python -m service` arguments)
CONFIGS: dict[str, tuple[dict[str, str], list[str]]] = {
    "all levers (the defaults)": ({}, []),
    "FastAPI's router instead of the hot path": ({"MNIST_AE_HOT_PATH": "false"}, []),
    "Pillow instead of libspng for PNG decoding": ({"MNIST_AE_FAST_PNG": "false"}, []),
    "no micro-batching (batches of 1)": ({"MNIST_AE_MAX_BATCH_IMAGES": "1", "MNIST_AE_MAX_WAIT_MS": "0"}, []),
    "batch wait 2 ms instead of none": ({"MNIST_AE_MAX_WAIT_MS": "2"}, []),
    "batch wait 10 ms instead of none": ({"MNIST_AE_MAX_WAIT_MS": "10"}, []),
    "eager PyTorch instead of traced graphs": ({"MNIST_AE_GRAPH_MODE": "eager"}, []),
    "decoder as trained (upsampling not folded)": ({"MNIST_AE_FOLD_UPSAMPLING": "false"}, []),
    "no gc.freeze after warm-up": ({"MNIST_AE_GC_FREEZE": "false"}, []),
    "glibc's moving malloc thresholds": ({"MNIST_AE_KEEP_FREED_BLOCKS": "false"}, []),
    "asyncio loop + h11 parser (no uvloop/httptools)": ({}, ["--loop", "asyncio", "--http", "h11"]),
    "1 torch thread instead of 2": ({"MNIST_AE_TORCH_THREADS": "1"}, []),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--only", nargs="+", metavar="TEXT", default=None,
                        help="only the configurations whose name holds one of these (the defaults always run); "
                             "written to a section of its own")  # fmt: skip
    args = parser.parse_args()
    configs = {
        name: config for i, (name, config) in enumerate(CONFIGS.items())
        if i == 0 or args.only is None or any(text in name for text in args.only)
    }  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp_name, contextlib.ExitStack() as running:
        tmp = Path(tmp_name)
        npy, _, _ = batch_bodies(tmp, 256)
        # every configuration runs at once, each its own server, idle but for its turn; rounds go
        # through all of them in turn, so a slow spell of the machine hits every row alike
        urls = {}
        for i, (name, (env, extra)) in enumerate(configs.items()):
            server = start_server(tmp / f"server{i}.log", env, command=("-m", "service", *extra))
            running.callback(stop_server, server)
            urls[name] = f"{server.url}/reconstruct"
        single: dict[str, list[LoadResult]] = {name: [] for name in configs}
        batch: dict[str, list[float]] = {name: [] for name in configs}
        for r in range(args.rounds):
            for name, url in urls.items():
                result, batched = single_and_batched(url, npy, requests=args.requests)
                single[name].append(result)
                batch[name].append(batched.rps * 256)
                print(f"  round {r + 1} {name}: {result.rps:,.0f} req/s p99 {result.p99_ms:.1f} ms; "
                      f"batches {batched.rps * 256:,.0f} images/s", flush=True)  # fmt: skip
    rows = [
        (name, statistics.median(x.rps for x in single[name]), statistics.median(x.p99_ms for x in single[name]),
         statistics.median(batch[name]))
        for name in configs
    ]  # fmt: skip
    base = rows[0]
    body = "\n".join([
        "## Serving levers, one at a time",
        "",
        f"Single image: one PNG per request to `/reconstruct`, 64 connections, {args.requests:,} requests. Batches: "
        "256 images per request as `.npy`, 4 connections, 5 s. Every configuration is its own server, all running "
        f"at once; {args.rounds} rounds go through them in turn, and each figure is the median of its runs.",
        "",
        "| configuration | req/s | vs defaults | p99 ms | batched images/s | vs defaults |",
        "|---|---:|---:|---:|---:|---:|",
        *(f"| {n} | {r:,.0f} | {r / base[1]:.2f}x | {p:.1f} | {b:,.0f} | {b / base[3]:.2f}x |" for n, r, p, b in rows),
    ])  # fmt: skip
    if args.only is None:
        write_section("levers", command_line(), body)
    else:  # a closer look at a few levers, beside the full table
        name = "levers-" + "-".join(re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") for text in args.only)
        write_section(
            name, command_line(), body.replace("## Serving levers, one at a time", "## Serving levers: a closer look")
        )


if __name__ == "__main__":
    main()
