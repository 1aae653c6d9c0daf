"""What the serving benchmarks send: one PNG, 256-image bodies, and the single-then-batched load
that bench.levers, bench.ab and bench.memory put on a server. No torch here (bench/memory.py)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from bench.harness import REPO
from bench.wrk import LoadResult, run_wrk, run_wrk_for_requests

PNG = REPO / "examples" / "seven.png"


def batch_bodies(tmp: Path, n: int) -> tuple[Path, Path, str]:
    """n real-looking digits as one .npy body and as one multipart body of n PNG files."""
    digits = np.load(REPO / "examples" / "digits.npy")
    images = np.resize(digits, (n, 28, 28)).astype(np.uint8)
    npy = tmp / "batch.npy"
    buffer = io.BytesIO()
    np.save(buffer, images, allow_pickle=False)
    npy.write_bytes(buffer.getvalue())
    from PIL import Image

    boundary = "benchboundary7d3f"
    parts = []
    for i, image in enumerate(images):
        png = io.BytesIO()
        Image.fromarray(image).save(png, format="PNG")
        parts.append(
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{i}.png"\r\n'
            f"Content-Type: image/png\r\n\r\n".encode()
            + png.getvalue()
            + b"\r\n"
        )
    multipart = tmp / "batch.multipart"
    multipart.write_bytes(b"".join(parts) + f"--{boundary}--\r\n".encode())
    return npy, multipart, f"multipart/form-data; boundary={boundary}"


def single_and_batched(
    url: str, npy: Path, *, requests: int, single_body: tuple[Path, str] = (PNG, "image/png"),
    batch_content_type: str = "application/x-npy",
) -> tuple[LoadResult, LoadResult]:  # fmt: skip
    """One PNG per request (64 connections, ``requests`` of them), then 256-image .npy bodies
    (4 connections, 5 s), against one server; both must answer 2xx throughout. ``single_body`` and
    ``npy`` with ``batch_content_type`` send other bodies instead (multipart forms, say)."""
    body, content_type = single_body
    single = run_wrk_for_requests(url, body, requests=requests, content_type=content_type, connections=64)
    batched = run_wrk(url, npy, content_type=batch_content_type, accept="application/x-npy", connections=4, seconds=5)
    assert single.non_2xx == batched.non_2xx == 0 and single.socket_errors == 0, (url, single, batched)
    return single, batched
