"""What the serving benchmarks send: one PNG, and 256-image bodies. No torch here (bench/memory.py)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from tests.harness import REPO

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
