from __future__ import annotations

from pathlib import Path

import pytest
import torch

from training import optim
from training.optim import build_adam, runs_bfloat16_natively


def test_build_adam_is_torchs_adam_fused_on_cpu() -> None:
    param = torch.nn.Parameter(torch.ones(3))
    optimizer = build_adam([param], lr=0.1, device=torch.device("cpu"))
    assert type(optimizer) is torch.optim.Adam
    assert optimizer.defaults["fused"] is True and optimizer.defaults["lr"] == 0.1


@pytest.mark.parametrize(
    ("flags", "native"),
    [("fpu sse avx512f avx512_bf16", True), ("fpu sse amx_bf16 amx_tile", True), ("fpu sse avx2 avx512f", False)],
)
def test_bfloat16_support_is_read_from_the_cpu_flags(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, flags: str, native: bool
) -> None:
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(f"processor\t: 0\nflags\t\t: {flags}\n")
    real_path = Path

    def fake_path(name: str) -> Path:
        return cpuinfo if name == "/proc/cpuinfo" else real_path(name)

    monkeypatch.setattr(optim, "Path", fake_path)
    assert runs_bfloat16_natively(torch.device("cpu")) is native
    assert runs_bfloat16_natively(torch.device("meta")) is False
