"""This checkout's service against another revision's, side by side in one run: do they answer
the same bytes, and how fast is each? For a change that must not change behaviour or speed.

    python -m bench.compare main         # about 2 minutes on 2 CPU cores
    python -m bench.compare HEAD --weights-from 7107a84   # one tree, two checkpoints: what a model costs

The other revision is exported with ``git archive`` into a temporary folder and run with this
checkout's Python and packages, each server serving its own tree's weights. Then:

1. the answers: every inference route in every output format, for the example digits (PNG, JSON,
   .npy, multipart, latent codes, the error map, the /v2 protocol), compared byte for byte, with
   the headers that carry results;
2. the speed: single PNGs to /reconstruct over 64 connections and 256-image .npy bodies over 4,
   interleaved rounds, medians, and the ratio of this checkout to the other.
Load comes from wrk, on loopback only.
"""

from __future__ import annotations

import argparse
import io
import json
import shutil
import statistics
import subprocess
import tarfile
import tempfile
from pathlib import Path

import httpx
import numpy as np

from bench.workload import PNG, batch_bodies
from bench.wrk import run_wrk
from tests.harness import REPO, LiveServer, start_server, stop_server

EXAMPLES = REPO / "examples"
NPY = "application/x-npy"
RESULT_HEADERS = (
    "content-type",
    "x-reconstruction-mse",
    "x-novelty",
    "x-anomaly-percentile",
    "x-anomaly",
    "x-anomaly-quantile",
)


def export(revision: str, into: Path, *paths: str) -> Path:
    """The tree of ``revision`` (a commit, branch or tag of this repository), or only ``paths`` of
    it, unpacked into ``into``."""
    archive = subprocess.run(["git", "archive", revision, *paths], cwd=REPO, capture_output=True, check=True).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(into, filter="data")
    return into


def requests() -> list[tuple[str, str, bytes, dict[str, str]]]:
    """(label, path, body, headers) for every route and output format, from the example digits."""
    png = PNG.read_bytes()
    digits = (EXAMPLES / "digits.npy").read_bytes()
    images_json = (EXAMPLES / "images.json").read_bytes()
    latent_json = (EXAMPLES / "latent.json").read_bytes()
    boundary = "comparebound"
    form = (
        b"".join(
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{p.name}"\r\n'
            f"Content-Type: image/png\r\n\r\n".encode()
            + p.read_bytes()
            + b"\r\n"
            for p in sorted(EXAMPLES.glob("*.png"))
        )
        + f"--{boundary}--\r\n".encode()
    )
    bodies = {
        "png": (png, "image/png"),
        "npy": (digits, NPY),
        "json": (images_json, "application/json"),
        "multipart": (form, f"multipart/form-data; boundary={boundary}"),
    }
    out = []
    for path in ("/reconstruct", "/encode"):
        for body_name, (body, content_type) in bodies.items():
            for fmt in ("json", "png", "npy"):
                out.append(
                    (f"{path} {body_name} -> {fmt}", f"{path}?format={fmt}", body, {"content-type": content_type})
                )
    out.append(("/reconstruct error map", "/reconstruct?format=png&error_map=true", png, {"content-type": "image/png"}))
    out.append(("/reconstruct q=0.9", "/reconstruct?anomaly_quantile=0.9", digits, {"content-type": NPY}))
    for fmt in ("json", "png", "npy"):
        out.append(
            (f"/decode json -> {fmt}", f"/decode?format={fmt}", latent_json, {"content-type": "application/json"})
        )
    pixels = np.load(io.BytesIO(digits)).reshape(-1).tolist()
    infer = {"inputs": [{"name": "images", "datatype": "UINT8", "shape": [3, 28, 28], "data": pixels}]}
    out.append(
        ("/v2 infer", "/v2/models/mnist-ae/infer", json.dumps(infer).encode(), {"content-type": "application/json"})
    )
    out.append(("bad body", "/reconstruct", b"not an image", {"content-type": "image/png"}))
    return out


def answer(server: LiveServer, path: str, body: bytes, headers: dict[str, str]) -> tuple[int, bytes, dict[str, str]]:
    response = httpx.post(f"{server.url}{path}", content=body, headers=headers, timeout=30)
    return response.status_code, response.content, {h: response.headers.get(h, "") for h in RESULT_HEADERS}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("revision", help="the other revision, e.g. main or a commit")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=8.0, help="per wrk run")
    parser.add_argument("--weights-from", metavar="REVISION", help="the other server serves this revision's weights/")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        other_tree = export(args.revision, tmp / "other")
        other_name = args.revision
        if args.weights_from:
            shutil.rmtree(other_tree / "weights")
            export(args.weights_from, other_tree, "weights")
            other_name = f"{args.revision} with {args.weights_from}'s weights"
        npy, _, _ = batch_bodies(tmp, 256)
        servers = {
            "this checkout": start_server(tmp / "this.log", {}),
            other_name: start_server(tmp / "other.log", {}, cwd=other_tree),
        }
        try:
            differing = []
            cases = requests()
            for label, path, body, headers in cases:
                this, other = (answer(server, path, body, headers) for server in servers.values())
                if this[:2] != other[:2] or this[2] != other[2]:
                    differing.append(label)
            print(f"identical answers: {len(cases) - len(differing)} of {len(cases)}", flush=True)
            for label in differing:
                print(f"  differs: {label}")
            single: dict[str, list[float]] = {name: [] for name in servers}
            batched: dict[str, list[float]] = {name: [] for name in servers}
            for r in range(args.rounds):
                for name, server in servers.items():
                    url = f"{server.url}/reconstruct"
                    one = run_wrk(url, PNG, content_type="image/png", connections=64, seconds=args.seconds)
                    many = run_wrk(url, npy, content_type=NPY, accept=NPY, connections=4, seconds=args.seconds)
                    assert one.non_2xx == 0 and many.non_2xx == 0, (name, one, many)
                    single[name].append(one.rps)
                    batched[name].append(many.rps * 256)
                    print(f"  round {r + 1} {name}: {one.rps:,.0f} req/s, {many.rps * 256:,.0f} images/s", flush=True)
        finally:
            for server in servers.values():
                stop_server(server)
    this_name = next(iter(servers))
    rows = [
        ("single PNG, 64 connections (req/s)", single),
        (".npy, 256 images a request, 4 connections (images/s)", batched),
    ]
    heading = f"median of {args.rounds} interleaved rounds, {args.seconds:g} s a run"
    print(f"\n| {heading} | this checkout | {other_name} | ratio |")
    print("|---|---:|---:|---:|")
    for label, values in rows:
        mine, theirs = statistics.median(values[this_name]), statistics.median(values[other_name])
        print(f"| {label} | {mine:,.0f} | {theirs:,.0f} | {mine / theirs:.3f}x |")


if __name__ == "__main__":
    main()
