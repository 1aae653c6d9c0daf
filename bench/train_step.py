"""One training step at the recipe's batch size, with each optimizer implementation side by side.

    python -m bench.train_step          # about 20 seconds on 2 CPU cores

A step is what ``training.train.train_one_epoch`` does per batch: uint8 images sliced from memory
and scaled, forward (channels_last), MSE, backward, Adam. The variants run in interleaved rounds
(this machine's speed drifts); each figure is the median of the rounds.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from bench.report import write_section
from service.model import AutoEncoder

VARIANTS = {
    "Adam, foreach (torch's default)": {"foreach": True},
    "Adam, one parameter at a time": {"foreach": False},
    "Adam, fused (what training uses)": {"fused": True},
}


def ms_per_step(images: torch.Tensor, optimizer_options: dict[str, bool], *, batch_size: int, steps: int) -> float:
    torch.manual_seed(0)
    model = AutoEncoder().to(memory_format=torch.channels_last).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=0.003, **optimizer_options)
    order = torch.randperm(len(images), generator=torch.Generator().manual_seed(0))
    warmup = 20
    for i in range(warmup + steps):
        if i == warmup:
            started = time.perf_counter()
        batch = order[(i * batch_size) % len(images) :][:batch_size]
        x = images[batch].unsqueeze(1).float().div_(255).contiguous(memory_format=torch.channels_last)
        loss = F.mse_loss(model(x), x)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return (time.perf_counter() - started) / steps * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=300, help="timed steps per variant and round")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    images = torch.randint(0, 256, (60_000, 28, 28), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    times: dict[str, list[float]] = {name: [] for name in VARIANTS}
    for r in range(args.rounds):
        for name, options in VARIANTS.items():
            times[name].append(ms_per_step(images, options, batch_size=args.batch_size, steps=args.steps))
            print(f"  round {r + 1} {name}: {times[name][-1]:.3f} ms/step", flush=True)
    base = statistics.median(times["Adam, foreach (torch's default)"])
    rows = [
        f"| {name} | {statistics.median(t):.3f} | {base / statistics.median(t):.2f}x |" for name, t in times.items()
    ]
    body = "\n".join(
        [
            f"## Training: one step at batch {args.batch_size}, by Adam implementation",
            "",
            f"Median of {args.rounds} interleaved rounds of {args.steps} steps (CPU, channels_last, 2 threads).",
            "",
            "| optimizer | ms per step | speed vs torch's default |",
            "|---|---:|---:|",
            *rows,
        ]
    )
    write_section("train-step", "python -m bench.train_step", body)


if __name__ == "__main__":
    main()
