"""Property-based fuzzing of the API from its own OpenAPI schema, with schemathesis: whatever
the generated request, no 5xx, and every response conforms to what the schema documents
(status codes, content types, bodies, headers, authentication).

Run through schemathesis's CLI against a real server configured with an API key (so that its
authentication checks apply too) and a checkpoint directory (so that /admin/reload loads, refuses
and does not find checkpoints), with every check: data the schema rejects must be rejected, and
data it allows accepted. The schemas say what JSON Schema can; tests/schemathesis.toml lists, per
operation, what it cannot (a body is an image, and no schema says which bytes decode to one).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from service.checkpoint import metadata_path_for
from tests.conftest import SHIPPED_WEIGHTS
from tests.harness import LiveServer, start_server, stop_server

pytestmark = pytest.mark.integration

API_KEY = "fuzz-key-0123456789"


@pytest.fixture(scope="module")
def keyed_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    tmp = tmp_path_factory.mktemp("fuzz")
    checkpoints = tmp / "checkpoints"
    checkpoints.mkdir()
    for path in (SHIPPED_WEIGHTS, metadata_path_for(SHIPPED_WEIGHTS)):  # "." names a checkpoint that loads
        shutil.copy(path, checkpoints / path.name)
    env = {
        "MNIST_AE_CHECKPOINT": str(SHIPPED_WEIGHTS),
        "MNIST_AE_CHECKPOINT_DIR": str(checkpoints),
        "MNIST_AE_API_KEY": API_KEY,
        "MNIST_AE_LOG_LEVEL": "WARNING",
    }
    server = start_server(tmp / "server.log", env)
    yield server
    stop_server(server)


def test_api_conforms_to_its_schema(keyed_server: LiveServer) -> None:
    cli = Path(sys.executable).with_name("schemathesis")
    result = subprocess.run(
        [
            str(cli),
            "--config-file",
            str(Path(__file__).with_name("schemathesis.toml")),
            "run",
            f"{keyed_server.url}/openapi.json",
            "--checks",
            "all",
            "--header",
            f"Authorization: Bearer {API_KEY}",
            "--max-examples",
            "25",
            "--generation-deterministic",
            "--workers",
            "1",
            "--request-timeout",
            "30",
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-8000:] + result.stderr[-2000:]
    operations = sum(len(item) for item in httpx.get(f"{keyed_server.url}/openapi.json").json()["paths"].values())
    assert f"{operations} selected / {operations} total" in result.stdout, "every operation was tested"
    assert httpx.get(f"{keyed_server.url}/readyz").status_code == 200, "the server still serves after the fuzzing"
