"""The training recipe: every hyperparameter that shapes the result, and the learning rate it sets.

A Recipe is recorded in the checkpoint's metadata and in the resumable train state, so a run
can be read back and continued with exactly the settings it started with.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

SCHEDULES = ("cosine", "constant")
# 'bf16': forward and backward under autocast to bfloat16, weights, Adam's moments and the loss
# in float32 (the served model is float32 either way)
PRECISIONS = ("fp32", "bf16")


@dataclass(frozen=True)
class Recipe:
    """Every hyperparameter that shapes the result; recorded in the checkpoint's metadata."""

    epochs: int = 30
    batch_size: int = 32
    lr: float = 0.002
    schedule: str = "cosine"  # 'cosine': linear warm-up then cosine decay to 0; 'constant': the seed's
    warmup_epochs: float = 1.0
    seed: int = 0
    limit: int | None = None  # train on the first N training images only
    precision: str = "fp32"
    # the classes trained on (None: all ten); a one-class anomaly detector trains on one
    digits: tuple[int, ...] | None = None
    # the last N images of MNIST's training set are held out: never trained on, they calibrate the
    # anomaly score (service/calibration.py)
    validation: int = 5000
    code_size: int = 0  # the architecture: 0 the seed's convolutional code, N a dense bottleneck (ModelConfig)
    # the novelty head trained after the autoencoder (training/novelty.py): its channels, 0 for none;
    # it learns the ten digits, so a one-class recipe has none
    novelty_channels: int = 32

    def __post_init__(self) -> None:
        if self.digits is not None:  # a list when read back from JSON
            object.__setattr__(self, "digits", tuple(sorted(set(self.digits))))

    def problems(self) -> list[str]:
        """What is wrong with these values, as the command line's flags name them; empty if nothing."""
        problems = [
            f"--{name} must be positive"
            for name, value in (("epochs", self.epochs), ("batch-size", self.batch_size), ("lr", self.lr))
            if not value > 0
        ]
        if self.limit is not None and self.limit < 1:
            problems.append("--limit must be positive")
        if self.warmup_epochs < 0:
            problems.append("--warmup-epochs must be >= 0")
        if self.schedule not in SCHEDULES:
            problems.append(f"--schedule must be one of {', '.join(SCHEDULES)}")
        if self.precision not in PRECISIONS:
            problems.append(f"--precision must be one of {', '.join(PRECISIONS)}")
        if self.digits is not None and (not self.digits or not all(0 <= d <= 9 for d in self.digits)):
            problems.append("--digits must be digits 0-9")
        if not 0 < self.validation < 60000:
            problems.append("--validation must be between 1 and 59999")
        if self.code_size < 0:
            problems.append("--code-size must be >= 0")
        if self.novelty_channels < 0:
            problems.append("--novelty-channels must be >= 0")
        if self.novelty_channels and self.digits is not None and len(self.digits) < 10:
            problems.append("--novelty-channels must be 0 with --digits: the novelty head learns all ten digits")
        return problems

    def lr_at(self, step: int, total_steps: int, steps_per_epoch: int) -> float:
        """Learning rate for optimizer step ``step`` (0-based) of ``total_steps``."""
        if self.schedule == "constant":
            return self.lr
        # the warm-up never takes more than a fifth of a short run
        warmup = min(int(self.warmup_epochs * steps_per_epoch), total_steps // 5)
        if step < warmup:
            return self.lr * (step + 1) / warmup
        progress = (step - warmup) / max(1, total_steps - warmup)
        return self.lr * 0.5 * (1.0 + math.cos(math.pi * progress))
