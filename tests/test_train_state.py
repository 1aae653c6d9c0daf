from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import pytest
import torch

from service.checkpoint import CheckpointError
from service.model import AutoEncoder
from training.optim import build_adam
from training.recipe import Recipe
from training.train_state import load_train_state, save_train_state


def _model_and_optimizer() -> tuple[AutoEncoder, torch.optim.Optimizer]:
    torch.manual_seed(0)
    model = AutoEncoder().to(memory_format=torch.channels_last)
    return model, build_adam(model.parameters(), lr=3e-3, device=torch.device("cpu"))


def test_state_round_trips_model_moments_and_progress(tmp_path: Path) -> None:
    model, opt = _model_and_optimizer()
    x = torch.rand(4, 1, 28, 28)
    torch.nn.functional.mse_loss(model(x), x).backward()
    opt.step()
    history = [{"epoch": 1, "test_mse": 0.01}]
    save_train_state(tmp_path / "s.safetensors", model, opt, asdict(Recipe(seed=3)), 1, history)
    resumed, resumed_opt = _model_and_optimizer()
    recipe, epoch, saved_history = load_train_state(tmp_path / "s.safetensors", resumed, resumed_opt)
    assert (recipe["seed"], epoch, saved_history) == (3, 1, history)
    for a, b in zip(model.parameters(), resumed.parameters(), strict=True):
        assert torch.equal(a, b)
        assert torch.equal(opt.state[a]["exp_avg_sq"], resumed_opt.state[b]["exp_avg_sq"])


def test_unreadable_state_is_a_checkpoint_error(tmp_path: Path) -> None:
    (tmp_path / "bad.safetensors").write_bytes(b"not a safetensors file")
    model, opt = _model_and_optimizer()
    with pytest.raises(CheckpointError, match="cannot be read"):
        load_train_state(tmp_path / "bad.safetensors", model, opt)


def test_resumed_adam_moments_keep_their_parameters_layout(tmp_path: Path) -> None:
    """The fused Adam update walks a parameter and its moments in memory order: moments restored
    contiguous beside channels_last conv weights would be updated element against wrong element."""

    def step(model: AutoEncoder, opt: torch.optim.Optimizer) -> None:
        x = torch.rand(4, 1, 28, 28, generator=torch.Generator().manual_seed(1))
        loss = torch.nn.functional.mse_loss(model(x), x)
        opt.zero_grad()
        loss.backward()
        opt.step()

    model, opt = _model_and_optimizer()
    step(model, opt)
    save_train_state(tmp_path / "state.safetensors", model, opt, asdict(Recipe()), 1, [])
    step(model, opt)  # the uninterrupted second step

    resumed, resumed_opt = _model_and_optimizer()
    load_train_state(tmp_path / "state.safetensors", resumed, resumed_opt)
    for param in resumed.parameters():
        assert resumed_opt.state[param]["exp_avg"].stride() == param.stride()
    step(resumed, resumed_opt)
    for a, b in zip(model.parameters(), resumed.parameters(), strict=True):
        assert torch.equal(a, b)
