"""Write one benchmark's section of BENCHMARKS.md, between its own markers, leaving the others."""

from __future__ import annotations

import os
import platform
import re
import shlex
import subprocess
import sys
from functools import cache
from pathlib import Path

from tests.harness import REPO

# where results go: this checkout by default; the bench smoke tests point BENCH_RESULTS elsewhere
RESULTS = Path(os.environ.get("BENCH_RESULTS", REPO))
BENCHMARKS = RESULTS / "BENCHMARKS.md"
PLOTS = RESULTS / "bench" / "plots"
HEADER = "# Benchmarks\n\nEach section is written by the command shown in it; numbers from one run on one machine.\n"


@cache
def torch_build() -> tuple[str, bool]:
    """torch's version as it prints it (``2.14.1+cu130``), and whether it is a CUDA build; asked of a
    child process: a benchmark that measures a server's memory must not map torch's libraries
    itself (see bench/memory.py)."""
    code = "import torch; print(torch.__version__, torch.version.cuda is not None)"
    version, cuda = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.split()
    return version, cuda == "True"


def plot_path(name: str) -> Path:
    """Where plot ``name`` goes (bench/plots/ under the results folder), its folder made."""
    PLOTS.mkdir(parents=True, exist_ok=True)
    return PLOTS / name


def machine() -> str:
    cores = len(os.sched_getaffinity(0))
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True).stdout
    return (
        f"{platform.processor() or platform.machine()}, {cores} cores, Python {platform.python_version()}, "
        f"torch {torch_build()[0]}, commit {commit.strip() or 'unknown'}"
    )


def command_line() -> str:
    """How this benchmark was run, ``python -m bench.<name>`` and its arguments as given, for its
    section's Reproduce line: a run with other options says so."""
    main = sys.modules["__main__"]
    module = main.__spec__.name if getattr(main, "__spec__", None) else Path(sys.argv[0]).stem
    return " ".join(["python", "-m", module, *(shlex.quote(word) for word in sys.argv[1:])])


def _section_pattern(name: str) -> re.Pattern[str]:
    return re.compile(re.escape(f"<!-- {name}:start -->") + ".*?" + re.escape(f"<!-- {name}:end -->"), re.S)


def _put_section(name: str, section: str) -> None:
    """Replace section ``name`` of BENCHMARKS.md with ``section`` (markers included), or append it."""
    text = BENCHMARKS.read_text() if BENCHMARKS.exists() else HEADER
    existing = _section_pattern(name).search(text)
    if existing:
        text = text[: existing.start()] + section + text[existing.end() :]
    else:
        text = text.rstrip() + "\n\n" + section + "\n"
    BENCHMARKS.parent.mkdir(parents=True, exist_ok=True)  # a BENCH_RESULTS folder not made yet
    BENCHMARKS.write_text(text)


def write_section(name: str, command: str, body: str) -> None:
    section = (
        f"<!-- {name}:start -->\n{body.strip()}\n\nReproduce: `{command}`  \nMachine: {machine()}\n<!-- {name}:end -->"
    )
    _put_section(name, section)
    print(section, file=sys.stdout)


def copy_sections(source: Path, names: list[str]) -> list[str]:
    """Copy the sections ``names`` from another BENCHMARKS.md (a clone's, or one a device run sent
    back) into this one, as they are; returns the names that were there to copy."""
    text, copied = source.read_text(), []
    for name in names:
        found = _section_pattern(name).search(text)
        if found is not None:
            _put_section(name, found.group(0))
            copied.append(name)
    return copied
