"""Does the served anomaly decision see what is not a digit? Out-of-distribution families against
the MNIST test digits, scored as the service scores them.

    python -m training.ood weights/autoencoder.safetensors     # the table in docs/anomaly.md, ~1 min
    python -m training.ood CHECKPOINT --report docs/anomaly.md  # ... and write it there

For each family of non-digits (training/ood_inputs.py: letters and symbols in several fonts,
random scribbles, noise, blank, all-white and inverted digits), made MNIST-style, it prints the
AUROC of the service's anomaly score for telling the family from the 10,000 test digits, and the
share of the family the service flags at the quantile (default: the service's, 0.99), beside the
share of test digits flagged. The images go through the service's own predictor and scoring.
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
    score: np.ndarray  # (N,) the score the decision is made from, higher is more anomalous
    flagged: np.ndarray  # (N,) bool, at the quantile


@dataclass(frozen=True)
class FamilyRow:
    name: str
    images: int
    auroc: float  # of the score, this family against the test digits
    flagged: float  # share flagged at the quantile


def score(predictor: Predictor, images: np.ndarray, quantile: float, batch: int = 1000) -> Scored:
    """(N,28,28) uint8 -> each image's score and decision, as /reconstruct gives them."""
    scores, flags = [], []
    for start in range(0, len(images), batch):
        _, mse, percentile = predictor.run(Op.RECONSTRUCT, unit_float(images[start : start + batch]))
        scores.append(mse)
        flags.append(is_anomaly(percentile, quantile))
    return Scored(np.concatenate(scores), np.concatenate(flags))


def evaluate(predictor: Predictor, digits: np.ndarray, quantile: float) -> tuple[float, list[FamilyRow]]:
    """The share of ``digits`` flagged, and a row per family of non-digits."""
    normal = score(predictor, digits, quantile)
    rows = []
    for name, images in families(digits).items():
        foreign = score(predictor, images, quantile)
        both = np.concatenate([normal.score, foreign.score])
        positive = np.concatenate([np.zeros(len(normal.score), bool), np.ones(len(foreign.score), bool)])
        rows.append(FamilyRow(name, len(images), auroc(both, positive), float(foreign.flagged.mean())))
    return float(normal.flagged.mean()), rows


def table(digits_flagged: float, digits: int, rows: list[FamilyRow], quantile: float) -> str:
    lines = [
        f"| family | images | AUROC against the {digits:,} test digits | flagged at q = {quantile:g} |",
        "|---|---:|---:|---:|",
        f"| test digits (normal) | {digits:,} | | {100 * digits_flagged:.2f}% |",
    ]
    lines += [f"| {r.name} | {r.images:,} | {r.auroc:.3f} | {100 * r.flagged:.1f}% |" for r in rows]
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
