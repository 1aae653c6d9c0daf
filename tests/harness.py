"""Start and stop the service (or another ASGI app) as a real process on a free loopback port, and
read a process's memory and CPU time: shared by tests/ and bench/."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class LiveServer:
    url: str
    process: subprocess.Popen[bytes]
    log_path: Path

    def log_lines(self) -> list[str]:
        return self.log_path.read_text().splitlines()


def start_server(
    log_path: Path,
    env: dict[str, str],
    *,
    command: Sequence[str] = ("-m", "service"),
    ready_path: str = "/readyz",
    timeout_s: float = 60.0,
    cwd: Path = REPO,
) -> LiveServer:
    """Run ``python <command> --host 127.0.0.1 --port <free>`` in ``cwd`` (``-m`` imports from
    there first); return once ``ready_path`` answers 200.

    Output goes to ``log_path`` (a pipe could fill up and stall the server).
    """
    port = free_port()
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(
            [sys.executable, *command, "--host", "127.0.0.1", "--port", str(port)],
            cwd=cwd,
            env={**os.environ, "MNIST_AE_LOG_FORMAT": "json", **env},
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}:\n{log_path.read_text()}")
        try:
            if httpx.get(f"{url}{ready_path}", timeout=1).status_code == 200:
                return LiveServer(url, process, log_path)
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    process.kill()
    raise RuntimeError(f"server not ready in {timeout_s} s:\n{log_path.read_text()}")


def wait_until(condition: Callable[[], bool], what: str, timeout_s: float = 10.0) -> None:
    """Poll ``condition`` (a look at another process: its log, an endpoint) until it holds."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout_s} s: {what}")
        time.sleep(0.02)


def rss_mb(pid: int) -> float:
    """Resident memory of process ``pid``, in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


def stop_server(server: LiveServer, timeout_s: float = 30.0) -> int:
    """SIGTERM, then wait; returns the exit code."""
    server.process.send_signal(signal.SIGTERM)
    try:
        return server.process.wait(timeout_s)
    except subprocess.TimeoutExpired:
        server.process.kill()
        raise


def thread_cpu_seconds(pid: int) -> dict[str, float]:
    """CPU seconds each thread of process ``pid`` has used so far: "main" for its first thread
    (under uvicorn, the event loop's), the others by thread id."""
    ticks = os.sysconf("SC_CLK_TCK")
    used = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            fields = (task / "stat").read_text().rpartition(")")[2].split()
        except OSError:  # the thread ended meanwhile
            continue
        used["main" if task.name == str(pid) else task.name] = (int(fields[11]) + int(fields[12])) / ticks
    return used
