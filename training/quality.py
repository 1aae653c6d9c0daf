"""Image-quality measures on [0,1] intensities: MSE per pixel, PSNR and SSIM."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def mse_per_image(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """(N,C,H,W) x2 -> (N,) mean squared error per pixel of each image."""
    return (x - y).pow(2).flatten(1).mean(dim=1)


def psnr(mse: float, data_range: float = 1.0) -> float:
    """Peak signal-to-noise ratio in dB for a mean squared error on [0, data_range]."""
    if mse <= 0.0:
        return math.inf
    return 10.0 * math.log10(data_range**2 / mse)


def _gaussian_window(size: int, sigma: float, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    coords = torch.arange(size, device=device, dtype=dtype) - (size - 1) / 2
    g = torch.exp(-(coords**2) / (2 * sigma**2))
    g = g / g.sum()
    return torch.outer(g, g).expand(1, 1, size, size)  # (1,1,size,size)


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
    x, y = x.double(), y.double()  # E[x^2]-E[x]^2 loses digits in float32
    w = _gaussian_window(window_size, sigma, x.device, x.dtype)
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    mu_x, mu_y = F.conv2d(x, w), F.conv2d(y, w)
    var_x = F.conv2d(x * x, w) - mu_x**2
    var_y = F.conv2d(y * y, w) - mu_y**2
    cov = F.conv2d(x * y, w) - mu_x * mu_y
    ssim_map = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))
    return ssim_map.flatten(1).mean(dim=1).float()
