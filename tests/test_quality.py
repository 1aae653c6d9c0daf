from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from service.scoring import reconstruction_mse
from training.quality import auroc, psnr, ssim_per_image


# the textbook SSIM, every local statistic a 2-D convolution: the oracle for training.quality's
def ssim_by_conv2d(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """(N,1,H,W) x2 -> (N,) SSIM, each local statistic a float64 conv2d with the 2-D window."""
    x, y = x.double(), y.double()
    g = torch.exp(-((torch.arange(11, dtype=torch.float64) - 5) ** 2) / (2 * 1.5**2))
    w = torch.outer(g / g.sum(), g / g.sum()).expand(1, 1, 11, 11)
    mu_x, mu_y = F.conv2d(x, w), F.conv2d(y, w)
    var_x, var_y = F.conv2d(x * x, w) - mu_x**2, F.conv2d(y * y, w) - mu_y**2
    cov = F.conv2d(x * y, w) - mu_x * mu_y
    c1, c2 = 0.01**2, 0.03**2
    ssim_map = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))
    return ssim_map.flatten(1).mean(dim=1).float()


def test_mse_and_psnr() -> None:
    x = torch.zeros(2, 1, 28, 28)
    y = torch.zeros(2, 1, 28, 28)
    y[1] = 0.1
    torch.testing.assert_close(reconstruction_mse(x, y), torch.tensor([0.0, 0.01]))
    assert psnr(0.01) == pytest.approx(20.0)
    assert psnr(0.0) == math.inf


def test_ssim_of_identical_images_is_one() -> None:
    x = torch.rand(3, 1, 28, 28)
    torch.testing.assert_close(ssim_per_image(x, x), torch.ones(3))


def test_ssim_of_constant_images_matches_the_closed_form() -> None:
    # for constant images a and b, variances and covariance vanish: SSIM = (2ab + C1) / (a^2 + b^2 + C1)
    a, b, c1 = 0.2, 0.7, 0.01**2
    x = torch.full((1, 1, 28, 28), a)
    y = torch.full((1, 1, 28, 28), b)
    expected = (2 * a * b + c1) / (a * a + b * b + c1)
    assert float(ssim_per_image(x, y)) == pytest.approx(expected, rel=1e-5)


def test_ssim_is_symmetric_and_falls_with_noise() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.rand(4, 1, 28, 28, generator=g)
    light = (x + 0.05 * torch.randn(x.shape, generator=g)).clamp(0, 1)
    heavy = (x + 0.3 * torch.randn(x.shape, generator=g)).clamp(0, 1)
    torch.testing.assert_close(ssim_per_image(x, light), ssim_per_image(light, x))
    assert (ssim_per_image(x, heavy) < ssim_per_image(x, light)).all()
    assert (ssim_per_image(x, light) < 1).all()


def test_ssim_rejects_mismatched_shapes() -> None:
    with pytest.raises(ValueError, match="expected two"):
        ssim_per_image(torch.rand(1, 1, 28, 28), torch.rand(1, 1, 14, 14))


@pytest.mark.parametrize("shape", [(5, 1, 28, 28), (2, 1, 28, 40)])
def test_ssim_equals_the_2d_convolution_form(shape: tuple[int, ...]) -> None:
    g = torch.Generator().manual_seed(1)
    x = torch.rand(shape, generator=g)
    y = (x + 0.1 * torch.randn(shape, generator=g)).clamp(0, 1)
    torch.testing.assert_close(ssim_per_image(x, y), ssim_by_conv2d(x, y), rtol=1e-6, atol=1e-7)


def test_ssim_rejects_images_smaller_than_its_window() -> None:
    with pytest.raises(ValueError, match="smaller than the 11x11 window"):
        ssim_per_image(torch.rand(1, 1, 8, 28), torch.rand(1, 1, 8, 28))


def test_auroc_is_the_pairwise_probability_with_ties_counting_half() -> None:
    rng = np.random.default_rng(0)
    for _ in range(30):
        scores = rng.integers(0, 6, size=40).astype(np.float64)  # many ties
        positive = rng.random(40) < 0.3
        if positive.all() or not positive.any():
            continue
        pos, neg = scores[positive], scores[~positive]
        pairwise = ((pos[:, None] > neg[None]) + 0.5 * (pos[:, None] == neg[None])).mean()
        assert auroc(scores, positive) == pytest.approx(pairwise, abs=1e-12)
    assert auroc(np.array([1.0, 2.0, 3.0]), np.array([False, False, True])) == 1.0
    assert auroc(np.array([3.0, 2.0, 1.0]), np.array([False, False, True])) == 0.0
    with pytest.raises(ValueError, match="both"):
        auroc(np.array([1.0, 2.0]), np.array([True, True]))
