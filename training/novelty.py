"""Train a checkpoint's novelty head, whose log-odds of "not a digit" is the service's anomaly
decision score (service/scoring.py), and recalibrate the checkpoint.

    python -m training.novelty weights/autoencoder.safetensors          # adds (or retrains) the head, ~5 min
    python -m training.novelty CHECKPOINT --out runs/with-head/autoencoder.safetensors

Training (python -m training) ends with this step too. The autoencoder stays frozen: its weights, its
reconstructions and its MSE stay exactly as they were. The head (service/model.py) reads the
encoder's (16,7,7) features and learns eleven classes with cross-entropy: the ten digits, from the
training images the recipe trained on (the held-out ones stay unseen, for the calibration), and
"not a digit", from the outlier-exposure set of training/outliers.py: random pen strokes, blobs,
noise, and chimeras of two training digits. Never letters, symbols or font renderings: those are
what ``python -m training.ood`` measures, so what it reports is how the head generalises to
non-digits it never saw. Why this design, and what else was tried: docs/decisions.md.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from service.checkpoint import CheckpointError, git_commit, load_checkpoint, save_checkpoint
from service.device import resolve_device
from service.model import NOVELTY_CLASSES, AutoEncoder
from training.calibrate import calibrate, normal_images
from training.data import DEFAULT_DATA_DIR, DataError, MnistSplit, hold_out, load_mnist_splits
from training.evaluate import images_to_float
from training.outliers import KINDS, outlier_exposure

log = logging.getLogger(__name__)

NOT_A_DIGIT = NOVELTY_CLASSES - 1  # the last class
# outlier-exposure images per training digit, by kind: 55,000 digits get 8,800 strokes, 2,750 blobs,
# 2,200 noise images and 19,800 chimeras. Chimeras matter most: without them letters score AUROC 0.90
# instead of 0.96 (docs/decisions.md)
OUTLIERS_PER_DIGIT = {"strokes": 0.16, "blobs": 0.05, "noise": 0.04, "chimeras": 0.36}


@dataclass(frozen=True)
class NoveltyRecipe:
    """How the head is trained; recorded in the checkpoint's metadata (``training.novelty``)."""

    channels: int = 32  # ModelConfig.novelty_channels
    epochs: int = 10
    batch_size: int = 128
    lr: float = 1e-3
    seed: int = 0


@torch.inference_mode()
def _features(model: AutoEncoder, images: np.ndarray, device: torch.device, batch: int = 2000) -> torch.Tensor:
    """(N,28,28) uint8 -> (N,16,7,7) encoder features, on ``device``."""
    return torch.cat(
        [
            model.en(images_to_float(torch.from_numpy(images[i : i + batch]), device))
            for i in range(0, len(images), batch)
        ]
    )


def add_head(
    model: AutoEncoder, digits: MnistSplit, recipe: NoveltyRecipe, *, device: torch.device
) -> tuple[AutoEncoder, dict[str, Any]]:
    """``model`` with a novelty head trained on ``digits`` (all ten) and the outlier-exposure set; the
    autoencoder's weights are copied unchanged. Returns it, in eval mode, and what to record."""
    started = time.perf_counter()
    labels = digits.labels.numpy()
    if len(np.unique(labels)) != NOT_A_DIGIT:
        raise ValueError(
            "the novelty head learns the ten digits; this model trained on digits "
            f"{sorted(set(labels.tolist()))} (a one-class model's score is its reconstruction MSE)"
        )
    torch.manual_seed(recipe.seed)
    with_head = AutoEncoder(replace(model.config, novelty_channels=recipe.channels))
    autoencoder = {k: v for k, v in model.state_dict().items() if not k.startswith("novelty_head.")}
    with_head.load_state_dict({**with_head.state_dict(), **autoencoder})
    with_head.to(device).eval()
    assert with_head.novelty_head is not None

    images = digits.images.numpy()
    counts = {kind: round(share * len(images)) for kind, share in OUTLIERS_PER_DIGIT.items()}
    foreign = np.concatenate([made for made in outlier_exposure(images, labels, counts, recipe.seed).values()])
    x = torch.cat([_features(with_head, images, device), _features(with_head, foreign, device)])  # (N,16,7,7)
    y = torch.cat([digits.labels, torch.full((len(foreign),), NOT_A_DIGIT)]).to(device)
    log.info("novelty head: %d digits and %d outliers %s", len(images), len(foreign), counts)

    head = with_head.novelty_head.train()
    optimizer = torch.optim.Adam(head.parameters(), lr=recipe.lr)
    generator = torch.Generator().manual_seed(recipe.seed)
    for epoch in range(recipe.epochs):
        order = torch.randperm(len(x), generator=generator).to(device)
        total = 0.0
        for start in range(0, len(x), recipe.batch_size):
            batch = order[start : start + recipe.batch_size]
            loss = F.cross_entropy(head(x[batch]), y[batch])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()  # type: ignore[no-untyped-call]  # torch leaves Tensor.backward unannotated
            optimizer.step()
            total += loss.item() * len(batch)
        log.info("novelty head epoch %d/%d: cross-entropy %.4f", epoch + 1, recipe.epochs, total / len(x))
    with_head.eval()
    record = {
        **asdict(recipe),
        "digits": len(images),
        "outliers": counts,
        "kinds": list(KINDS),
        "seconds": round(time.perf_counter() - started, 1),
        "git_commit": git_commit(),
    }
    return with_head, record


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m training.novelty",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    defaults = NoveltyRecipe()
    parser.add_argument("checkpoint", type=Path, help="a .safetensors checkpoint of a model trained on all ten digits")
    parser.add_argument("--out", type=Path, help="where to write the result (default: over the checkpoint)")
    parser.add_argument("--channels", type=int, default=defaults.channels, help="the head's channels")
    parser.add_argument("--epochs", type=int, default=defaults.epochs)
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR, help="where MNIST lives or goes")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, ...")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if args.channels < 1 or args.epochs < 1:
        parser.error("--channels and --epochs must be positive")
    recipe = NoveltyRecipe(channels=args.channels, epochs=args.epochs, seed=args.seed)
    try:
        device = resolve_device(args.device)
        checkpoint = load_checkpoint(args.checkpoint, device=device, allow_seed_format=False, read_calibration=False)
        normal, split = normal_images(checkpoint, args.data_dir)
        train, _ = load_mnist_splits(args.data_dir)
        trained = checkpoint.metadata.get("training", {})
        if split == "validation":
            train = hold_out(train, trained["validation"])[0]  # the images the autoencoder trained on
        digits = trained.get("digits")
        model, record = add_head(
            checkpoint.model, train.of_digits(tuple(digits) if digits else None), recipe, device=device
        )
    except (CheckpointError, DataError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    calibration = calibrate(model, normal, device=device, split=split)
    out = args.out or checkpoint.path
    metadata = checkpoint.metadata
    save_checkpoint(
        model,
        out,
        training={**metadata.get("training", {}), "novelty": record},
        dataset=metadata.get("dataset"),
        metrics=metadata.get("metrics"),
        calibration=calibration,
        source_commit=metadata.get("git_commit"),  # the autoencoder's; the head's is in training.novelty
    )
    load_checkpoint(out)  # what the service will do: it must accept what was written
    print(
        f"{out}: novelty head of {recipe.channels} channels trained in {record['seconds']} s; calibrated on "
        f"{calibration.images} {split} images, p99 novelty {calibration.threshold(0.99):.3f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
