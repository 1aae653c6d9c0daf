"""Regenerate the example files used by the README's curl commands.

    python examples/generate.py

seven.png, two.png, one.png: the first three MNIST test digits, as 28x28 grayscale PNGs;
digits.npy: the same three as a (3,28,28) uint8 array; images.json: them as /reconstruct's
JSON body; latent.json: the shipped model's code for the seven, as /decode's JSON body.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from service.checkpoint import load_checkpoint
from training.data import load_mnist

HERE = Path(__file__).resolve().parent
REPO = HERE.parent


def main() -> None:
    test = load_mnist(REPO / "data", train=False)
    digits = test.images[:3].numpy()  # a 7, a 2 and a 1
    for name, digit in zip(("seven", "two", "one"), digits, strict=True):
        Image.fromarray(digit).save(HERE / f"{name}.png")
    np.save(HERE / "digits.npy", digits, allow_pickle=False)
    (HERE / "images.json").write_text(json.dumps({"images": (digits / 255).round(4).tolist()}) + "\n")
    model = load_checkpoint(REPO / "weights" / "autoencoder.safetensors").model
    with torch.inference_mode():
        latent = model.encode(torch.from_numpy(digits[:1]).float().div(255).unsqueeze(1))[0]  # (16,7,7)
    (HERE / "latent.json").write_text(json.dumps({"latents": latent.numpy().round(4).tolist()}) + "\n")


if __name__ == "__main__":
    main()
