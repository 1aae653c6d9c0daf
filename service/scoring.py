"""How an image is scored against the digits the model learned, and the decision made from the
scores: written once, for every front door (/reconstruct, the /v2 protocol) and for training,
whose calibration stores quantiles of these very scores.

- :func:`reconstruction_mse`: each image's mean squared error against its clamped reconstruction,
  on [0,1] intensities. Every answer carries it. It is high for what the autoencoder cannot redraw
  (noise, inverted or all-white images) and, below every normal image's, for a blank one; but this
  decoder redraws any pen stroke, so a letter scores like a digit (AUROC 0.50, docs/anomaly.md);
- :func:`novelty`: for a model with a novelty head (service/model.py), the log-odds that the image
  is not a digit: the head's "not a digit" logit against all ten digit logits together. Letters
  score well above digits (AUROC 0.96 with the shipped model);
- :func:`is_anomaly`: the decision at a quantile q, from the percentile of the decision score (the
  novelty, or the MSE for a model without a head) among held-out normal images
  (service/calibration.py): flagged above ``100 * q``, which flags about ``1 - q`` of normal
  images by construction; and also when the MSE lies outside the range of every normal image's,
  whatever the decision score says. The head, trained on non-digits that are strokes, blobs and
  noise, never saw an inverted digit and may call it one; its MSE is 6 to 7 times the highest
  normal one. On the MNIST test digits that second rule adds 5 in 10,000 to the flag rate.
- :func:`decide`: the decisions for one request, counted in the metrics.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch

if TYPE_CHECKING:  # type names only: this module imports no other of the service's
    from service.calibration import Calibration
    from service.metrics import Metrics


def reconstruction_mse(reconstruction: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
    """(N,C,H,W) x2 -> (N,): the mean squared error per pixel of each image."""
    return (reconstruction - images).pow(2).flatten(1).mean(dim=1)


def novelty(logits: torch.Tensor) -> torch.Tensor:
    """(N,11) novelty-head logits, the ten digits then "not a digit" -> (N,): the log-odds that the
    image is not a digit, log p(not a digit) - log p(any digit)."""
    return logits[:, -1] - torch.logsumexp(logits[:, :-1], dim=1)


def assess(
    mse: np.ndarray, novelty: np.ndarray | None, calibration: Calibration | None
) -> tuple[np.ndarray, np.ndarray]:
    """(N,) scores -> ((N,) float32 percentile of the decision score among normal images, in [0,100],
    (N,) bool: the MSE outside the normal range); NaN and False without a calibration."""
    if calibration is None:
        return np.full(mse.shape, np.nan, dtype=np.float32), np.zeros(mse.shape, dtype=bool)
    return calibration.assess(mse, novelty)


def is_anomaly(percentile: np.ndarray, outlying: np.ndarray, quantile: float) -> np.ndarray:
    """(N,) percentiles and MSE-outside-the-normal-range flags -> (N,) bool: above ``100 * quantile``,
    or outlying."""
    flagged: np.ndarray = (np.asarray(percentile) > np.float32(100.0 * quantile)) | np.asarray(outlying, dtype=bool)
    return flagged


@dataclass(frozen=True, slots=True)
class Scores:
    """Each image's verdict; ``percentile``, ``anomaly`` and ``quantile`` are None for an uncalibrated model."""

    mse: np.ndarray  # (N,) float32
    novelty: np.ndarray | None  # (N,) float32; None: the model has no novelty head
    percentile: np.ndarray | None  # (N,) float32 in [0,100], of the decision score
    anomaly: np.ndarray | None  # (N,) bool
    quantile: float | None  # the threshold quantile behind ``anomaly``


def decide(
    mse: np.ndarray,
    novelty: np.ndarray,
    percentile: np.ndarray,
    outlying: np.ndarray,
    quantile: float,
    metrics: Metrics,
) -> Scores:
    """The decisions at ``quantile`` for what the predictor computed (novelty NaN: the model has no
    head; percentile NaN: no calibration); every image's scores and the flagged ones go to ``metrics``."""
    novel = None if np.isnan(novelty).any() else novelty
    if np.isnan(percentile).any():
        scores = Scores(mse=mse, novelty=novel, percentile=None, anomaly=None, quantile=None)
    else:
        anomaly = is_anomaly(percentile, outlying, quantile)
        scores = Scores(mse=mse, novelty=novel, percentile=percentile, anomaly=anomaly, quantile=quantile)
    metrics.observe_scores(mse, novel, scores.anomaly)
    return scores
