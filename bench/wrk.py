"""Run wrk (a C load generator, in its own process) against a loopback URL and parse its summary."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

SCRIPT = Path(__file__).with_name("post.lua")


@dataclass(frozen=True)
class LoadResult:
    requests: int
    seconds: float
    non_2xx: int
    socket_errors: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float

    @property
    def rps(self) -> float:
        return self.requests / self.seconds


def require_tool(name: str, package: str) -> str:
    """The path of a load generator, or a clear exit naming the Debian package that has it."""
    path = shutil.which(name)
    if path is None:
        raise SystemExit(f"{name} is not installed: `apt-get install -y {package}` (or `make bench-deps`)")
    return path


def require_loopback(url: str) -> None:
    if not url.startswith(("http://127.0.0.1", "http://[::1]", "http://localhost")):
        raise ValueError(f"load is only ever sent to loopback, not {url}")


def run_wrk(
    url: str,
    body: Path,
    *,
    content_type: str,
    connections: int,
    seconds: float,
    accept: str | None = None,
    threads: int = 1,
) -> LoadResult:
    """POST ``body`` to ``url`` from ``connections`` keep-alive connections for ``seconds``."""
    require_loopback(url)
    env = {**os.environ, "BODY_FILE": str(body), "CONTENT_TYPE": content_type}
    if accept:
        env["ACCEPT"] = accept
    cmd = [
        require_tool("wrk", "wrk"),
        f"-t{threads}",
        f"-c{connections}",
        f"-d{math.ceil(seconds)}s",
        "--timeout",
        "10s",
        "-s",
        str(SCRIPT),
        url,
    ]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True, timeout=seconds + 60).stdout
    line = next(line for line in out.splitlines() if line.startswith("WRK_JSON "))
    data = json.loads(line.removeprefix("WRK_JSON "))
    return LoadResult(
        requests=data["requests"],
        seconds=data["duration_us"] / 1e6,
        non_2xx=data["non_2xx"],
        socket_errors=data["socket_errors"],
        p50_ms=data["p50_us"] / 1000,
        p90_ms=data["p90_us"] / 1000,
        p99_ms=data["p99_us"] / 1000,
        max_ms=data["max_us"] / 1000,
    )


def run_wrk_for_requests(
    url: str,
    body: Path,
    *,
    requests: int,
    content_type: str,
    connections: int,
    accept: str | None = None,
    before_run: Callable[[], object] | None = None,
) -> LoadResult:
    """A run long enough for at least ``requests`` requests, sized from a 2-second probe
    (wrk itself only stops on time). ``before_run`` is called between the probe and the run."""
    probe = run_wrk(url, body, content_type=content_type, connections=connections, seconds=2, accept=accept)
    seconds = min(60.0, max(5.0, 1.15 * requests / max(probe.rps, 1.0)))  # a stalled probe must not run for hours
    if before_run is not None:
        before_run()
    return run_wrk(url, body, content_type=content_type, connections=connections, seconds=seconds, accept=accept)
