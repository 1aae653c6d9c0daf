"""Calibrate a checkpoint's anomaly scores: score normal images it did not train on, store the
quantiles of their reconstruction MSE (and novelty, for a model with a novelty head) in its metadata
(service/calibration.py says how they are used).

    python -m training.calibrate weights/autoencoder.safetensors

Training does this itself at the end; this command is for a checkpoint made before, or to recompute
it. The normal images are the ones the checkpoint's recipe held out (the last ``validation`` images
of MNIST's training split, of its ``digits``). A checkpoint whose metadata records no held-out
images trained on all 60,000, so it is calibrated on the MNIST test set instead, and says so
(``split: "test"``): flag rates measured on the test set are then in-sample. The weights file is not
touched; its sha256 stays the same.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import torch

from service.calibration import Calibration
from service.checkpoint import Checkpoint, CheckpointError, load_checkpoint, write_calibration
from service.device import resolve_device
from service.model import AutoEncoder
from training.data import DEFAULT_DATA_DIR, DataError, MnistSplit, hold_out, load_mnist_splits
from training.evaluate import anomaly_scores

log = logging.getLogger(__name__)


def calibrate(model: AutoEncoder, normal: MnistSplit, *, device: torch.device | str, split: str) -> Calibration:
    """Quantiles of ``model``'s scores (MSE, and novelty with a head) on the ``normal`` images, overall and
    per digit."""
    scores = anomaly_scores(model, normal.images, device=device)
    return Calibration.from_scores(scores.mse, normal.labels.numpy(), split=split, novelty=scores.novelty)


def normal_images(checkpoint: Checkpoint, data_dir: Path) -> tuple[MnistSplit, str]:
    """The images ``checkpoint`` holds to be normal and never trained on, and where they come from."""
    training = checkpoint.metadata.get("training", {})
    digits = training.get("digits")
    digits = tuple(digits) if digits else None
    train, test = load_mnist_splits(data_dir)
    validation = training.get("validation")
    if isinstance(validation, int) and validation > 0:
        return hold_out(train, validation)[1].of_digits(digits), "validation"
    log.warning(
        "%s records no held-out images (it trained on the whole training split): calibrating on the MNIST "
        "test set, whose flag rates are then in-sample",
        checkpoint.path,
    )
    return test.of_digits(digits), "test"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m training.calibrate",
        description="Store the anomaly calibration (quantiles of the scores of held-out normal images: the "
        "reconstruction MSE, and the novelty with a novelty head) in a checkpoint's metadata.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("checkpoint", type=Path, help="a .safetensors checkpoint (its .json beside it is rewritten)")
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR, help="where MNIST lives or goes")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, ...")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        device = resolve_device(args.device)
        # its calibration, which may be old or broken, is what this replaces
        checkpoint = load_checkpoint(args.checkpoint, device=device, allow_seed_format=False, read_calibration=False)
        normal, split = normal_images(checkpoint, args.data_dir)
    except (CheckpointError, DataError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    calibration = calibrate(checkpoint.model, normal, device=device, split=split)
    write_calibration(checkpoint, calibration)
    load_checkpoint(checkpoint.path)  # what the service will do: it must accept what was written
    summary = calibration.summary(0.99)
    print(f"{checkpoint.path}: calibrated on {calibration.images} {split} images of digits {list(calibration.digits)}")
    for name, quantiles in summary["scores"].items():
        print(
            f"  {name:8s}"
            + "  ".join(f"{level} {value:.6g}" for level, value in quantiles.items() if level != "per_digit")
        )
    print(f"  the decision score: {calibration.decision_score}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
