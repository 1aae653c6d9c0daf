"""Evaluate a model on the MNIST test set: MSE per pixel, PSNR, SSIM and MSE per digit.

python -m training.evaluate weights/autoencoder.safetensors
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from service.checkpoint import CheckpointError, load_checkpoint
from service.codecs.images import unit_float
from service.device import resolve_device
from service.model import AutoEncoder
from service.scoring import novelty, reconstruction_mse
from training.data import DEFAULT_DATA_DIR, DataError, MnistSplit, load_mnist
from training.quality import psnr, ssim_per_image

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Evaluation:
    mse: float  # mean over images of the per-pixel MSE, on [0,1] with outputs clamped to [0,1]
    psnr: float  # dB, from ``mse``: 10*log10(1/mse)
    ssim: float | None  # mean SSIM over images; None when not computed
    per_digit_mse: dict[str, float]  # label -> mean MSE of that digit's images
    output_std: float  # spread of the outputs across images; ~0 means the model collapsed
    images: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def images_to_float(images: torch.Tensor, device: torch.device | str) -> torch.Tensor:
    """(N,28,28) uint8 on the CPU -> (N,1,28,28) float32 in [0,1] on ``device``, scaled by
    ``service.codecs.images.unit_float``: the service's inputs and training's are the same floats."""
    return torch.from_numpy(unit_float(images.numpy())).unsqueeze(1).to(device, non_blocking=True)


@dataclass(frozen=True)
class ImageScores:
    mse: np.ndarray  # (N,) float32
    novelty: np.ndarray | None  # (N,) float32; None: the model has no novelty head


@torch.inference_mode()
def anomaly_scores(
    model: AutoEncoder, images: torch.Tensor, *, device: torch.device | str, batch_size: int = 1000
) -> ImageScores:
    """(N,28,28) uint8 -> each image's scores, as the service computes them (service/scoring.py)."""
    was_training = model.training
    model.eval()
    mse, novel = [], []
    for start in range(0, len(images), batch_size):
        x = images_to_float(images[start : start + batch_size], device)
        mse.append(reconstruction_mse(model.reconstruct(x), x).cpu())
        if model.novelty_head is not None:
            novel.append(novelty(model.novelty_logits(model.en(x))).cpu())
    model.train(was_training)
    return ImageScores(
        mse=torch.cat(mse).numpy().astype(np.float32),
        novelty=torch.cat(novel).numpy().astype(np.float32) if novel else None,
    )


@torch.inference_mode()
def evaluate(
    model: AutoEncoder,
    split: MnistSplit,
    *,
    device: torch.device | str,
    batch_size: int = 1000,
    with_ssim: bool = True,
) -> Evaluation:
    """Score ``model`` on ``split``. Reconstructions are clamped to [0,1], as users get them."""
    was_training = model.training
    model.eval()
    n = len(split)
    mse = torch.empty(n, device=device)
    ssim = torch.empty(n, device=device) if with_ssim else None
    out_sum = torch.zeros(28 * 28, device=device, dtype=torch.float64)
    out_sq_sum = torch.zeros_like(out_sum)
    for start in range(0, n, batch_size):
        x = images_to_float(split.images[start : start + batch_size], device)  # (B,1,28,28)
        y = model.reconstruct(x)
        mse[start : start + len(x)] = reconstruction_mse(y, x)
        if ssim is not None:
            ssim[start : start + len(x)] = ssim_per_image(y, x)
        flat = y.flatten(1).double()
        out_sum += flat.sum(0)
        out_sq_sum += flat.pow(2).sum(0)
    model.train(was_training)
    mse_cpu = mse.double().cpu()
    labels = split.labels.cpu()
    per_digit = {str(d): float(mse_cpu[labels == d].mean()) for d in range(10) if bool((labels == d).any())}
    mean_mse = float(mse_cpu.mean())
    variance = (out_sq_sum / n - (out_sum / n) ** 2).clamp_(min=0)
    return Evaluation(
        mse=mean_mse,
        psnr=psnr(mean_mse),
        ssim=float(ssim.double().mean()) if ssim is not None else None,
        per_digit_mse=per_digit,
        output_std=float(variance.sqrt().mean()),
        images=n,
    )


def format_report(ev: Evaluation) -> str:
    lines = [
        f"images      {ev.images}",
        f"test MSE    {ev.mse:.6f}  (per pixel, on [0,1])",
        f"PSNR        {ev.psnr:.2f} dB",
    ]
    if ev.ssim is not None:
        lines.append(f"mean SSIM   {ev.ssim:.4f}")
    lines += ["", "digit  MSE"] + [f"{d:>5}  {m:.6f}" for d, m in ev.per_digit_mse.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m training.evaluate",
        description="Score a checkpoint on the real MNIST test set (10k images).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("checkpoint", type=Path, help="a .safetensors checkpoint (or seed-style .pt state_dict)")
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR, help="where MNIST lives or goes")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, ...")
    parser.add_argument("--batch-size", type=int, default=1000)
    parser.add_argument("--json", action="store_true", help="print the result as JSON instead of a table")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    try:
        device = resolve_device(args.device)
        ckpt = load_checkpoint(args.checkpoint, device=device)
        test = load_mnist(args.data_dir, train=False)
    except (CheckpointError, DataError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    ev = evaluate(ckpt.model, test, device=device, batch_size=args.batch_size)
    if args.json:
        print(json.dumps(ev.to_dict(), indent=2))
        return 0
    print(f"checkpoint  {ckpt.path} (sha256 {ckpt.sha256[:16]}...)")
    print(format_report(ev))
    recorded = ckpt.metrics.get("test_mse")
    if isinstance(recorded, (int, float)):
        print(f"\nrecorded test MSE {recorded:.6f}; this run differs by {100 * (ev.mse / recorded - 1):+.3f}%")
    return 0


if __name__ == "__main__":
    sys.exit(main())
