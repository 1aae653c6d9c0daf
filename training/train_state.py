"""Resumable training state: the model, Adam's moments and the progress, in one safetensors file
(no pickle), so that an interrupted run continues exactly where it stopped."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import safetensors
import safetensors.torch
import torch

from service.checkpoint import CheckpointError
from service.fileio import atomic_write_bytes
from service.model import AutoEncoder, ModelConfig

TRAIN_STATE_NAME = "train_state.safetensors"


def save_train_state(
    path: Path,
    model: AutoEncoder,
    optimizer: torch.optim.Optimizer,
    recipe: dict[str, Any],
    epoch: int,
    history: list[dict[str, Any]],
) -> None:
    """Model, Adam moments and progress after ``epoch`` completed epochs, written atomically."""
    tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    opt_state = optimizer.state_dict()
    for index, state in opt_state["state"].items():
        for name, value in state.items():
            tensors[f"optim.{index}.{name}"] = torch.as_tensor(value).detach().cpu().contiguous()
    meta = {
        "epoch": epoch,
        "recipe": recipe,
        "architecture": model.config.to_dict(),
        "param_groups": opt_state["param_groups"],
        "history": history,
    }
    atomic_write_bytes(path, safetensors.torch.save(tensors, metadata={"train_state": json.dumps(meta)}))


def _read(path: Path, *, tensors: bool) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    try:
        with safetensors.safe_open(str(path), framework="pt") as f:
            meta = json.loads(f.metadata()["train_state"])
            values = {k: f.get_tensor(k) for k in f.keys()} if tensors else {}  # noqa: SIM118 (not iterable)
    except Exception as exc:  # missing file, SafetensorError, KeyError, JSONDecodeError
        raise CheckpointError(f"train state {path}: cannot be read: {exc}") from exc
    return meta, values


def saved_recipe(path: Path) -> dict[str, Any]:
    """The recipe a train state was made with (the model is built from it before the state loads)."""
    recipe: dict[str, Any] = _read(path, tensors=False)[0]["recipe"]
    return recipe


def load_train_state(
    path: Path, model: AutoEncoder, optimizer: torch.optim.Optimizer
) -> tuple[dict[str, Any], int, list[dict[str, Any]]]:
    """Restore what :func:`save_train_state` wrote; returns (recipe dict, epochs done, history)."""
    meta, tensors = _read(path, tensors=True)
    if ModelConfig.from_dict(meta["architecture"]) != model.config:
        raise CheckpointError(f"train state {path}: architecture {meta['architecture']} differs from the model")
    model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
    opt_state: dict[str, Any] = {"state": {}, "param_groups": meta["param_groups"]}
    for key, value in tensors.items():
        if key.startswith("optim."):
            _, index, name = key.split(".", 2)
            opt_state["state"].setdefault(int(index), {})[name] = value
    optimizer.load_state_dict(opt_state)
    # the moments come back contiguous; give them their parameter's layout again (channels_last
    # for the conv weights), as Adam made them: the fused update walks both in memory order
    for group in optimizer.param_groups:
        for param in group["params"]:
            state = optimizer.state[param]
            for name, value in state.items():
                if isinstance(value, torch.Tensor) and value.shape == param.shape:
                    state[name] = torch.empty_like(param, dtype=value.dtype).copy_(value)
    return meta["recipe"], int(meta["epoch"]), list(meta["history"])
