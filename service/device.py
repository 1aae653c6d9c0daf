"""Choosing the torch device from a setting or flag."""

from __future__ import annotations

import torch


def resolve_device(name: str) -> torch.device:
    """'auto' -> cuda when available, else cpu; anything else ('cpu', 'cuda:1') as torch reads it.

    Raises ``ValueError`` for a name torch does not know or a CUDA device that is not there.
    """
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise ValueError(f"unknown device {name!r}: {exc}") from exc
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} requested but CUDA is not available")
    return device
