from __future__ import annotations

import math

import pytest
import torch

from service.model import AutoEncoder
from training.data import MnistSplit
from training.evaluate import Evaluation, images_to_float
from training.loop import TrainingDiverged, check_not_collapsed, train_one_epoch


@pytest.mark.integration  # the real MNIST test set
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_a_few_hundred_steps_lower_the_loss(mnist_test: MnistSplit, precision: str) -> None:
    torch.manual_seed(0)
    model = AutoEncoder().to(memory_format=torch.channels_last)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    images = images_to_float(mnist_test.images[:2048], torch.device("cpu"))
    losses = []
    for epoch in range(5):  # 5 x 64 = 320 steps of 32 images
        losses.append(
            train_one_epoch(
                model,
                opt,
                images,
                batch_size=32,
                device=torch.device("cpu"),
                precision=precision,
                generator=torch.Generator().manual_seed(epoch),
                lr_for_step=lambda s: 3e-3,
                first_step=epoch * 64,
            )
        )
    assert losses[-1] < 0.5 * losses[0], losses
    assert losses[-1] < 0.03  # far below the ~0.1 of a constant image
    # under autocast only the activations are bfloat16: the weights Adam updates stay float32
    assert all(p.dtype == torch.float32 for p in model.parameters())


def test_non_finite_loss_stops_training() -> None:
    model = AutoEncoder()
    with torch.no_grad():
        model.en[0].weight[0, 0, 0, 0] = float("nan")  # type: ignore[operator]
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    images = torch.rand(64, 1, 28, 28)
    with pytest.raises(TrainingDiverged, match=r"loss became nan.*lower --lr"):
        train_one_epoch(
            model,
            opt,
            images,
            batch_size=32,
            device=torch.device("cpu"),
            generator=torch.Generator(),
            lr_for_step=lambda s: 1e-3,
            first_step=0,
        )


def _evaluation(mse: float, output_std: float) -> Evaluation:
    return Evaluation(mse=mse, psnr=0.0, ssim=None, per_digit_mse={}, output_std=output_std, images=10)


def test_collapse_is_detected() -> None:
    check_not_collapsed(_evaluation(0.004, 0.3), baseline_mse=0.095, epoch=3)
    with pytest.raises(TrainingDiverged, match="collapsed"):
        check_not_collapsed(_evaluation(0.096, 0.05), baseline_mse=0.095, epoch=3)
    with pytest.raises(TrainingDiverged, match="collapsed"):
        check_not_collapsed(_evaluation(0.05, 0.0), baseline_mse=0.095, epoch=3)
    with pytest.raises(TrainingDiverged, match="no longer finite"):
        check_not_collapsed(_evaluation(math.nan, 0.3), baseline_mse=0.095, epoch=3)
