"""Why the worker runs traced graphs: a forward pass in a thread while another thread keeps the
GIL busy, as the event loop does under load. Eager PyTorch needs the GIL back between layers;
a traced graph runs in C++ without it.

    python -m bench.gil
"""

from __future__ import annotations

import argparse
import collections
import os
import statistics
import sys
import threading
import time

import numpy as np
import torch

from bench.report import command_line, write_section
from service.checkpoint import load_checkpoint
from service.inference import Op, Predictor
from service.settings import DEFAULT_CHECKPOINT


def forward_ms(predictor: Predictor, batch: np.ndarray, busy: bool, repeats: int = 40) -> float:
    stop = threading.Event()

    def hold_the_gil() -> None:  # pure-Python work, like an event loop parsing HTTP
        while not stop.is_set():
            sum(i * i for i in range(2000))

    for _ in range(5):
        predictor.run(Op.RECONSTRUCT, batch)
    holder = threading.Thread(target=hold_the_gil)
    if busy:
        holder.start()
    times = []
    try:
        for _ in range(repeats):
            t = time.perf_counter()
            predictor.run(Op.RECONSTRUCT, batch)
            times.append((time.perf_counter() - t) * 1000)
    finally:
        stop.set()
        if busy:
            holder.join()
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 32, 256])
    parser.add_argument("--repeats", type=int, default=40, help="timed passes per cell and round (median taken)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds, interleaved; their median and worst reported")
    args = parser.parse_args()
    model = load_checkpoint(DEFAULT_CHECKPOINT).model
    predictors = {mode: Predictor(model, model.en[0].weight.device, graph_mode=mode) for mode in ("eager", "trace")}
    cells: dict[tuple[int, str, bool], list[float]] = collections.defaultdict(list)
    for _ in range(args.rounds):
        for size in args.batches:
            batch = np.random.default_rng(0).random((size, 28, 28), dtype=np.float32)
            for mode, predictor in predictors.items():
                for busy in (False, True):
                    cells[(size, mode, busy)].append(forward_ms(predictor, batch, busy=busy, repeats=args.repeats))
    rows = [
        f"| {size} | " + " | ".join(f"{statistics.median(cells[(size, mode, busy)]):.2f} "
                                    f"({max(cells[(size, mode, busy)]):.2f})"
                                    for mode in predictors for busy in (False, True)) + " |"
        for size in args.batches
    ]  # fmt: skip
    largest = max(args.batches)
    busy_ratio = statistics.median(cells[(largest, "eager", True)]) / statistics.median(cells[(largest, "trace", True)])
    body = "\n".join([
        "## Traced graphs and the GIL",
        "",
        "One `/reconstruct` forward pass in a worker thread, alone and while another thread runs pure-Python code "
        f"(as the event loop does under load), in ms: the median over {args.rounds} interleaved rounds of each "
        f"round's median of {args.repeats} passes, and in brackets the worst round's.",
        "",
        "| batch | eager, alone | eager, GIL busy | traced, alone | traced, GIL busy |",
        "|---:|---:|---:|---:|---:|",
        *rows,
        "",
        f"With {torch.get_num_threads()} torch threads on {len(os.sched_getaffinity(0))} cores, the busy thread also "
        "takes a core from the pass's other OpenMP thread, which is most of the slowdown of both at large "
        "batches. The eager pass needs the GIL back between its layers, and may wait for it up to a switch interval "
        f"({sys.getswitchinterval() * 1000:g} ms) each time; the traced graph runs in C++ throughout. Under load, at "
        f"batch {largest}, eager takes {busy_ratio:.2f}x the traced graph's time.",
    ])  # fmt: skip
    write_section("gil", command_line(), body)


if __name__ == "__main__":
    main()
