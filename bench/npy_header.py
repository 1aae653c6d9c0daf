"""Reading a .npy body: numpy's header parser (ast.literal_eval) against the one-regex read of the
header exactly as np.save writes it (service/codecs/npy.py), for the bodies the Python client
sends: one image and 256 images. Alternated rounds, one process.

    python -m bench.npy_header
"""

from __future__ import annotations

import argparse
import io
import statistics
import time
from collections.abc import Callable

import numpy as np

from bench.report import write_section
from service.codecs import npy


def per_body_us(read: Callable[[bytes], object], body: bytes, bodies: int) -> float:
    started = time.perf_counter()
    for _ in range(bodies):
        read(body)
    return (time.perf_counter() - started) / bodies * 1e6


def numpys(data: bytes) -> object:
    """What read_npy did for every body before the quick path: numpy's header parser."""
    shape, _, dtype, offset = npy._numpy_header(data)
    return np.frombuffer(memoryview(data)[offset:], dtype=dtype).reshape(shape)


def quick(data: bytes) -> object:
    return npy.read_npy(data, max_elements=10**7)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--bodies", type=int, default=20_000, help="bodies per measurement")
    args = parser.parse_args()
    rows = []
    for n in (1, 256):
        buffer = io.BytesIO()
        np.save(buffer, np.zeros((n, 28, 28), np.uint8))
        body = buffer.getvalue()
        results: dict[str, list[float]] = {"numpy": [], "quick": []}
        for _ in range(args.rounds):
            results["numpy"].append(per_body_us(numpys, body, args.bodies))
            results["quick"].append(per_body_us(quick, body, args.bodies))
        slow, fast = statistics.median(results["numpy"]), statistics.median(results["quick"])
        rows.append(f"| ({n}, 28, 28) uint8, {len(body):,} bytes | {slow:.1f} | {fast:.1f} | {slow / fast:.1f}x |")
        print(rows[-1], flush=True)
    body_text = "\n".join([
        "## .npy bodies: the header",
        "",
        "numpy parses a .npy header with `ast.literal_eval`; `service/codecs/npy.py` reads a header written "
        "exactly as `np.save` writes it with one regex, and hands any other to numpy's parser (same results, "
        "checked by a fuzz test). Whole body to array, checks included, median of "
        f"{args.rounds} alternated rounds, in µs per body.",
        "",
        "| body | numpy's parser | quick path | gain |",
        "|---|---:|---:|---:|",
        *rows,
    ])  # fmt: skip
    write_section("npy-header", "python -m bench.npy_header", body_text)


if __name__ == "__main__":
    main()
