"""Load for the drain check of scripts/docker-smoke.sh: clients post PNGs to /reconstruct until the
service says it is draining (/readyz 503), as a load balancer would stop routing to it then; every
request sent before that must be answered 200.

    python scripts/drain_load.py http://127.0.0.1:18000 --seconds 30 > result.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from pathlib import Path

import httpx

PNG = (Path(__file__).resolve().parent.parent / "examples" / "seven.png").read_bytes()


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("url")
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=30.0, help="stop by then whatever happens")
    parser.add_argument("--api-key", default=os.environ.get("MNIST_AE_API_KEY"), help="default: $MNIST_AE_API_KEY")
    args = parser.parse_args()
    if not args.url.startswith(("http://127.0.0.1", "http://localhost", "http://[::1]")):
        raise SystemExit("load goes to loopback only")
    counts = {"ok": 0, "error_status": 0, "failed_after_sending": 0, "not_sent": 0}
    draining = asyncio.Event()
    deadline = time.monotonic() + args.seconds

    async def client(http: httpx.AsyncClient) -> None:
        while not draining.is_set() and time.monotonic() < deadline:
            try:
                response = await http.post("/reconstruct", content=PNG, headers={"content-type": "image/png"})
            except httpx.ConnectError:
                counts["not_sent"] += 1  # refused: never accepted
                await asyncio.sleep(0.05)
                continue
            except httpx.TransportError:
                counts["failed_after_sending"] += 1
                continue
            counts["ok" if response.status_code == 200 else "error_status"] += 1

    async def watch_readiness(http: httpx.AsyncClient) -> None:
        while time.monotonic() < deadline:
            try:
                if (await http.get("/readyz")).status_code == 503:
                    break
            except httpx.TransportError:
                break
            await asyncio.sleep(0.1)
        draining.set()

    headers = {"authorization": f"Bearer {args.api_key}"} if args.api_key else {}
    async with httpx.AsyncClient(base_url=args.url, timeout=30, headers=headers) as http:
        await asyncio.gather(watch_readiness(http), *(client(http) for _ in range(args.clients)))
    sys.stdout.write(json.dumps(counts) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
