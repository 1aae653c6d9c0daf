"""Does the served anomaly decision see what is not a digit? Out-of-distribution families against
the MNIST test digits, scored as the service scores them.

    python -m training.ood weights/autoencoder.safetensors     # the table in docs/anomaly.md, ~1 min
    python -m training.ood CHECKPOINT --report docs/anomaly.md  # ... and write it there

For each family of non-digits (training/ood_inputs.py: letters and symbols in several fonts,
random scribbles, noise, blank, all-white and inverted digits), made MNIST-style, it prints the
AUROC of the service's anomaly decision for telling the family from the 10,000 test digits, and the
share of the family the service flags at the quantile (default: the service's, 0.99), beside the
share of test digits flagged. The decision ranks images by the percentile of the decision score,
and those whose MSE is outside the normal range above all (service/scoring.py); the AUROC of the
MSE alone and of the novelty alone (for a model with a novelty head) are beside it. The images go
through the service's own predictor and scoring.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from service.calibration import DEFAULT_QUANTILE
from service.checkpoint import CheckpointError, load_checkpoint
from service.codecs.images import unit_float
from service.device import resolve_device
from service.inference import Op, Predictor
from service.scoring import is_anomaly
from training.anomaly import replace_between
from training.data import DEFAULT_DATA_DIR, DataError, load_mnist
from training.ood_inputs import families, font_files
from training.quality import auroc

log = logging.getLogger(__name__)
MARKERS = ("<!-- ood-table:start -->", "<!-- ood-table:end -->")


@dataclass(frozen=True)
class Scored:
    mse: np.ndarray  # (N,)
    novelty: np.ndarray | None  # (N,); None: the model has no novelty head
    rank: np.ndarray  # (N,) the decision's order: the percentile, or above 100 when the MSE is outlying
    flagged: np.ndarray  # (N,) bool, at the quantile


@dataclass(frozen=True)
class FamilyRow:
    name: str
    images: int
    auroc: float  # of the decision, this family against the test digits
    flagged: float  # share flagged at the quantile
    auroc_mse: float
    auroc_novelty: float | None


def score(predictor: Predictor, images: np.ndarray, quantile: float, batch: int = 1000) -> Scored:
    """(N,28,28) uint8 -> each image's scores and decision, as /reconstruct gives them."""
    parts = []
    for start in range(0, len(images), batch):
        _, mse, novelty, percentile, outlying = predictor.run(Op.RECONSTRUCT, unit_float(images[start : start + batch]))
        parts.append((mse, novelty, np.where(outlying, 101.0, percentile), is_anomaly(percentile, outlying, quantile)))
    mse, novelty, rank, flagged = (np.concatenate(column) for column in zip(*parts, strict=True))
    return Scored(mse, None if np.isnan(novelty).any() else novelty, rank, flagged)


def evaluate(predictor: Predictor, digits: np.ndarray, quantile: float) -> tuple[float, list[FamilyRow]]:
    """The share of ``digits`` flagged, and a row per family of non-digits."""
    normal = score(predictor, digits, quantile)
    rows = []
    for name, images in families(digits).items():
        foreign = score(predictor, images, quantile)
        positive = np.concatenate([np.zeros(len(normal.mse), bool), np.ones(len(foreign.mse), bool)])
        novelty = None
        if normal.novelty is not None and foreign.novelty is not None:
            novelty = auroc(np.concatenate([normal.novelty, foreign.novelty]), positive)
        rows.append(
            FamilyRow(
                name=name,
                images=len(images),
                auroc=auroc(np.concatenate([normal.rank, foreign.rank]), positive),
                flagged=float(foreign.flagged.mean()),
                auroc_mse=auroc(np.concatenate([normal.mse, foreign.mse]), positive),
                auroc_novelty=novelty,
            )
        )
    return float(normal.flagged.mean()), rows


def table(digits_flagged: float, digits: int, rows: list[FamilyRow], quantile: float) -> str:
    lines = [
        f"| family | images | AUROC of the decision against the {digits:,} test digits | flagged at q = {quantile:g} "
        "| AUROC of the MSE | AUROC of the novelty |",
        "|---|---:|---:|---:|---:|---:|",
        f"| test digits (normal) | {digits:,} | | {100 * digits_flagged:.2f}% | | |",
    ]
    for r in rows:
        novelty = "no head" if r.auroc_novelty is None else f"{r.auroc_novelty:.3f}"
        lines.append(
            f"| {r.name} | {r.images:,} | {r.auroc:.3f} | {100 * r.flagged:.1f}% | {r.auroc_mse:.3f} | {novelty} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA_DIR, help="where MNIST is (fetched if absent)")
    parser.add_argument("--quantile", type=float, default=DEFAULT_QUANTILE, help="the decisions' quantile")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--report", type=Path, help="also write the table into this Markdown file, between markers")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    started = time.perf_counter()
    device = resolve_device(args.device)
    try:
        checkpoint = load_checkpoint(args.checkpoint, device=device)
        test = load_mnist(args.data, train=False)
    except (CheckpointError, DataError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if checkpoint.calibration is None:
        print(f"error: {args.checkpoint} has no calibration: add it with python -m training.calibrate", file=sys.stderr)
        return 1
    predictor = Predictor(checkpoint.model, device, checkpoint.calibration)
    digits = test.images.numpy()
    digits_flagged, rows = evaluate(predictor, digits, args.quantile)
    fonts = ", ".join(sorted({path.stem.split("-")[0] for path in font_files()})) or "none installed"
    seconds = time.perf_counter() - started
    text = (
        f"{table(digits_flagged, len(digits), rows, args.quantile)}\n\n"
        f"Checkpoint sha256 {checkpoint.sha256[:12]}; letters and symbols in Pillow's bundled font and {fonts}; "
        f"{seconds:.0f} s on {device}. Reproduce: `python -m training.ood {args.checkpoint}`"
    )
    print(text)
    if args.report is not None:
        try:
            replace_between(args.report, MARKERS, text)
        except (OSError, ValueError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
