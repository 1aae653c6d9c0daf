"""Choosing the torch device from a setting or flag."""

from __future__ import annotations

from pathlib import Path

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


def runs_bfloat16_natively(device: torch.device) -> bool:
    """Whether ``device`` computes in bfloat16 natively: a CUDA GPU that supports it (Ampere and
    later), or a CPU with AVX512-BF16 or AMX. Elsewhere bfloat16 is emulated, slower than float32."""
    if device.type == "cuda":
        return bool(torch.cuda.is_bf16_supported())
    if device.type != "cpu":
        return False
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # a private op: where a torch lacks it, ask the kernel
        try:
            flags = Path("/proc/cpuinfo").read_text()
        except OSError:
            return False
        return "avx512_bf16" in flags or "amx_bf16" in flags
