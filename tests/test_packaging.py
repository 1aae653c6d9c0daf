"""What `pip install .` and the Docker image get: the wheel holds every module of the packages, its
commands, and the Dockerfile copies every package it installs plus the shipped weights. (The image
itself needs a Docker engine; these check what can go wrong without one.)"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

from tests.harness import REPO

PACKAGES = ("service", "training")


def test_the_wheel_holds_every_module_and_command(tmp_path: Path) -> None:
    source = tmp_path / "source"  # a copy: building writes build/ and egg-info beside the sources
    for name in PACKAGES:
        shutil.copytree(REPO / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source / name)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
                    "--wheel-dir", str(tmp_path / "dist"), str(source)], check=True, capture_output=True)  # fmt: skip
    (wheel,) = (tmp_path / "dist").glob("*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        entry_points = next(archive.read(n).decode() for n in names if n.endswith(".dist-info/entry_points.txt"))
    modules = {p.relative_to(REPO).as_posix() for name in PACKAGES for p in (REPO / name).rglob("*.py")}
    assert modules - names == set(), "modules the wheel lacks (a package folder without __init__.py?)"
    assert {n.split("/")[0] for n in names if n.endswith(".py")} == set(PACKAGES)
    for command in ("mnist-ae-serve", "mnist-ae-train", "mnist-ae-evaluate"):
        assert re.search(rf"^{command} = ", entry_points, re.M), command


def test_the_dockerfile_copies_what_the_service_needs() -> None:
    dockerfile = (REPO / "Dockerfile").read_text()
    copied = set(re.findall(r"^COPY (\S+) \./\1$", dockerfile, re.M))
    assert copied >= {*PACKAGES, "weights"}
    checkpoint = re.search(r"MNIST_AE_CHECKPOINT=/app/(\S+)", dockerfile)
    assert checkpoint is not None and (REPO / checkpoint.group(1)).is_file()
    assert re.search(r"^USER \d+$", dockerfile, re.M), "the service runs as an unprivileged user"
