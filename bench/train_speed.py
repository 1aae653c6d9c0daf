"""Training, time to quality: wall time from process start until test MSE <= 0.00526, the seed
notebook's own result after 15 epochs, for the seed's loop and for this project's training.

    python -m bench.train_speed            # about 3.5 minutes on 2 CPU cores, most of it the seed loop
    python -m bench.train_speed --seeds 0 1 2   # the one-pass recipes again with other seeds
    python -m bench.train_speed --seeds 0 1 2 3 4 --tries 3   # each run 3 times, seed loop too: medians (~12 min)

Each contender runs as its own process; the clock starts just before it is spawned and stops
at the first end-of-epoch test MSE at or under the target (the project's CLI and the seed loop
both score the real test set after every epoch).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field

from bench.report import command_line, plot_path, write_section
from tests.harness import REPO

TARGET_MSE = 0.00526
EPOCH_LINE = re.compile(r"^epoch\s+(\d+)/\d+\s+train MSE [\d.]+\s+test MSE ([\d.]+)")


@dataclass
class Run:
    name: str
    command: list[str]
    curve: list[tuple[float, float]] = field(default_factory=list)  # (seconds since spawn, test MSE), first try
    tries: list[float | None] = field(default_factory=list)  # seconds to target of each try; None: not reached

    @property
    def seconds_to_target(self) -> float | None:
        """The median try, or None if any try missed the target."""
        if not self.tries or None in self.tries:
            return None
        return statistics.median(t for t in self.tries if t is not None)


def watch(run: Run, timeout_s: float) -> None:
    """Run ``run.command`` once more, until its test MSE reaches the target; record the try."""
    curve: list[tuple[float, float]] = []
    reached: float | None = None
    started = time.perf_counter()
    process = subprocess.Popen(run.command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    assert process.stdout is not None
    try:
        for line in process.stdout:
            now = time.perf_counter() - started
            if line.startswith("{"):
                mse = float(json.loads(line)["test_mse"])
            elif match := EPOCH_LINE.match(line):
                mse = float(match.group(2))
            else:
                continue
            curve.append((now, mse))
            print(f"  {run.name}: {now:6.1f} s  test MSE {mse:.5f}", flush=True)
            if mse <= TARGET_MSE:
                reached = now
                break
            if now > timeout_s:
                break
    finally:
        process.kill()
        process.wait()
    run.tries.append(reached)
    if not run.curve:
        run.curve = curve


def device_description(device: str) -> str:
    """ "2 CPU cores" or "NVIDIA H200", asked of a child process (this one never imports torch)."""
    if device == "cpu":
        return f"{len(os.sched_getaffinity(0))} CPU cores"
    code = f"import torch; print(torch.cuda.get_device_name({device!r}))"
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()


def _seed(seed: int) -> str:
    return "" if seed == 0 else f", seed {seed}"


def plot(runs: list[Run], path: str, where: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(11, 4.5), dpi=100)
    # one colour per recipe: its runs with other seeds share it, and the legend names it once
    recipes = [run.name.split(", seed ")[0] for run in runs]
    colours: dict[str, str] = {}
    for run, recipe in zip(runs, recipes, strict=True):
        first = recipe not in colours
        colour = colours.setdefault(recipe, f"C{len(colours)}")
        seeds = recipes.count(recipe)
        label = (recipe if seeds == 1 else f"{recipe} ({seeds} seeds)") if first else None
        ax.plot([t for t, _ in run.curve], [m for _, m in run.curve], marker="o", color=colour, label=label)
    ax.axhline(TARGET_MSE, color="gray", linestyle="--", label=f"target {TARGET_MSE}")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("seconds since process start (log)")
    ax.set_ylabel("test MSE (log)")
    ax.set_title(f"Training: time to the seed's quality, {where}")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--seeds",
        type=int,
        nargs="+",
        default=[0],
        help="seeds for the one-pass recipes (the seed loop and the default recipe use 0)",
    )
    parser.add_argument(
        "--tries",
        type=int,
        default=1,
        help="runs of the seed loop and of each one-pass recipe and seed, in interleaved rounds; "
        "the table gives the median (the default recipe runs once)",
    )
    args = parser.parse_args()
    out = tempfile.mkdtemp(prefix="train-speed-")
    project = [sys.executable, "-m", "training", "--device", args.device, "--out", out, "--no-progress"]
    # one pass over 50k images, its learning rate decaying to 0 (warm-up 5%, then cosine): the decay
    # settles the weights, so the result holds across seeds, where a constant rate ends at whatever
    # its last steps reached
    fast = [
        "--epochs",
        "1",
        "--limit",
        "50000",
        "--batch-size",
        "32",
        "--lr",
        "0.01",
        "--schedule",
        "cosine",
        "--warmup-epochs",
        "0.05",
    ]
    full = ["--epochs", "1", "--batch-size", "32", "--lr", "0.003", "--schedule", "constant"]
    seeded = [
        run
        for seed in args.seeds
        for run in (
            Run(
                f"project, fast recipe, bf16 autocast: 50k images once, batch 32, lr 0.01 decaying to 0{_seed(seed)}",
                [*project, *fast, "--precision", "bf16", "--seed", str(seed)],
            ),
            Run(f"project, fast recipe, float32: the same recipe{_seed(seed)}", [*project, *fast, "--seed", str(seed)]),
            Run(
                f"project, float32: all 60k images once, batch 32, constant lr 0.003{_seed(seed)}",
                [*project, *full, "--seed", str(seed)],
            ),
        )
    ]
    runs = [
        Run(
            "seed loop: DataLoader+ToTensor, batch 32, Adam 0.01",
            [sys.executable, "-m", "bench.seed_loop", "--epochs", "15", "--device", args.device],
        ),
        *seeded,
        Run("project, default recipe (30 epochs, stopped at target)", [*project]),
    ]
    for run in runs:
        watch(run, timeout_s=600)
    for _ in range(args.tries - 1):  # the machine's speed drifts: later tries of every run side by side,
        for run in [runs[0], *seeded]:  # the seed loop's too, since every ratio divides its time
            watch(run, timeout_s=600)
    seed = runs[0]
    seed_time = seed.seconds_to_target or seed.curve[-1][0]
    rows = []
    for run in runs:
        reached = run.seconds_to_target
        final = run.curve[-1][1] if run.curve else float("nan")
        speedup = f"{seed_time / reached:.1f}x" if reached else "-"
        tries = ", ".join("-" if t is None else f"{t:.1f}" for t in run.tries) if len(run.tries) > 1 else ""
        when = f"{reached:.1f}" if reached else "not reached"
        rows.append(f"| {run.name} | {when} | {tries} | {final:.5f} | {speedup} |")
    # the CPU figure keeps its old name; other devices get their own
    picture = "train_speed.png" if args.device == "cpu" else f"train_speed-{args.device.replace(':', '')}.png"
    plot(runs, str(plot_path(picture)), device_description(args.device))
    note = (
        ""
        if seed.seconds_to_target
        else f" The seed loop did not reach the target in its 15 epochs (final {seed.curve[-1][1]:.5f}); "
        "its time is that of all 15 epochs, after which the seed reports its result."
    )
    if args.tries > 1:
        note += (
            f" The seed loop and each one-pass run were tried {args.tries} times in interleaved rounds; the "
            "table gives the median try (the plot, the first try's curve) and the test MSE, the same in every try."
        )
    body = "\n".join(
        [
            f"## Training: time to test MSE <= {TARGET_MSE} ({args.device}: {device_description(args.device)})",
            "",
            "Wall time from process start (imports and data loading included) until the first end-of-epoch "
            f"test MSE at or under {TARGET_MSE}, the seed's own result after 15 epochs.{note}",
            "",
            "| run | seconds to target | each try | test MSE then | speed-up vs seed |",
            "|---|---:|---|---:|---:|",
            *rows,
            "",
            "What makes the difference: the data set lives in memory, scaled to [0,1] once, and batches are "
            "sliced from it (no per-item PIL/ToTensor), channels_last activations (about 2x on CPU), fused Adam, a "
            "learning rate that warms up and decays to 0 on a cosine (the seed's stays at 0.01), and, in the "
            "first row of each seed, the forward and backward under bfloat16 autocast (`--precision bf16`; "
            "weights, Adam and the loss stay float32), which CPUs with AVX512-BF16 or AMX and GPUs run natively: "
            "the float32 row below it is the same recipe without it. One pass at a constant rate ends wherever "
            "its last steps leave it, so its result depends on the seed much more than with the decay: the rows "
            "with other seeds show how much.",
            "",
            f"![test MSE against wall time](bench/plots/{picture})",
        ]
    )
    write_section(f"train-speed-{args.device}", command_line(), body)


if __name__ == "__main__":
    main()
