"""Run h2load (nghttp2's C load generator, in its own process) against a loopback URL: the same tool
for REST over HTTP/1.1 and for gRPC over HTTP/2, so that the two protocols are compared side by
side with the same client cost. A gRPC call is an HTTP/2 POST whose body is the message behind a
5-byte frame header (:func:`grpc_frame`)."""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

from bench.wrk import require_loopback, require_tool


@dataclass(frozen=True)
class H2LoadResult:
    requests: int  # answered with a 2xx status (for gRPC the call's own status is in its trailers)
    seconds: float

    @property
    def rps(self) -> float:
        return self.requests / self.seconds


def grpc_frame(message: bytes) -> bytes:
    """A gRPC message on the wire: not compressed (0), its length (4 bytes, big-endian), itself."""
    return b"\x00" + len(message).to_bytes(4, "big") + message


def run_h2load(
    url: str, body: Path, headers: dict[str, str], *, requests: int, connections: int, http1: bool
) -> H2LoadResult:
    """POST ``body`` ``requests`` times over ``connections`` connections, one request at a time on each."""
    require_loopback(url)
    command = [
        require_tool("h2load", "nghttp2-client"),
        "-n",
        str(requests),
        "-c",
        str(connections),
        "-m",
        "1",
        "-d",
        str(body),
    ]
    for name, value in headers.items():
        command += ["-H", f"{name}: {value}"]
    if http1:
        command.append("--h1")
    out = subprocess.run([*command, url], capture_output=True, text=True, check=True, timeout=600).stdout
    finished = re.search(r"finished in ([\d.]+)(m?s)", out)
    succeeded = re.search(r"status codes: (\d+) 2xx", out)
    if finished is None or succeeded is None:
        raise RuntimeError(f"unexpected h2load output:\n{out}")
    seconds = float(finished.group(1)) / (1000 if finished.group(2) == "ms" else 1)
    return H2LoadResult(int(succeeded.group(1)), seconds)
