from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
import torch
import torch.nn.functional as F

from service.model import AutoEncoder
from tests.conftest import REPO
from training.optim import Adam, build_adam


def _train(optimizer_class: type[torch.optim.Optimizer], steps: int, **options: object) -> AutoEncoder:
    torch.manual_seed(0)
    model = AutoEncoder().to(memory_format=torch.channels_last)
    optimizer = optimizer_class(model.parameters(), lr=3e-3, **options)
    generator = torch.Generator().manual_seed(1)
    for _ in range(steps):
        x = torch.rand(8, 1, 28, 28, generator=generator).contiguous(memory_format=torch.channels_last)
        loss = F.mse_loss(model(x), x)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model


@pytest.mark.parametrize("options", [{"fused": True}, {"foreach": True}, {"foreach": False}], ids=str)
def test_updates_are_torchs_bit_for_bit(options: dict[str, bool]) -> None:
    ours, torchs = _train(Adam, 5, **options), _train(torch.optim.Adam, 5, **options)
    for (name, a), b in zip(ours.state_dict().items(), torchs.state_dict().values(), strict=True):
        assert torch.equal(a, b), name


def test_the_update_records_no_autograd_graph() -> None:
    param = torch.nn.Parameter(torch.ones(3))
    optimizer = Adam([param], lr=0.1)
    param.grad = torch.ones(3)
    with torch.enable_grad():
        optimizer.step()
    assert param.grad_fn is None and param.is_leaf
    assert torch.all(param < 1)


def test_state_dict_round_trips_with_torchs_adam() -> None:
    model = _train(torch.optim.Adam, 0)
    theirs = torch.optim.Adam(model.parameters(), lr=3e-3, fused=True)
    model(torch.rand(2, 1, 28, 28)).sum().backward()
    theirs.step()
    ours = build_adam(model.parameters(), lr=3e-3, device=torch.device("cpu"))
    ours.load_state_dict(theirs.state_dict())
    saved = ours.state_dict()
    assert saved["param_groups"] == theirs.state_dict()["param_groups"]
    assert set(saved["state"]) == set(theirs.state_dict()["state"])
    assert torch.equal(saved["state"][0]["exp_avg"], theirs.state_dict()["state"][0]["exp_avg"])


def test_training_never_imports_torch_compile() -> None:
    """Importing torch._dynamo (sympy, inductor) costs ~1 s of a ~6 s training run; pytest has
    imported it already, so a fresh interpreter runs what training runs."""
    script = textwrap.dedent(
        """
        import sys, torch
        from service.model import AutoEncoder
        from training.optim import build_adam
        model = AutoEncoder().to(memory_format=torch.channels_last)
        optimizer = build_adam(model.parameters(), lr=1e-3, device=torch.device("cpu"))
        x = torch.rand(4, 1, 28, 28)
        torch.nn.functional.mse_loss(model(x), x).backward()
        optimizer.step()
        optimizer.zero_grad()
        optimizer.load_state_dict(optimizer.state_dict())
        print(sorted(m for m in ("torch._dynamo", "sympy") if m in sys.modules))
        """
    )
    result = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
