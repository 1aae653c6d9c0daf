"""The training loop and its guards: one pass over the images, and the checks that stop a run
whose loss went non-finite or whose model collapsed to a constant output."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from tqdm import tqdm

from service.model import AutoEncoder
from training.data import MnistSplit
from training.evaluate import Evaluation

# MSE of the best constant image is the pixel variance (~0.095 on MNIST); a model whose test
# MSE comes within this fraction of it, or whose outputs barely vary, has collapsed
COLLAPSE_MSE_FRACTION = 0.9
COLLAPSE_OUTPUT_STD = 1e-3


class TrainingDiverged(RuntimeError):
    """Loss went NaN/inf or the model collapsed to a constant output."""


def train_one_epoch(
    model: AutoEncoder,
    optimizer: torch.optim.Optimizer,
    images: torch.Tensor,
    *,
    batch_size: int,
    device: torch.device,
    generator: torch.Generator,
    lr_for_step: Callable[[int], float],
    first_step: int,
    precision: str = "fp32",
    progress: tqdm | None = None,
) -> float:
    """One pass over ``images`` ((N,1,28,28) float32 in [0,1], on ``device``: see
    ``training.evaluate.images_to_float``) in shuffled batches; returns the mean train MSE.

    The mean is over samples (sum of batch MSE x batch size / N), unlike the seed's figure.
    With ``precision='bf16'`` the forward (and so the backward) runs under autocast to bfloat16;
    the loss, the gradients' accumulation into the float32 weights and Adam stay float32.
    Raises :class:`TrainingDiverged` as soon as the loss stops being finite.
    """
    model.train()
    n = images.shape[0]
    # on the images' device: indexing a GPU tensor with CPU indices would copy them every step
    order = torch.randperm(n, generator=generator).to(images.device)
    loss_sum = torch.zeros((), device=device, dtype=torch.float64)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")
    step = first_step
    for start in range(0, n, batch_size):
        x = images[order[start : start + batch_size]]  # (B,1,28,28)
        x = x.contiguous(memory_format=torch.channels_last)
        for group in optimizer.param_groups:
            group["lr"] = lr_for_step(step)
        with autocast:
            y = model(x)  # (B,1,28,28), bfloat16 under autocast
        loss = F.mse_loss(y.float(), x)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()  # type: ignore[no-untyped-call]  # torch leaves Tensor.backward unannotated
        optimizer.step()
        loss_sum += loss.detach() * x.shape[0]
        step += 1
        # checking every step would sync the GPU each time; every 50 steps is early enough
        if step % 50 == 0 or start + batch_size >= n:
            if not math.isfinite(float(loss.detach())):
                raise TrainingDiverged(
                    f"loss became {float(loss.detach())} at step {step}; the learning rate ({lr_for_step(step - 1):g}) "
                    "is too high for this batch size: lower --lr"
                )
            if progress is not None:
                progress.set_postfix(loss=f"{float(loss.detach()):.5f}", lr=f"{lr_for_step(step - 1):.2e}")
        if progress is not None:
            progress.update(x.shape[0])
    return float(loss_sum) / n


def check_not_collapsed(ev: Evaluation, baseline_mse: float, epoch: int) -> None:
    """Raise :class:`TrainingDiverged` if the model now outputs (nearly) the same image for every input."""
    if not math.isfinite(ev.mse):
        raise TrainingDiverged(f"test MSE is {ev.mse} after epoch {epoch}: the weights are no longer finite")
    if ev.output_std < COLLAPSE_OUTPUT_STD or ev.mse >= COLLAPSE_MSE_FRACTION * baseline_mse:
        raise TrainingDiverged(
            f"the model collapsed to a near-constant output after epoch {epoch} (test MSE {ev.mse:.5f}, "
            f"a constant image scores {baseline_mse:.5f}; output spread {ev.output_std:.2e}). "
            "This happens when the learning rate is too high for the batch size and the ReLUs die: "
            "lower --lr or use a warm-up (--warmup-epochs)."
        )


def constant_image_mse(split: MnistSplit) -> float:
    """MSE of predicting the single best constant (the mean pixel) for every pixel: the pixel variance."""
    return float(split.images.double().div(255).var(unbiased=False))
