"""One training step at the recipe's batch size, with each optimizer implementation side by side,
and the first step of a fresh process, where torch.optim's Adam imports torch._dynamo.

    python -m bench.train_step          # about 40 seconds on 2 CPU cores

A step is what ``training.loop.train_one_epoch`` does per batch: uint8 images sliced from memory
and scaled, forward (channels_last), MSE, backward, Adam. The variants run in interleaved rounds
(this machine's speed drifts); each figure is the median of the rounds.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import textwrap
import time

import torch
import torch.nn.functional as F

from bench.harness import REPO
from bench.report import command_line, write_section
from service.model import AutoEncoder
from training.optim import Adam

# name -> (optimizer, its options, precision of the forward and backward)
VARIANTS: dict[str, tuple[type[torch.optim.Adam], dict[str, bool], str]] = {
    "torch.optim.Adam, foreach (torch's default)": (torch.optim.Adam, {"foreach": True}, "fp32"),
    "torch.optim.Adam, one parameter at a time": (torch.optim.Adam, {"foreach": False}, "fp32"),
    "torch.optim.Adam, fused": (torch.optim.Adam, {"fused": True}, "fp32"),
    "training.optim.Adam, fused (what training uses)": (Adam, {"fused": True}, "fp32"),
    "training.optim.Adam, fused, bfloat16 autocast (--precision bf16)": (Adam, {"fused": True}, "bf16"),
}
BASELINE = "torch.optim.Adam, foreach (torch's default)"

# a fresh interpreter: import torch, build the model and the optimizer, one step; prints the
# seconds from after `import torch` to after the step
FIRST_STEP = textwrap.dedent(
    """
    import sys, time
    import torch
    started = time.perf_counter()
    from service.model import AutoEncoder
    from training.optim import Adam
    model = AutoEncoder().to(memory_format=torch.channels_last)
    optimizer = (Adam if sys.argv[1] == "ours" else torch.optim.Adam)(model.parameters(), lr=0.003, fused=True)
    x = torch.rand(32, 1, 28, 28).contiguous(memory_format=torch.channels_last)
    torch.nn.functional.mse_loss(model(x), x).backward()
    optimizer.step()
    optimizer.zero_grad()
    print(time.perf_counter() - started)
    """
)
FIRST_STEP_VARIANTS = {"torch.optim.Adam, fused": "torch", "training.optim.Adam, fused (what training uses)": "ours"}


def first_step_seconds(which: str) -> float:
    command = [sys.executable, "-c", FIRST_STEP, which]
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, check=True)
    return float(result.stdout)


def ms_per_step(
    images: torch.Tensor,
    optimizer_class: type[torch.optim.Adam],
    optimizer_options: dict[str, bool],
    precision: str,
    *,
    batch_size: int,
    steps: int,
) -> float:
    torch.manual_seed(0)
    model = AutoEncoder().to(memory_format=torch.channels_last).train()
    optimizer = optimizer_class(model.parameters(), lr=0.003, **optimizer_options)
    order = torch.randperm(len(images), generator=torch.Generator().manual_seed(0))
    autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16")
    warmup = 20
    for i in range(warmup + steps):
        if i == warmup:
            started = time.perf_counter()
        batch = order[(i * batch_size) % len(images) :][:batch_size]
        x = images[batch].unsqueeze(1).float().div_(255).contiguous(memory_format=torch.channels_last)
        with autocast:
            y = model(x)
        loss = F.mse_loss(y.float(), x)
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
    first: dict[str, list[float]] = {name: [] for name in FIRST_STEP_VARIANTS}
    for r in range(args.rounds):
        for name, (optimizer_class, options, precision) in VARIANTS.items():
            ms = ms_per_step(images, optimizer_class, options, precision, batch_size=args.batch_size, steps=args.steps)
            times[name].append(ms)
            print(f"  round {r + 1} {name}: {ms:.3f} ms/step", flush=True)
        for name, which in FIRST_STEP_VARIANTS.items():
            first[name].append(first_step_seconds(which))
            print(f"  round {r + 1} {name}: first step after {first[name][-1]:.3f} s", flush=True)
    base = statistics.median(times[BASELINE])
    rows = [
        f"| {name} | {statistics.median(t):.3f} | {base / statistics.median(t):.2f}x |" for name, t in times.items()
    ]
    first_base = statistics.median(first["torch.optim.Adam, fused"])
    first_rows = [
        f"| {name} | {statistics.median(t):.2f} | {first_base - statistics.median(t):+.2f} s |"
        for name, t in first.items()
    ]
    body = "\n".join(
        [
            f"## Training: one step at batch {args.batch_size}, by Adam implementation and precision",
            "",
            f"Median of {args.rounds} interleaved rounds of {args.steps} steps (CPU, channels_last, 2 threads).",
            "",
            "| optimizer | ms per step | speed vs torch's default |",
            "|---|---:|---:|",
            *rows,
            "",
            "bfloat16 autocast runs the convolutions (forward and backward) in bfloat16, which this CPU "
            f"{'has' if torch.ops.mkldnn._is_mkldnn_bf16_supported() else 'lacks'} instructions for "
            "(AVX512-BF16/AMX); the weights, Adam's moments and the loss stay float32.",
            "",
            "training.optim.Adam runs torch's Adam without the decorators torch.optim puts on it for "
            "torch.compile; per step it is the same kernel. What it saves is at the start: those "
            "decorators import torch._dynamo (sympy, parts of inductor) on the first call. Seconds from "
            f"after `import torch` to the end of the first step, in a fresh process, median of {args.rounds}:",
            "",
            "| optimizer | seconds to the first step done | saved |",
            "|---|---:|---:|",
            *first_rows,
        ]
    )
    write_section("train-step", command_line(), body)


if __name__ == "__main__":
    main()
