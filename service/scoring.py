"""How an image is scored against the digits the model learned, and the decision made from the
score: written once, for every front door (/reconstruct, the /v2 protocol) and for training,
whose calibration stores quantiles of this very score.

- :func:`reconstruction_mse`: the score, each image's mean squared error against its clamped
  reconstruction, on [0,1] intensities;
- :func:`percentiles`: where a score lies among normal images' scores, from the checkpoint's
  calibration (service/calibration.py);
- :func:`decide`: the anomaly decision at a quantile, counted in the metrics.

The decision: an image is flagged when its percentile is above ``100 * q``, i.e. it scores higher
than a fraction q of normal images, which flags about ``1 - q`` of normal images by construction;
and also at percentile 0, an image reconstructed better than every normal one. That is a blank or
nearly blank input, which any autoencoder redraws almost perfectly (the shipped model: MSE 6e-10
for an all-black image, 4e-4 for the best-drawn 0.1% of digits); on the MNIST test digits it adds
5 in 10,000 to the flag rate.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch

if TYPE_CHECKING:  # type names only: calibration.py imports SCORE from here
    from service.calibration import Calibration
    from service.metrics import Metrics

SCORE = "mse"  # the name the calibration records, so a checkpoint calibrated on another score is refused


def reconstruction_mse(reconstruction: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
    """(N,C,H,W) x2 -> (N,): the mean squared error per pixel of each image."""
    return (reconstruction - images).pow(2).flatten(1).mean(dim=1)


def percentiles(mse: np.ndarray, calibration: Calibration | None) -> np.ndarray:
    """(N,) scores -> (N,) float32 percentiles among normal images, in [0,100]; NaN without a calibration."""
    if calibration is None:
        return np.full(mse.shape, np.nan, dtype=np.float32)
    return calibration.percentiles(mse)


def is_anomaly(percentile: np.ndarray, quantile: float) -> np.ndarray:
    """(N,) percentiles -> (N,) bool: above ``100 * quantile``, or at 0 (below every normal image)."""
    percentile = np.asarray(percentile)
    return (percentile > np.float32(100.0 * quantile)) | (percentile <= 0)


@dataclass(frozen=True, slots=True)
class Scores:
    """Each image's verdict; ``percentile``, ``anomaly`` and ``quantile`` are None for an uncalibrated model."""

    mse: np.ndarray  # (N,) float32
    percentile: np.ndarray | None  # (N,) float32 in [0,100]
    anomaly: np.ndarray | None  # (N,) bool
    quantile: float | None  # the threshold quantile behind ``anomaly``


def decide(mse: np.ndarray, percentile: np.ndarray, quantile: float, metrics: Metrics) -> Scores:
    """The decisions at ``quantile`` for scores the batcher computed (percentile NaN: the model that
    ran them has no calibration); every image's score and the flagged ones are counted in ``metrics``."""
    if np.isnan(percentile).any():
        scores = Scores(mse=mse, percentile=None, anomaly=None, quantile=None)
    else:
        scores = Scores(mse=mse, percentile=percentile, anomaly=is_anomaly(percentile, quantile), quantile=quantile)
    metrics.observe_scores(mse, scores.anomaly)
    return scores
