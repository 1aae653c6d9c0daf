"""Parsing multipart forms already in memory: Starlette's streaming parser (python-multipart
callbacks and a SpooledTemporaryFile per file) against service.codecs.multipart (the body cut at
its boundaries), on the forms curl -F sends: one PNG, and 256 PNGs; then decoding a 256-file form's PNGs one by one
or as one batch (service.codecs.images.decode_images). Alternated rounds, one process.

    python -m bench.multipart
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
from starlette.datastructures import UploadFile
from starlette.requests import Request

from bench.report import command_line, write_section
from bench.workload import batch_bodies
from service.codecs.images import decode_image, decode_images
from service.codecs.multipart import parse_form_data


async def with_starlette(body: bytes, content_type: str) -> list[bytes]:
    scope = {"type": "http", "method": "POST", "path": "/", "query_string": b"",
             "headers": [(b"content-type", content_type.encode())]}  # fmt: skip

    async def receive() -> dict[str, object]:
        return {"type": "http.request", "body": body, "more_body": False}

    form = await Request(scope, receive).form(max_files=1024, max_fields=100)
    files = [await value.read() for _, value in form.multi_items() if isinstance(value, UploadFile)]
    await form.close()
    return files


async def in_memory(body: bytes, content_type: str) -> list[bytes]:
    parts = parse_form_data(body, content_type)
    assert parts is not None
    return [part.data for part in parts if part.filename is not None]


async def per_form_us(parse, body: bytes, content_type: str, forms: int) -> float:  # type: ignore[no-untyped-def]
    started = time.perf_counter()
    for _ in range(forms):
        await parse(body, content_type)
    return (time.perf_counter() - started) / forms * 1e6


async def measure(rounds: int) -> list[str]:
    rows = []
    with tempfile.TemporaryDirectory() as tmp_name:
        for n in (1, 256):
            (Path(tmp_name) / str(n)).mkdir()
            _, path, content_type = batch_bodies(Path(tmp_name) / str(n), n)
            body = path.read_bytes()
            assert await with_starlette(body, content_type) == await in_memory(body, content_type)
            forms = 20_000 if n == 1 else 200
            results: dict[str, list[float]] = {"starlette": [], "ours": []}
            for _ in range(rounds):
                for name, parse in (("starlette", with_starlette), ("ours", in_memory)):
                    await per_form_us(parse, body, content_type, forms // 10)  # warm-up
                    results[name].append(await per_form_us(parse, body, content_type, forms))
            theirs, ours = statistics.median(results["starlette"]), statistics.median(results["ours"])
            rows.append(f"| {n} PNG{'s' if n > 1 else ''} ({len(body):,} bytes) | {theirs:,.1f} | {ours:,.1f} | "
                        f"{theirs / ours:.1f}x |")  # fmt: skip
            print(rows[-1], flush=True)
    return rows


def decode_rows(rounds: int) -> list[str]:
    """The 256 PNGs of a form decoded one by one and stacked, against decode_images."""
    with tempfile.TemporaryDirectory() as tmp_name:
        _, path, content_type = batch_bodies(Path(tmp_name), 256)
        parts = parse_form_data(path.read_bytes(), content_type)
    assert parts is not None
    pngs = [(part.data, f"file {i}") for i, part in enumerate(parts)]
    limits = {"size": 28, "max_pixels": 1_000_000, "resize": False}

    def one_by_one() -> np.ndarray:
        return np.stack([decode_image(data, what=what, **limits) for data, what in pngs])  # type: ignore[arg-type]

    def batched() -> np.ndarray:
        return decode_images(pngs, **limits)  # type: ignore[arg-type]

    assert np.array_equal(one_by_one(), batched())
    results: dict[str, list[float]] = {"one by one": [], "batched": []}
    for _ in range(rounds):
        for name, decode in (("one by one", one_by_one), ("batched", batched)):
            decode()
            started = time.perf_counter()
            for _ in range(200):
                decode()
            results[name].append((time.perf_counter() - started) / 200 * 1e6)
    one, many = statistics.median(results["one by one"]), statistics.median(results["batched"])
    return [f"| 256 PNGs | {one:,.0f} | {many:,.0f} | {one / many:.2f}x |"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    rows = asyncio.run(measure(args.rounds))
    decoded = decode_rows(args.rounds)
    body = "\n".join([
        "## Multipart forms, parsed in memory",
        "",
        "The files of a `multipart/form-data` body (as `curl -F` sends them), parsed by Starlette's streaming "
        "parser and by `service/codecs/multipart.py`, which cuts the body (already in memory) at its boundaries "
        "and leaves anything unusual to Starlette. Median of "
        f"{args.rounds} alternated rounds, in µs per form.",
        "",
        "| form | Starlette | in memory | gain |",
        "|---|---:|---:|---:|",
        *rows,
        "",
        "Then the files' PNGs become one (N,28,28) float32 batch: each decoded by `decode_image` (libspng, then "
        "scaled to [0,1]) and stacked, against `decode_images`, which decodes the plain grayscale PNGs into "
        "uint8 rows of one array and scales them in one pass (the same floats, bit for bit; JSON bodies whose "
        "images are all base64 files go the same way). µs per form:",
        "",
        "| files | one by one, stacked | batched | gain |",
        "|---|---:|---:|---:|",
        *decoded,
    ])  # fmt: skip
    write_section("multipart", command_line(), body)


if __name__ == "__main__":
    main()
