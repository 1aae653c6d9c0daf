"""What one request costs the server in CPU, without the network: the app is called in-process
(ASGI, lifespan running) with 32 concurrent requests at a time, and the wall time per request is
reported for GET /healthz and for POST /reconstruct with one PNG.

    python -m bench.request_cost                      # this checkout
    PYTHONPATH=/path/to/older/checkout python bench/request_cost.py --label OLD   # an older one

Comparing commits this way is how the changes that have no switch were measured (the
dependencies, the middleware, the decoding); the results go to BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PNG = (REPO / "examples" / "seven.png").read_bytes()


async def call(app, method: str, path: str, body: bytes) -> int:  # type: ignore[no-untyped-def]
    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method, "scheme": "http",
        "path": path, "raw_path": path.encode(), "query_string": b"", "root_path": "",
        "headers": [(b"host", b"bench"), (b"content-type", b"image/png"), (b"content-length", str(len(body)).encode())],
        "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 80),
    }  # fmt: skip
    sent = False

    async def receive() -> dict[str, object]:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        await asyncio.sleep(3600)
        return {"type": "http.disconnect"}

    status = 0

    async def send(message: dict[str, object]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = int(message["status"])  # type: ignore[call-overload]

    await app(scope, receive, send)
    return status


async def per_request_us(app, method: str, path: str, body: bytes, rounds: int = 5) -> float:  # type: ignore[no-untyped-def]
    results = []
    for _ in range(rounds):
        started = time.perf_counter()
        for _ in range(50):
            statuses = await asyncio.gather(*(call(app, method, path, body) for _ in range(32)))
            assert set(statuses) == {200}, statuses
        results.append((time.perf_counter() - started) / (50 * 32) * 1e6)
    return statistics.median(results)


async def measure() -> dict[str, float]:
    from service.main import create_app
    from service.settings import Settings

    app = create_app(Settings(log_level="WARNING"))
    async with app.router.lifespan_context(app):
        while not app.state.service.ready:
            await asyncio.sleep(0.01)
        await per_request_us(app, "POST", "/reconstruct", PNG, rounds=1)  # warm-up
        return {
            "healthz_us": await per_request_us(app, "GET", "/healthz", b""),
            "reconstruct_us": await per_request_us(app, "POST", "/reconstruct", PNG),
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--label", default=None, help="name of this measurement (default: the commit)")
    args = parser.parse_args()
    import service

    checkout = Path(service.__file__).resolve().parent.parent
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=checkout, capture_output=True, text=True)
    result = {"label": args.label or commit.stdout.strip(), **asyncio.run(measure())}
    print(json.dumps(result))


if __name__ == "__main__":
    main()
