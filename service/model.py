"""The convolutional autoencoder from the seed notebook, and its config.

This module is the single definition of the architecture: training, evaluation,
the checkpoint loader and the HTTP service all build the network from here, and
the config travels inside every checkpoint so nobody hard-codes it twice.

Attribute names and ``nn.Sequential`` indices match the seed notebook exactly
(``en.0.weight`` ... ``de.6.bias``), so a ``state_dict`` saved from the notebook
loads unchanged.

One variant exists, for anomaly detection (docs/anomaly.md): ``ModelConfig(code_size=8)``
puts a dense bottleneck of 8 numbers between the seed's encoder and decoder, as Ruff et al.'s
DCAE does with 32. A fully convolutional code learns to redraw any stroke, so it reconstructs
other digits nearly as well as its own (one-class AUROC 68% on MNIST); 8 numbers per image
cannot, which is what makes the reconstruction error a usable anomaly score (95%). Its latent
code is (8,1,1): still an (N,C,H,W) tensor, so /encode and /decode serve it unchanged.

An optional part, for the service's anomaly decision (docs/anomaly.md): ``ModelConfig(novelty_channels=32)``
adds ``novelty_head``, a small classifier on the encoder's (16,7,7) features with eleven outputs: the
ten digits and "not a digit". The reconstruction error alone cannot tell a letter from a digit (this
decoder redraws any stroke: AUROC 0.50); the head, trained with the autoencoder frozen on digits and
on non-digits that are not characters (training/novelty.py), can. It reads the features the encoder
computes anyway and costs about an eighth of the autoencoder's arithmetic. With 0 (the seed's layout)
there is no head and the state_dict is the seed's.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any

import torch
from torch import nn

ARCHITECTURE = "mnist-conv-autoencoder"
NOVELTY_CLASSES = 11  # the novelty head's outputs: the ten digits, then "not a digit"


@dataclass(frozen=True)
class ModelConfig:
    """Hyperparameters of the architecture. The defaults are the seed's."""

    image_size: int = 28  # input is (N, in_channels, image_size, image_size)
    in_channels: int = 1
    hidden_channels: int = 8  # after the first conv
    latent_channels: int = 16  # after the second and third conv: the code is (N,16,7,7)
    kernel_size: int = 3
    code_size: int = 0  # 0: the seed's convolutional code; N > 0: a dense bottleneck of N units
    novelty_channels: int = 0  # 0: no novelty head (the seed's layout); N > 0: a head of N channels

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            least = 0 if f.name in ("code_size", "novelty_channels") else 1
            if not isinstance(value, int) or isinstance(value, bool) or value < least:
                kind = "a non-negative" if least == 0 else "a positive"
                raise ValueError(f"ModelConfig.{f.name} must be {kind} integer, got {value!r}")
        if self.kernel_size % 2 != 1:
            raise ValueError(f"ModelConfig.kernel_size must be odd, got {self.kernel_size}")
        if self.image_size % 4 != 0:
            # two 2x max-pools down and two 2x upsamples back must land on the same size
            raise ValueError(f"ModelConfig.image_size must be divisible by 4, got {self.image_size}")

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """Shape of one image, without the batch dimension: (1, 28, 28)."""
        return (self.in_channels, self.image_size, self.image_size)

    @property
    def feature_shape(self) -> tuple[int, int, int]:
        """Shape of the convolutional encoder's output for one image: (16, 7, 7)."""
        side = self.image_size // 4
        return (self.latent_channels, side, side)

    @property
    def latent_shape(self) -> tuple[int, int, int]:
        """Shape of one latent code, without the batch dimension: (16, 7, 7), or (code_size, 1, 1)."""
        return (self.code_size, 1, 1) if self.code_size else self.feature_shape

    def to_dict(self) -> dict[str, Any]:
        return {"name": ARCHITECTURE, **asdict(self)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelConfig:
        """Inverse of :meth:`to_dict`. Raises ``ValueError`` on an unknown architecture or field."""
        data = dict(data)
        name = data.pop("name", ARCHITECTURE)
        if name != ARCHITECTURE:
            raise ValueError(f"unknown architecture {name!r}, expected {ARCHITECTURE!r}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown architecture fields {unknown}")
        return cls(**data)


class AutoEncoder(nn.Module):
    """Conv encoder to a (16,7,7) code and a mirrored conv decoder back to (1,28,28).

    Pixels are intensities in [0, 1], a white digit on black, as torchvision's
    ``ToTensor`` gives. The decoder ends in Tanh (range [-1, 1]) as in the seed;
    :meth:`forward` and :meth:`decode` return that raw output, which is what the
    training loss sees, and :meth:`reconstruct` / :meth:`decode_images` clamp it
    to [0, 1] for anything that leaves the model for a user.
    """

    def __init__(self, config: ModelConfig | None = None) -> None:
        super().__init__()
        self.config = config or ModelConfig()
        c = self.config
        k, p = c.kernel_size, c.kernel_size // 2
        self.en = nn.Sequential(
            nn.Conv2d(c.in_channels, c.hidden_channels, k, padding=p),  # (N,8,28,28)
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),  # (N,8,14,14)
            nn.Conv2d(c.hidden_channels, c.latent_channels, k, padding=p),  # (N,16,14,14)
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),  # (N,16,7,7)
            nn.Conv2d(c.latent_channels, c.latent_channels, k, padding=p),  # (N,16,7,7)
            nn.ReLU(inplace=True),
            # no third pool: 7 is not divisible by 2 (the seed's own remark)
        )
        self.de = nn.Sequential(
            nn.Conv2d(c.latent_channels, c.latent_channels, k, padding=p),  # (N,16,7,7)
            nn.ReLU(inplace=True),
            nn.Upsample(scale_factor=2),  # (N,16,14,14), nearest
            nn.Conv2d(c.latent_channels, c.hidden_channels, k, padding=p),  # (N,8,14,14)
            nn.ReLU(inplace=True),
            nn.Upsample(scale_factor=2),  # (N,8,28,28)
            nn.Conv2d(c.hidden_channels, c.in_channels, k, padding=p),  # (N,1,28,28)
            nn.Tanh(),
        )
        # the dense bottleneck of the variant; identities (no weights) in the seed's layout
        self.to_code: nn.Module = nn.Identity()
        self.from_code: nn.Module = nn.Identity()
        if c.code_size:
            features = math.prod(c.feature_shape)  # 784
            self.to_code = nn.Sequential(
                nn.Flatten(),  # (N,784)
                nn.Linear(features, c.code_size),  # (N,8): linear, no ReLU, so the code is not clipped
                nn.Unflatten(1, c.latent_shape),  # (N,8,1,1)
            )
            self.from_code = nn.Sequential(
                nn.Flatten(),  # (N,8)
                nn.Linear(c.code_size, features),  # (N,784)
                nn.ReLU(inplace=True),  # the seed's decoder expects what a ReLU gives
                nn.Unflatten(1, c.feature_shape),  # (N,16,7,7)
            )
        self.novelty_head: nn.Module | None = None
        if c.novelty_channels:
            side = (c.feature_shape[1] + 1) // 2  # 7 -> 4 after a stride-2 conv with padding 1
            hidden = 2 * c.novelty_channels
            self.novelty_head = nn.Sequential(
                nn.Conv2d(c.latent_channels, c.novelty_channels, 3, stride=2, padding=1),  # (N,32,4,4)
                nn.ReLU(inplace=True),
                nn.Flatten(),  # (N,512)
                nn.Linear(c.novelty_channels * side * side, hidden),  # (N,64)
                nn.ReLU(inplace=True),
                # in training only: letters AUROC 0.955 against 0.949 without, over three seeds
                nn.Dropout(0.3),
                nn.Linear(hidden, NOVELTY_CLASSES),  # (N,11): digit logits, then "not a digit"
            )

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """(N,1,28,28) images in [0,1] -> (N,16,7,7) latent codes (non-negative: they follow a ReLU),
        or (N,8,1,1) with a dense bottleneck of 8 (any sign)."""
        z: torch.Tensor = self.to_code(self.en(x))
        return z

    def novelty_logits(self, features: torch.Tensor) -> torch.Tensor:
        """(N,16,7,7) encoder features (``en``'s output, before any dense bottleneck) -> (N,11) logits."""
        if self.novelty_head is None:
            raise ValueError("this model has no novelty head (ModelConfig.novelty_channels is 0)")
        logits: torch.Tensor = self.novelty_head(features)
        return logits

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """(N,16,7,7) (or (N,8,1,1)) latent codes -> (N,1,28,28) raw decoder output in [-1,1] (unclamped)."""
        y: torch.Tensor = self.de(self.from_code(z))
        return y

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N,1,28,28) -> (N,1,28,28) raw reconstruction, unclamped: this is what training fits."""
        return self.decode(self.encode(x))

    def decode_images(self, z: torch.Tensor) -> torch.Tensor:
        """(N,16,7,7) -> (N,1,28,28) images clamped to [0,1], for users."""
        return self.decode(z).clamp(0.0, 1.0)

    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """(N,1,28,28) -> (N,1,28,28) reconstructions clamped to [0,1], for users."""
        return self.forward(x).clamp(0.0, 1.0)
