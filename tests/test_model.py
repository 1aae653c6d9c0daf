from __future__ import annotations

import pytest
import torch
from torch import nn

from service.model import ARCHITECTURE, AutoEncoder, ModelConfig

SEED_KEYS = [
    "en.0.weight",
    "en.0.bias",
    "en.3.weight",
    "en.3.bias",
    "en.6.weight",
    "en.6.bias",
    "de.0.weight",
    "de.0.bias",
    "de.3.weight",
    "de.3.bias",
    "de.6.weight",
    "de.6.bias",
]


class SeedNotebookModel(nn.Module):
    """The notebook's ConvolutionalNeuralNetwork, written out as the seed has it."""

    def __init__(self) -> None:
        super().__init__()
        self.en = nn.Sequential(
            nn.Conv2d(1, 8, kernel_size=3, padding=1),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=2),
            nn.Conv2d(8, 16, kernel_size=3, padding=1),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=2),
            nn.Conv2d(16, 16, kernel_size=3, padding=1),
            nn.ReLU(inplace=True),
        )
        self.de = nn.Sequential(
            nn.Conv2d(16, 16, kernel_size=3, padding=1),
            nn.ReLU(inplace=True),
            nn.Upsample(scale_factor=2),
            nn.Conv2d(16, 8, kernel_size=3, padding=1),
            nn.ReLU(inplace=True),
            nn.Upsample(scale_factor=2),
            nn.Conv2d(8, 1, kernel_size=3, padding=1),
            nn.Tanh(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.de(self.en(x))


def test_shapes_through_encode_decode_forward() -> None:
    model = AutoEncoder().eval()
    x = torch.rand(5, 1, 28, 28)
    z = model.encode(x)
    assert z.shape == (5, 16, 7, 7)
    assert (z >= 0).all(), "the code follows a ReLU"
    assert model.decode(z).shape == (5, 1, 28, 28)
    assert model(x).shape == (5, 1, 28, 28)
    assert model.config.latent_shape == (16, 7, 7)
    assert model.config.image_shape == (1, 28, 28)


def test_state_dict_keys_and_shapes_match_the_seed() -> None:
    ours = AutoEncoder().state_dict()
    assert list(ours) == SEED_KEYS
    seed = SeedNotebookModel().state_dict()
    assert {k: v.shape for k, v in ours.items()} == {k: v.shape for k, v in seed.items()}
    assert sum(v.numel() for v in ours.values()) == 7121


def test_seed_state_dict_loads_unchanged_and_computes_the_same() -> None:
    torch.manual_seed(0)
    seed = SeedNotebookModel().eval()
    ours = AutoEncoder().eval()
    ours.load_state_dict(seed.state_dict(), strict=True)
    x = torch.rand(3, 1, 28, 28)
    torch.testing.assert_close(ours(x), seed(x), rtol=0, atol=0)


def test_user_facing_outputs_are_clamped_to_unit_range() -> None:
    model = AutoEncoder().eval()
    with torch.no_grad():
        model.de[6].bias.fill_(-3.0)  # type: ignore[operator]  # push raw Tanh output negative
        x = torch.rand(4, 1, 28, 28)
        raw = model(x)
        assert raw.min() < 0
        assert model.reconstruct(x).min() >= 0 and model.reconstruct(x).max() <= 1
        z = model.encode(x)
        assert model.decode_images(z).min() >= 0
        torch.testing.assert_close(model.reconstruct(x), raw.clamp(0, 1))


def test_config_round_trip_and_validation() -> None:
    cfg = ModelConfig()
    assert cfg.to_dict()["name"] == ARCHITECTURE
    assert ModelConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="unknown architecture"):
        ModelConfig.from_dict({**cfg.to_dict(), "name": "resnet"})
    with pytest.raises(ValueError, match="unknown architecture fields"):
        ModelConfig.from_dict({**cfg.to_dict(), "dropout": 0.1})
    with pytest.raises(ValueError, match="divisible by 4"):
        ModelConfig(image_size=30)
    with pytest.raises(ValueError, match="positive integer"):
        ModelConfig(latent_channels=0)


def test_other_configs_build_consistent_shapes() -> None:
    cfg = ModelConfig(image_size=32, hidden_channels=4, latent_channels=8)
    model = AutoEncoder(cfg).eval()
    z = model.encode(torch.rand(2, *cfg.image_shape))
    assert z.shape == (2, *cfg.latent_shape) == (2, 8, 8, 8)
    assert model.decode(z).shape == (2, 1, 32, 32)


def test_the_dense_bottleneck_variant() -> None:
    """code_size=32: the seed's convolutions under their seed names, plus two linear layers; a
    (32,1,1) code, which the service serves like any latent, and the same folded decoder."""
    torch.manual_seed(0)
    model = AutoEncoder(ModelConfig(code_size=32)).eval()
    assert model.config.latent_shape == (32, 1, 1) and model.config.feature_shape == (16, 7, 7)
    keys = list(model.state_dict())
    assert keys[: len(SEED_KEYS)] == SEED_KEYS
    assert keys[len(SEED_KEYS) :] == ["to_code.1.weight", "to_code.1.bias", "from_code.1.weight", "from_code.1.bias"]
    x = torch.rand(5, 1, 28, 28)
    z = model.encode(x)
    assert z.shape == (5, 32, 1, 1) and bool((z < 0).any()), "a linear code, not clipped at 0"
    assert model.decode(z).shape == (5, 1, 28, 28)
    from service.folding import FoldedDecoder  # the served decoder folds the same way

    with torch.no_grad():
        torch.testing.assert_close(FoldedDecoder(model)(z), model.decode(z), atol=1e-6, rtol=0)
    assert sum(p.numel() for p in model.parameters()) == 7121 + (784 * 32 + 32) + (32 * 784 + 784)
    with pytest.raises(ValueError, match="code_size must be a non-negative integer"):
        ModelConfig(code_size=-1)
    assert AutoEncoder().to_code.__class__ is nn.Identity, "the seed's layout has no extra weights"
