"""Pictures written beside a checkpoint: loss curves, reconstructions, and one digit's latent code."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt
import torch

from service.model import AutoEncoder
from training.data import MnistSplit
from training.evaluate import images_to_float

LOSS_CURVES = "loss_curves.png"
RECONSTRUCTIONS = "reconstructions.png"
LATENTS = "latents.png"


def write_pictures(
    out: Path, model: AutoEncoder, test: MnistSplit, history: list[dict[str, Any]], *, device: torch.device
) -> list[Path]:
    """Write the three pictures into ``out`` and return their paths."""
    return [
        plot_loss_curves(history, out / LOSS_CURVES),
        plot_reconstructions(model, test, out / RECONSTRUCTIONS, device=device),
        plot_latents(model, test, out / LATENTS, device=device),
    ]


def plot_loss_curves(history: list[dict[str, Any]], path: Path) -> Path:
    epochs = [h["epoch"] for h in history]
    fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
    ax.plot(epochs, [h["train_mse"] for h in history], marker=".", label="train MSE (running mean, unclamped)")
    ax.plot(epochs, [h["test_mse"] for h in history], marker=".", label="test MSE (end of epoch)")
    ax.set_yscale("log")
    ax.set_xlabel("epoch")
    ax.set_ylabel("MSE per pixel (log)")
    ax.set_title("MNIST autoencoder: loss per epoch")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


@torch.inference_mode()
def plot_reconstructions(
    model: AutoEncoder, test: MnistSplit, path: Path, *, device: torch.device, columns: int = 12, pairs: int = 2
) -> Path:
    """Rows of test digits, each above a row of their reconstructions."""
    model.eval()
    x = images_to_float(test.images[: columns * pairs], device)  # (K,1,28,28)
    y = model.reconstruct(x)
    fig, axes = plt.subplots(2 * pairs, columns, figsize=(columns * 0.8, 2 * pairs * 0.9), dpi=100)
    for p in range(pairs):
        for c in range(columns):
            i = p * columns + c
            for row, img in ((2 * p, x[i]), (2 * p + 1, y[i])):
                ax = axes[row, c]
                ax.imshow(img[0].cpu().numpy(), cmap="gray", vmin=0, vmax=1)
                ax.set_xticks([])
                ax.set_yticks([])
            if c == 0:
                axes[2 * p, 0].set_ylabel("input", fontsize=7)
                axes[2 * p + 1, 0].set_ylabel("output", fontsize=7)
    fig.suptitle("test digits (input) above their reconstructions (output)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


@torch.inference_mode()
def plot_latents(model: AutoEncoder, test: MnistSplit, path: Path, *, device: torch.device, index: int = 0) -> Path:
    """The seed's heatmaps: one digit, its 16 latent channels (7x7 each), and its reconstruction."""
    model.eval()
    x = images_to_float(test.images[index : index + 1], device)  # (1,1,28,28)
    z = model.encode(x)  # (1,16,7,7), or (1,32,1,1) with a dense bottleneck
    y = model.decode_images(z)
    if model.config.code_size:  # a vector: one strip of numbers, not 7x7 maps
        fig, axes = plt.subplots(1, 3, figsize=(9, 2), dpi=100, gridspec_kw={"width_ratios": [1, 1, 4]})
        for ax, img, title in ((axes[0], x, f"input ({int(test.labels[index])})"), (axes[1], y, "reconstruction")):
            ax.imshow(img[0, 0].cpu().numpy(), cmap="gray", vmin=0, vmax=1)
            ax.set_title(title, fontsize=8)
            ax.axis("off")
        axes[2].imshow(z[0, :, 0, 0].cpu().numpy()[None], cmap="coolwarm", aspect="auto")
        axes[2].set_title(f"its {z.shape[1]}-number code", fontsize=8)
        axes[2].set_yticks([])
        fig.tight_layout()
        fig.savefig(path)
        plt.close(fig)
        return path
    channels = z.shape[1]
    cols = 6
    rows = 1 + -(-channels // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 1.5, rows * 1.5), dpi=100)
    for ax in axes.flat:
        ax.axis("off")
    axes[0, 0].imshow(x[0, 0].cpu().numpy(), cmap="gray", vmin=0, vmax=1)
    axes[0, 0].set_title(f"input ({int(test.labels[index])})", fontsize=8)
    axes[0, 1].imshow(y[0, 0].cpu().numpy(), cmap="gray", vmin=0, vmax=1)
    axes[0, 1].set_title("reconstruction", fontsize=8)
    vmax = float(z.max()) or 1.0
    for ch in range(channels):
        ax = axes[1 + ch // cols, ch % cols]
        ax.imshow(z[0, ch].cpu().numpy(), cmap="viridis", vmin=0, vmax=vmax)
        ax.set_title(f"latent {ch}", fontsize=7)
    fig.suptitle("one test digit and its 16x7x7 latent code", fontsize=9)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
