"""The README's curl commands and Python client example work as written, against a real server, and
the settings the docs name are the real ones."""

from __future__ import annotations

import itertools
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from tests.harness import REPO, LiveServer

pytestmark = pytest.mark.integration

README = (REPO / "README.md").read_text()


def code_blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", README, flags=re.S)


CURL_COMMANDS = [line for block in code_blocks("bash") for line in block.splitlines() if line.startswith("curl ")]


def test_the_readme_has_curl_examples_for_every_endpoint_and_format() -> None:
    text = "\n".join(CURL_COMMANDS)
    for needle in (
        "/encode",
        "/decode",
        "/reconstruct",
        "/readyz",
        "/model",
        "/metrics",
        "format=png",
        "format=npy",
        "application/x-npy",
        "application/json",
        "-F file=@",
        "image/png",
    ):
        assert needle in text, needle


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A scratch directory with examples/ linked in, so the commands' output files land there."""
    path = tmp_path_factory.mktemp("readme")
    (path / "examples").symlink_to(REPO / "examples")
    return path


@pytest.mark.parametrize("command", CURL_COMMANDS, ids=lambda c: c[:70])
def test_curl_example_works_as_written(command: str, live_server: LiveServer, workdir: Path) -> None:
    argv = shlex.split(command.replace("http://localhost:8000", live_server.url))
    result = subprocess.run([argv[0], "--fail-with-body", *argv[1:]], cwd=workdir, capture_output=True, timeout=60)
    assert result.returncode == 0, (command, result.stdout[-500:], result.stderr[-500:])
    for flag, target in itertools.pairwise(argv):
        if flag == "-o":
            written = (workdir / target).read_bytes()
            assert written, f"{target} is empty"
            if target.endswith(".png"):
                assert written.startswith(b"\x89PNG")
            elif target.endswith(".npy"):
                assert written.startswith(b"\x93NUMPY")
            elif target.endswith(".json"):
                assert written.startswith(b"{") and b'"shape"' in written


def test_python_client_example_runs(live_server: LiveServer) -> None:
    (example,) = code_blocks("python")
    script = example.replace("http://localhost:8000", live_server.url)
    result = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "(3, 1, 28, 28) (3, 16, 7, 7)" in result.stdout


def test_the_reference_lists_every_setting_and_the_readme_only_real_ones() -> None:
    from service.settings import ENV_PREFIX, Settings

    reference = (REPO / "docs" / "reference.md").read_text()
    table = "\n".join(line for line in reference.splitlines() if line.startswith(f"| `{ENV_PREFIX}"))
    missing = [name for name in Settings.model_fields if f"`{ENV_PREFIX}{name.upper()}`" not in table]
    assert missing == [], f"settings missing from docs/reference.md's table: {missing}"
    named = set(re.findall(rf"`{ENV_PREFIX}([A-Z_]+)`", README + reference))
    assert named <= {name.upper() for name in Settings.model_fields}, "a setting that does not exist"
