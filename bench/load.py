"""A bigger load test than the one in tests/: many concurrent clients mixing valid and invalid
requests for a while. Checks zero 5xx, that every answer belongs to its own request, and that
resident memory stays flat; reports throughput by kind.

    python -m bench.load --clients 64 --requests 20000
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import io
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
import torch

from bench.report import command_line, write_section
from service.checkpoint import load_checkpoint
from service.codecs.images import png_bytes
from service.codecs.npy import npy_bytes as npy
from service.settings import DEFAULT_CHECKPOINT
from tests.harness import rss_mb, start_server, stop_server
from training.data import load_mnist

KINDS = ("png", "npy-batch", "bad-png", "nan", "wrong-size", "png", "json", "png")
EXPECTED = {"png": 200, "npy-batch": 200, "json": 200, "bad-png": 415, "nan": 422, "wrong-size": 422}


async def run_load(url: str, clients: int, total: int, digits: np.ndarray, expected: np.ndarray) -> dict:
    pngs = [png_bytes(d / 255.0) for d in digits]
    bad_png, nan_npy = pngs[0][:50], npy(np.full((28, 28), np.nan, np.float32))
    big_png = png_bytes(np.zeros((40, 40)))
    counts: collections.Counter[tuple[str, int]] = collections.Counter()
    mismatches = 0
    next_index = 0
    accept = {"accept": "application/x-npy"}

    async def client() -> None:
        nonlocal mismatches, next_index
        async with httpx.AsyncClient(base_url=url, timeout=60) as http:
            while next_index < total:
                n = next_index
                next_index += 1
                kind, i = KINDS[n % len(KINDS)], n % len(digits)
                idx = [i]
                if kind == "png":
                    r = await http.post(
                        "/reconstruct", content=pngs[i], headers={"content-type": "image/png", **accept}
                    )
                elif kind == "npy-batch":
                    idx = [(i + k) % len(digits) for k in range(4)]
                    r = await http.post(
                        "/reconstruct",
                        content=npy(digits[idx]),
                        headers={"content-type": "application/x-npy", **accept},
                    )
                elif kind == "json":
                    r = await http.post("/reconstruct", json={"images": [(digits[i] / 255).tolist()]}, headers=accept)
                elif kind == "bad-png":
                    r = await http.post("/encode", content=bad_png, headers={"content-type": "image/png"})
                elif kind == "nan":
                    r = await http.post("/reconstruct", content=nan_npy, headers={"content-type": "application/x-npy"})
                else:
                    r = await http.post("/encode", content=big_png, headers={"content-type": "image/png"})
                counts[(kind, r.status_code)] += 1
                if r.status_code == 200 and not np.allclose(np.load(io.BytesIO(r.content)), expected[idx], atol=1e-5):
                    mismatches += 1

    await asyncio.gather(*(client() for _ in range(clients)))
    return {"counts": counts, "mismatches": mismatches}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--requests", type=int, default=20_000)
    args = parser.parse_args()
    digits = load_mnist("data", train=False).images[:512].numpy()
    model = load_checkpoint(DEFAULT_CHECKPOINT).model
    with torch.inference_mode():
        expected = model.reconstruct(torch.from_numpy(digits).float().div(255).unsqueeze(1)).numpy()
    with tempfile.TemporaryDirectory() as tmp:
        server = start_server(Path(tmp) / "server.log", {})
        try:
            rss = [rss_mb(server.process.pid)]
            rounds = []
            for _ in range(2):
                started = time.perf_counter()
                result = asyncio.run(run_load(server.url, args.clients, args.requests, digits, expected))
                rounds.append((time.perf_counter() - started, result))
                rss.append(rss_mb(server.process.pid))
        finally:
            stop_server(server)
    rows = []
    for r, (seconds, result) in enumerate(rounds, 1):
        counts = result["counts"]
        five_xx = sum(n for (_, status), n in counts.items() if status >= 500)
        unexpected = sum(n for (kind, status), n in counts.items() if status != EXPECTED[kind])
        rows.append(
            f"| {r} | {sum(counts.values()):,} | {sum(counts.values()) / seconds:,.0f} | {five_xx} | "
            f"{unexpected} | {result['mismatches']} | {rss[r]:.0f} |"
        )
    body = "\n".join(
        [
            f"## Mixed load: {args.clients} clients, {args.requests:,} requests a round",
            "",
            "Valid PNGs, 4-image `.npy` batches and JSON, mixed with truncated PNGs (415), NaN arrays (422) and "
            "40x40 images (422), from an asyncio httpx client in the benchmark process. Every 200 is checked "
            "against the model's own output for that request.",
            "",
            "| round | requests | req/s | 5xx | unexpected status | wrong answers | RSS after, MB |",
            "|---:|---:|---:|---:|---:|---:|---:|",
            *rows,
            "",
            f"Resident memory: {rss[0]:.0f} MB before, {rss[1]:.0f} MB after round 1, {rss[2]:.0f} MB after round 2. "
            "This process loads the model too, to check the answers, so with a CUDA build of torch the server "
            "keeps the CUDA libraries' pages it shares with it; bench.memory measures the server alone.",
        ]
    )
    write_section("load", command_line(), body)


if __name__ == "__main__":
    main()
