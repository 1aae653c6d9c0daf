""".npy bodies in and out. Reading: numpy's header parser (ast.literal_eval) against the one-regex
read of the header exactly as np.save writes it (service/codecs/npy.py), for the bodies the Python
client sends: one image and 256 images. Writing: np.lib.format.write_array against npy_bytes' one
format call, for one and 256 reconstructions. Alternated rounds, one process.

    python -m bench.npy_header
"""

from __future__ import annotations

import argparse
import io
import statistics
import time
from collections.abc import Callable

import numpy as np

from bench.report import command_line, write_section
from service.codecs import npy


def per_body_us(read: Callable[[bytes], object], body: bytes, bodies: int) -> float:  # or arrays, to write
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


def write_array(array: np.ndarray) -> bytes:
    """What npy_bytes did before: numpy's writer."""
    buffer = io.BytesIO()
    np.lib.format.write_array(buffer, array, allow_pickle=False)
    return buffer.getvalue()


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
        rows.append(f"| read ({n}, 28, 28) uint8, {len(body):,} bytes | {slow:.1f} | {fast:.1f} | {slow / fast:.1f}x |")
        print(rows[-1], flush=True)
    for n in (1, 256):
        array = np.random.default_rng(0).random((n, 1, 28, 28), dtype=np.float32)
        assert write_array(array) == npy.npy_bytes(array)
        results = {"numpy": [], "quick": []}
        for _ in range(args.rounds):
            results["numpy"].append(per_body_us(write_array, array, args.bodies))  # type: ignore[arg-type]
            results["quick"].append(per_body_us(npy.npy_bytes, array, args.bodies))  # type: ignore[arg-type]
        slow, fast = statistics.median(results["numpy"]), statistics.median(results["quick"])
        rows.append(f"| write ({n}, 1, 28, 28) float32, {array.nbytes + 128:,} bytes | {slow:.1f} | {fast:.1f} | "
                    f"{slow / fast:.1f}x |")  # fmt: skip
        print(rows[-1], flush=True)
    body_text = "\n".join([
        "## .npy bodies in and out",
        "",
        "numpy parses a .npy header with `ast.literal_eval`; `service/codecs/npy.py` reads a header written "
        "exactly as `np.save` writes it with one regex, and hands any other to numpy's parser (same results, "
        "checked by a fuzz test). Responses: numpy's `write_array` against one format call (the same bytes, "
        f"tested). Whole body, checks included, median of {args.rounds} alternated rounds, in µs per body.",
        "",
        "| body | numpy | service/codecs/npy.py | gain |",
        "|---|---:|---:|---:|",
        *rows,
    ])  # fmt: skip
    write_section("npy-header", command_line(), body_text)


if __name__ == "__main__":
    main()
