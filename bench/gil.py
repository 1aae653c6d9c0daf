"""Why the worker runs traced graphs: a forward pass in a thread while another thread keeps the
GIL busy, as the event loop does under load. Eager PyTorch needs the GIL back between layers;
a traced graph runs in C++ without it.

    python -m bench.gil
"""

from __future__ import annotations

import argparse
import statistics
import threading
import time

import numpy as np

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
    parser.add_argument("--repeats", type=int, default=40, help="timed passes per cell (median reported)")
    args = parser.parse_args()
    model = load_checkpoint(DEFAULT_CHECKPOINT).model
    rows = []
    for size in args.batches:
        batch = np.random.default_rng(0).random((size, 28, 28), dtype=np.float32)
        cells = []
        for mode in ("eager", "trace"):
            predictor = Predictor(model, model.en[0].weight.device, graph_mode=mode)
            cells += [forward_ms(predictor, batch, busy=busy, repeats=args.repeats) for busy in (False, True)]
        rows.append(f"| {size} | " + " | ".join(f"{c:.2f}" for c in cells) + " |")
    body = "\n".join([
        "## Traced graphs and the GIL",
        "",
        "Median time of one `/reconstruct` forward pass in the worker thread, alone and while another thread "
        "runs pure-Python code (as the event loop does under load), in ms.",
        "",
        "| batch | eager, alone | eager, GIL busy | traced, alone | traced, GIL busy |",
        "|---:|---:|---:|---:|---:|",
        *rows,
    ])  # fmt: skip
    write_section("gil", command_line(), body)


if __name__ == "__main__":
    main()
