"""The layers' boundaries: the model, its checkpoint, the scoring, the errors and the codecs are
plain Python and numpy/torch, so training, the benchmarks and any other front door can use them
without the web framework (HTTP lives in the routes, the request layer and error_responses.py)."""

from __future__ import annotations

import pkgutil
import subprocess
import sys

import service.codecs

FRAMEWORK_FREE = [
    "service.model",
    "service.checkpoint",
    "service.errors",
    "service.scoring",
    *(f"service.codecs.{module.name}" for module in pkgutil.iter_modules(service.codecs.__path__)),
]


def test_the_model_checkpoint_and_codecs_load_no_web_framework() -> None:
    # a fresh interpreter: this one has FastAPI loaded already; after each import, what it pulled in
    script = (
        "import importlib, sys\n"
        f"for name in {FRAMEWORK_FREE!r}:\n"
        "    importlib.import_module(name)\n"
        "    loaded = sorted(m for m in ('fastapi', 'starlette') if m in sys.modules)\n"
        "    if loaded:\n"
        "        sys.exit(f'{name} loads {loaded}')\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "service.codecs.oip" in FRAMEWORK_FREE and "service.codecs.images" in FRAMEWORK_FREE
