"""What `pip install .` and the Docker image get: the wheel holds every module of the packages, its
commands, and the Dockerfile copies every package it installs plus the shipped weights. (The image
itself needs a Docker engine; these check what can go wrong without one.)"""

from __future__ import annotations

import json
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
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "--wheel-dir",
            str(tmp_path / "dist"),
            str(source),
        ],
        check=True,
        capture_output=True,
    )
    (wheel,) = (tmp_path / "dist").glob("*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        entry_points = next(archive.read(n).decode() for n in names if n.endswith(".dist-info/entry_points.txt"))
    modules = {p.relative_to(REPO).as_posix() for name in PACKAGES for p in (REPO / name).rglob("*.py")}
    assert modules - names == set(), "modules the wheel lacks (a package folder without __init__.py?)"
    assert {n.split("/")[0] for n in names if n.endswith(".py")} == set(PACKAGES)
    assert {"service/static/ui/index.html", "service/static/ui/app.js", "service/static/ui/digits/7.png"} <= names
    for command in (
        "mnist-ae-serve",
        "mnist-ae-train",
        "mnist-ae-evaluate",
        "mnist-ae-calibrate",
        "mnist-ae-export-onnx",
    ):
        assert re.search(rf"^{command} = ", entry_points, re.M), command


def test_the_dockerfile_copies_what_the_service_needs() -> None:
    dockerfile = (REPO / "Dockerfile").read_text()
    copied = set(re.findall(r"^COPY (\S+) \./\1$", dockerfile, re.M))
    assert copied >= {*PACKAGES, "weights"}
    checkpoint = re.search(r"MNIST_AE_CHECKPOINT=/app/(\S+)", dockerfile)
    assert checkpoint is not None and (REPO / checkpoint.group(1)).is_file()
    assert re.search(r"^USER \d+$", dockerfile, re.M), "the service runs as an unprivileged user"


# what the service needs without importing it itself: uvicorn's faster loop and parser, and
# Starlette's multipart parser
INDIRECT = {"uvloop", "httptools", "python-multipart"}


def test_the_runtime_dependencies_are_what_the_service_imports() -> None:
    """pyproject's dependencies (the serving image's) name every third-party package service/
    imports, and nothing else: training's and the tests' packages live in extras."""
    import ast
    import sys
    import tomllib
    from importlib.metadata import packages_distributions

    def normal(name: str) -> str:  # PEP 503
        return re.sub(r"[-_.]+", "-", name).lower()

    declared = {
        normal(re.split(r"[<>=!~;\[ ]", requirement, maxsplit=1)[0])
        for requirement in tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    }
    modules = set()
    for path in (REPO / "service").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                modules |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                modules.add(node.module.split(".")[0])
    third_party = modules - set(sys.stdlib_module_names) - {"service", "__future__"}
    distributions = packages_distributions()
    # a namespace package (google: protobuf, googleapis-common-protos) is declared if one of its distributions is
    providers = {module: {normal(name) for name in distributions[module]} for module in third_party}
    missing = {module for module, names in providers.items() if not names & declared}
    assert not missing, f"imported by service/ but not a dependency: {missing}"
    imported = {name for names in providers.values() for name in names & declared}
    assert declared - imported <= INDIRECT, f"dependencies service/ does not use: {declared - imported - INDIRECT}"


def test_the_dependency_layers_read_only_the_pins_and_the_dependency_lists() -> None:
    """Everything COPY'd before the last pip install is constraints.txt and pyproject.toml: a change to
    code, docs or weights leaves the dependency layers (gigabytes of torch) as they were."""
    dockerfile = (REPO / "Dockerfile").read_text()
    before_installs = dockerfile[: dockerfile.rindex("pip install")]
    sources = {name for line in re.findall(r"^COPY (.+) \S+$", before_installs, re.M) for name in line.split()}
    assert sources == {"constraints.txt", "pyproject.toml"}
    assert "--extra-index-url" not in dockerfile, "one index for torch, and only for torch"
    pins = dict(
        line.split("==")
        for line in (REPO / "constraints.txt").read_text().splitlines()
        if line and not line.startswith("#")
    )
    shipped = json.loads((REPO / "weights" / "autoencoder.json").read_text())["torch_version"]
    assert pins["torch"] == shipped.split("+")[0], "the image's torch is the one the shipped weights were made with"


def test_hadolint_finds_nothing_in_the_dockerfile() -> None:
    hadolint = Path(sys.executable).with_name("hadolint")
    done = subprocess.run([str(hadolint), str(REPO / "Dockerfile")], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stdout == "", done.stdout + done.stderr


def test_every_package_the_images_install_is_pinned() -> None:
    """The serving and training images install the runtime dependencies and the [train] extra under
    constraints.txt: each of them has a pin there, so an image builds the same next month."""
    import tomllib

    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    names = {
        re.split(r"[<>=;\[ ]", requirement, maxsplit=1)[0].lower()
        for requirement in [*project["dependencies"], *project["optional-dependencies"]["train"]]
    }
    pins = {
        line.split("==")[0].lower()
        for line in (REPO / "constraints.txt").read_text().splitlines()
        if line and not line.startswith("#")
    }
    assert names - pins == set()
