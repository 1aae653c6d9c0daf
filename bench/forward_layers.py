"""The served forward pass on CPU, layer by layer: each layer as trained beside the layer
service/fast_layers.py puts in its place, then the whole /reconstruct graph both ways by batch.

    python -m bench.forward_layers          # about 1 minute on 2 CPU cores

Shipped weights, channels-last tensors, inference mode, one torch thread for the layer table (so
that the figures are the layers' own work, not how well they split over cores) and both threads,
as the server runs, for the graphs. Variants run in interleaved rounds; figures are medians.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from functools import partial

import numpy as np
import torch
from torch import nn

from bench.report import command_line, write_section
from service.checkpoint import load_checkpoint
from service.fast_layers import cpu_layers
from service.folding import FoldedDecoder
from service.inference import SMALLEST_CPU_LAYERS_BATCH, Op, Predictor
from service.memory import keep_freed_blocks
from service.settings import DEFAULT_CHECKPOINT

CHANNELS_LAST = torch.channels_last


def median_us(fn: Callable[[], object], repeats: int) -> float:
    for _ in range(5):
        fn()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return 1e6 * statistics.median(times)


def layer_rows(batch: int, rounds: int, repeats: int) -> list[tuple[str, str, float, float]]:
    """(what, input shape, as trained us, CPU layer us) for the layers that differ, at ``batch``."""
    model = load_checkpoint(DEFAULT_CHECKPOINT).model.eval().to(memory_format=CHANNELS_LAST)
    folded = FoldedDecoder(model).layers
    trained_pool, trained_relu = model.en[2], model.en[1]
    fast_en, fast_de = cpu_layers(model.en), cpu_layers(folded)
    x = torch.rand(batch, 1, 28, 28).contiguous(memory_format=CHANNELS_LAST)
    with torch.inference_mode():
        conv1 = model.en[0](x)  # (N,8,28,28)
        conv2 = model.en[3](trained_pool(trained_relu(conv1.clone())))  # (N,16,14,14)
        z = model.encode(x)
        before_tanh = nn.Sequential(*list(folded)[:-1])(z)  # (N,1,28,28)
        cases: dict[str, tuple[str, Callable[[], object], Callable[[], object]]] = {
            "ReLU, MaxPool2d(2) -> PairwiseMaxPool2d, ReLU (first pool)": (
                str(tuple(conv1.shape)),
                lambda: trained_pool(trained_relu(conv1.clone())),
                lambda: fast_en[2](fast_en[1](conv1.clone())),
            ),
            "ReLU, MaxPool2d(2) -> PairwiseMaxPool2d, ReLU (second pool)": (
                str(tuple(conv2.shape)),
                lambda: model.en[5](model.en[4](conv2.clone())),
                lambda: fast_en[5](fast_en[4](conv2.clone())),
            ),
            "Tanh -> SigmoidTanh": (
                str(tuple(before_tanh.shape)),
                lambda: model.de[7](before_tanh),
                lambda: fast_de[-1](before_tanh),
            ),
        }
        times: dict[str, tuple[list[float], list[float]]] = {name: ([], []) for name in cases}
        for _ in range(rounds):
            for name, (_, trained, fast) in cases.items():
                times[name][0].append(median_us(trained, repeats))
                times[name][1].append(median_us(fast, repeats))
    return [
        (name, shape, statistics.median(times[name][0]), statistics.median(times[name][1]))
        for name, (shape, _, _) in cases.items()
    ]


def graph_rows(batches: list[int], rounds: int, repeats: int) -> list[tuple[int, float, float]]:
    """(batch, layers as trained us/image, the server's us/image) for /reconstruct's traced graph."""
    predictor = Predictor(load_checkpoint(DEFAULT_CHECKPOINT).model, torch.device("cpu"))
    assert predictor._batch_graphs is not None
    graphs = {"trained": predictor._graphs[Op.RECONSTRUCT], "cpu": predictor._batch_graphs[Op.RECONSTRUCT]}
    divisor = predictor._divisors[torch.float32]
    times: dict[tuple[int, str], list[float]] = {(b, g): [] for b in batches for g in graphs}
    rng = np.random.default_rng(0)
    with torch.inference_mode():
        inputs = {b: torch.from_numpy(rng.random((b, 28, 28), dtype=np.float32)) for b in batches}
        for _ in range(rounds):
            for b in batches:
                for name, graph in graphs.items():
                    run = partial(graph, inputs[b], divisor)  # float32 images, divided by 1
                    times[b, name].append(median_us(run, repeats) / b)
    return [(b, statistics.median(times[b, "trained"]), statistics.median(times[b, "cpu"])) for b in batches]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=32, help="batch of the layer table (the server's under load)")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 2, 4, 8, 32, 64, 256])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=50)
    args = parser.parse_args()
    keep_freed_blocks()  # as the server does: big batches reuse freed blocks instead of faulting in pages
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    layers = layer_rows(args.batch, args.rounds, args.repeats)
    torch.set_num_threads(threads)
    graphs = graph_rows(args.batches, args.rounds, args.repeats)
    lines = [
        "## The forward pass, layer by layer (CPU)",
        "",
        f"Layers at batch {args.batch} (about the server's batch under 64 connections), one torch thread, "
        f"µs per call, medians of {args.rounds} interleaved rounds; outputs equal bit for bit except the tanh "
        "(within 2.4e-7).",
        "",
        "| layer as trained -> service/fast_layers.py | input | as trained, µs | rewritten, µs | speed-up |",
        "|---|---|---:|---:|---:|",
        *(f"| {name} | {shape} | {a:.1f} | {b:.1f} | {a / b:.2f}x |" for name, shape, a, b in layers),
        "",
        f"The whole traced /reconstruct graph (folded decoder), {threads} torch threads, µs per image. The server "
        f"runs the layers as trained below {SMALLEST_CPU_LAYERS_BATCH} images (fewer dispatches) and the rewritten "
        "ones from there on.",
        "",
        "| batch | layers as trained | rewritten | speed-up |",
        "|---:|---:|---:|---:|",
        *(f"| {b} | {a:.1f} | {c:.1f} | {a / c:.2f}x |" for b, a, c in graphs),
    ]
    write_section("forward-layers", command_line(), "\n".join(lines))


if __name__ == "__main__":
    main()
