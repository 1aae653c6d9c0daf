"""Image-quality measures on [0,1] intensities (PSNR and SSIM; the per-image MSE is the anomaly
score, service/scoring.py), and the AUROC of an anomaly score."""

from __future__ import annotations

import math

import numpy as np
import torch


def psnr(mse: float, data_range: float = 1.0) -> float:
    """Peak signal-to-noise ratio in dB for a mean squared error on [0, data_range]."""
    if mse <= 0.0:
        return math.inf
    return 10.0 * math.log10(data_range**2 / mse)


def _gaussian_band(size: int, window_size: int, sigma: float, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """(size - window_size + 1, size) matrix whose rows are the 1-D Gaussian window at each valid
    offset: ``band_h @ image @ band_w.T`` is the image filtered by the 2-D window (it is separable)
    over the valid region, what conv2d without padding gives, as two small matmuls."""
    coords = torch.arange(window_size, device=device, dtype=dtype) - (window_size - 1) / 2
    g = torch.exp(-(coords**2) / (2 * sigma**2))
    g = g / g.sum()
    band = torch.zeros(size - window_size + 1, size, device=device, dtype=dtype)
    for offset in range(band.shape[0]):
        band[offset, offset : offset + window_size] = g
    return band


def ssim_per_image(
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    data_range: float = 1.0,
    window_size: int = 11,
    sigma: float = 1.5,
) -> torch.Tensor:
    """(N,1,H,W) x2 -> (N,) structural similarity of each pair (Wang et al. 2004).

    The standard constants: an 11x11 Gaussian window with sigma 1.5, K1=0.01, K2=0.03,
    averaged over the valid (unpadded) region, which is 18x18 on a 28x28 image.
    """
    if x.shape != y.shape or x.ndim != 4 or x.shape[1] != 1:
        raise ValueError(f"expected two (N,1,H,W) tensors of one shape, got {tuple(x.shape)} and {tuple(y.shape)}")
    height, width = x.shape[-2:]
    if min(height, width) < window_size:
        raise ValueError(f"images of {height}x{width} are smaller than the {window_size}x{window_size} window")
    x, y = x.double(), y.double()  # E[x^2]-E[x]^2 loses digits in float32
    band_h = _gaussian_band(height, window_size, sigma, x.device, x.dtype)  # (H',H)
    band_w = _gaussian_band(width, window_size, sigma, x.device, x.dtype)  # (W',W)
    # the five local statistics of every pair, filtered at once: (N,5,H,W) -> (N,5,H',W')
    moments = band_h @ torch.cat([x, y, x * x, y * y, x * y], dim=1) @ band_w.T
    mu_x, mu_y, e_xx, e_yy, e_xy = moments.unbind(dim=1)  # each (N,H',W')
    var_x, var_y, cov = e_xx - mu_x**2, e_yy - mu_y**2, e_xy - mu_x * mu_y
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    ssim_map = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))
    return ssim_map.flatten(1).mean(dim=1).float()


def auroc(scores: np.ndarray, positive: np.ndarray) -> float:
    """Area under the ROC curve of ``scores`` for telling ``positive`` (True) from negative items:
    the probability that a random positive scores higher than a random negative, ties counting
    half (the Mann-Whitney U statistic from average ranks). Hand-written: 10 lines of numpy against
    scikit-learn as a dependency; tests/test_quality.py checks it against the pairwise definition."""
    scores = np.asarray(scores, dtype=np.float64)
    positive = np.asarray(positive, dtype=bool)
    n_pos = int(positive.sum())
    n_neg = len(positive) - n_pos
    if n_pos == 0 or n_neg == 0:
        raise ValueError("AUROC needs both positive and negative items")
    order = np.argsort(scores, kind="stable")
    _, inverse, counts = np.unique(scores[order], return_inverse=True, return_counts=True)
    last = np.cumsum(counts)  # 1-based rank of each distinct value's last occurrence
    ranks = np.empty(len(scores))
    ranks[order] = (last - (counts - 1) / 2)[inverse]  # tied items share their average rank
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))
