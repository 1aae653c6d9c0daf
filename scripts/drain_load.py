"""Load for the stop checks of scripts/docker-smoke.sh: clients post PNGs to /reconstruct over
kept-alive connections, as httpx, browsers and proxies do, and go on through the stop until the
server has refused every connection for a while (or the time is up). Each request is counted:

- ok / error_status: answered, 200 or not;
- unanswered: sent and never answered (the connection closed or reset under it): the drain's
  target is at most one per client connection. Each one's time is recorded (``unanswered_at``,
  Unix seconds): behind a port proxy (Docker's), connections made after the server has exited are
  accepted by the proxy and dropped, which a client cannot tell from a lost request; the caller
  counts those apart, by the time the server exited;
- refused: the connection itself was refused, so nothing was sent; a client then retries, as it
  would against another replica, after 50 ms.

    python scripts/drain_load.py http://127.0.0.1:18000 --clients 8 --seconds 60 > result.json
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
GONE_AFTER_S = 2.0  # refused this long by every client: the server is gone


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("url")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=60.0, help="stop by then whatever happens")
    parser.add_argument("--api-key", default=os.environ.get("MNIST_AE_API_KEY"), help="default: $MNIST_AE_API_KEY")
    args = parser.parse_args()
    if not args.url.startswith(("http://127.0.0.1", "http://localhost", "http://[::1]")):
        raise SystemExit("load goes to loopback only")
    counts = {"ok": 0, "error_status": 0, "unanswered": 0, "refused": 0}
    errors: dict[str, int] = {}
    unanswered_at: list[float] = []
    deadline = time.monotonic() + args.seconds
    last_answer = time.monotonic()
    headers = {"authorization": f"Bearer {args.api_key}"} if args.api_key else {}

    async def client() -> None:
        nonlocal last_answer
        # one client, one connection at a time, kept alive between requests
        limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
        async with httpx.AsyncClient(base_url=args.url, timeout=30, headers=headers, limits=limits) as http:
            while time.monotonic() < deadline and time.monotonic() - last_answer < GONE_AFTER_S:
                try:
                    response = await http.post("/reconstruct", content=PNG, headers={"content-type": "image/png"})
                except httpx.ConnectError:
                    counts["refused"] += 1
                    await asyncio.sleep(0.05)
                    continue
                except httpx.TransportError as exc:
                    counts["unanswered"] += 1
                    unanswered_at.append(time.time())
                    errors[type(exc).__name__] = errors.get(type(exc).__name__, 0) + 1
                    continue
                last_answer = time.monotonic()
                counts["ok" if response.status_code == 200 else "error_status"] += 1

    await asyncio.gather(*(client() for _ in range(args.clients)))
    result = {**counts, "clients": args.clients, "unanswered_by_error": errors, "unanswered_at": unanswered_at}
    sys.stdout.write(json.dumps(result) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
