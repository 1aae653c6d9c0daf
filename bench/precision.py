"""The served forward pass in float32 and in bfloat16 (MNIST_AE_PRECISION): speed by batch size,
and what bfloat16 costs in quality on the real MNIST test set.

    python -m bench.precision          # about a minute on 2 CPU cores

Both are the service's own Predictor (traced graphs, folded decoder), on the shipped weights:
numpy in, numpy out, as the batcher calls it. The two run in interleaved rounds (this machine's
speed drifts); each time is the median of the rounds.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch

from bench.report import write_section
from service.checkpoint import load_checkpoint
from service.device import cpu_has_bfloat16, resolve_device
from service.inference import Op, Precision, Predictor
from service.settings import DEFAULT_CHECKPOINT
from training.data import DEFAULT_DATA_DIR, load_mnist
from training.quality import mse_per_image, psnr, ssim_per_image

PRECISIONS: tuple[Precision, ...] = ("float32", "bfloat16")


def ms_per_batch(predictor: Predictor, images: np.ndarray, seconds: float) -> float:
    for _ in range(3):
        predictor.run(Op.RECONSTRUCT, images)
    started, calls = time.perf_counter(), 0
    while time.perf_counter() - started < seconds:
        predictor.run(Op.RECONSTRUCT, images)
        calls += 1
    return (time.perf_counter() - started) / calls * 1000


def quality(predictor: Predictor, images: np.ndarray) -> tuple[float, float, float, np.ndarray]:
    """Test MSE (per pixel, on [0,1]), PSNR, mean SSIM, and the reconstructions."""
    recon = np.concatenate(
        [predictor.run(Op.RECONSTRUCT, images[i : i + 1000])[0] for i in range(0, len(images), 1000)]
    )
    x, y = torch.from_numpy(images).unsqueeze(1), torch.from_numpy(recon)
    mse = float(mse_per_image(y, x).double().mean())
    return mse, psnr(mse), float(ssim_per_image(y, x).double().mean()), recon


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 32, 256])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=1.0, help="timed per batch size, precision and round")
    args = parser.parse_args()
    device = resolve_device(args.device)
    model = load_checkpoint(DEFAULT_CHECKPOINT, device=device).model
    predictors = {p: Predictor(model, device, precision=p) for p in PRECISIONS}
    test = (load_mnist(DEFAULT_DATA_DIR, train=False).images.numpy() / np.float32(255)).astype(np.float32)

    times: dict[tuple[int, str], list[float]] = {(n, p): [] for n in args.batches for p in PRECISIONS}
    for r in range(args.rounds):
        for n in args.batches:
            for p, predictor in predictors.items():
                times[n, p].append(ms_per_batch(predictor, test[:n], args.seconds))
                print(f"  round {r + 1}, batch {n}, {p}: {times[n, p][-1]:.3f} ms", flush=True)
    speed_rows = []
    for n in args.batches:
        f32, b16 = (statistics.median(times[n, p]) for p in PRECISIONS)
        speed_rows.append(
            f"| {n} | {f32:.3f} | {b16:.3f} | {n / f32 * 1000:,.0f} | {n / b16 * 1000:,.0f} | {f32 / b16:.2f}x |"
        )

    scores = {p: quality(predictor, test) for p, predictor in predictors.items()}
    diff = np.abs(scores["float32"][3] - scores["bfloat16"][3])
    quality_rows = [f"| {p} | {mse:.6f} | {db:.2f} | {ssim:.4f} |" for p, (mse, db, ssim, _) in scores.items()]
    where = f"{device.type}" + ("" if device.type != "cpu" else f", bfloat16 instructions: {cpu_has_bfloat16()}")
    body = "\n".join([
        f"## The forward pass in float32 and bfloat16 ({where})",
        "",
        f"The service's Predictor on the shipped weights, /reconstruct's graph, median of {args.rounds} "
        "interleaved rounds.",
        "",
        "| batch | float32 ms | bfloat16 ms | float32 images/s | bfloat16 images/s | bfloat16 speed |",
        "|---:|---:|---:|---:|---:|---:|",
        *speed_rows,
        "",
        "Quality on the 10,000 MNIST test digits (outputs clamped to [0,1], as served):",
        "",
        "| precision | test MSE | PSNR dB | SSIM |",
        "|---|---:|---:|---:|",
        *quality_rows,
        "",
        f"Largest difference between the two on any pixel: {diff.max():.4f} (mean {diff.mean():.5f}); "
        f"{(diff > 1 / 255).mean():.1%} of pixels differ by more than one grey level of 255. "
        "float32 stays the default: bfloat16 (`MNIST_AE_PRECISION=bfloat16`) is for deployments that "
        "prefer the throughput and accept that rounding.",
    ])  # fmt: skip
    command = "python -m bench.precision" + ("" if args.device == "cpu" else f" --device {args.device}")
    write_section(f"precision-{device.type}", command, body)


if __name__ == "__main__":
    main()
