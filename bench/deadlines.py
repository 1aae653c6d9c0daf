"""What the body timeout costs per chunk read: ``asyncio.timeout`` (a timer handle scheduled and
cancelled around every read) against ``service.deadlines.Deadlines`` (a dict entry, one watcher
task for all reads), around a read that is ready at once, as almost every body chunk is.
Alternated rounds in one process, on uvloop as the service runs.

    python -m bench.deadlines
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from collections.abc import Awaitable, Callable

import uvloop

from bench.report import command_line, write_section
from service.deadlines import Deadlines

MESSAGE = {"type": "http.request", "body": b"x" * 512, "more_body": False}


async def receive() -> dict[str, object]:
    return MESSAGE


async def bare() -> dict[str, object]:
    return await receive()


async def with_asyncio_timeout() -> dict[str, object]:
    async with asyncio.timeout(30.0):
        return await receive()


DEADLINES = Deadlines(tick_s=1.0)


async def with_deadlines() -> dict[str, object]:
    return await DEADLINES.wait(receive(), 30.0)


async def per_read_us(read: Callable[[], Awaitable[object]], reads: int) -> float:
    started = time.perf_counter()
    for _ in range(reads):
        await read()
    return (time.perf_counter() - started) / reads * 1e6


async def measure(rounds: int, reads: int) -> dict[str, float]:
    contenders = {"no timeout": bare, "asyncio.timeout": with_asyncio_timeout, "Deadlines.wait": with_deadlines}
    results: dict[str, list[float]] = {name: [] for name in contenders}
    for _ in range(rounds):
        for name, read in contenders.items():
            await per_read_us(read, 1000)  # warm-up
            results[name].append(await per_read_us(read, reads))
    return {name: statistics.median(values) for name, values in results.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--reads", type=int, default=100_000, help="reads per measurement")
    args = parser.parse_args()
    medians = uvloop.run(measure(args.rounds, args.reads))
    base = medians["no timeout"]
    rows = [f"| {name} | {us:.2f} | {us - base:.2f} |" for name, us in medians.items()]
    body = "\n".join([
        "## The body timeout, per chunk read",
        "",
        "Each chunk of a request body is read under the body timeout (`MNIST_AE_BODY_TIMEOUT_S`). "
        "`asyncio.timeout` schedules and cancels a timer handle around every read; `service.deadlines` "
        "registers the read's deadline in a dict and one watcher task checks them all every "
        "min(1 s, timeout/4). The read here is ready at once, as nearly every chunk is. "
        f"Median of {args.rounds} alternated rounds of {args.reads:,} reads, uvloop, µs per read.",
        "",
        "| read | µs per read | added by the timeout |",
        "|---|---:|---:|",
        *rows,
    ])  # fmt: skip
    write_section("deadlines", command_line(), body)


if __name__ == "__main__":
    main()
