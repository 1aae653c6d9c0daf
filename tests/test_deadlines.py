"""service.deadlines: asyncio.timeout's behaviour for body reads, with one watcher for all of them."""

from __future__ import annotations

import asyncio
import sys

import pytest

from service.deadlines import Deadlines

TICK = 0.02


async def value_after(seconds: float, value: str = "done") -> str:
    await asyncio.sleep(seconds)
    return value


def test_an_await_that_finishes_in_time_returns_its_value() -> None:
    deadlines = Deadlines(TICK)
    assert asyncio.run(deadlines.wait(value_after(0.0), 1.0)) == "done"


def test_a_stalled_await_raises_timeout_error_after_its_deadline() -> None:
    deadlines = Deadlines(TICK)

    async def main() -> float:
        loop = asyncio.get_running_loop()
        started = loop.time()
        with pytest.raises(TimeoutError):
            await deadlines.wait(value_after(60), 0.1)
        return loop.time() - started

    assert asyncio.run(main()) >= 0.1  # never before the deadline


def test_the_task_carries_on_normally_after_a_timeout() -> None:
    deadlines = Deadlines(TICK)

    async def main() -> str:
        with pytest.raises(TimeoutError):
            await deadlines.wait(value_after(60), 0.05)
        if sys.version_info >= (3, 11):
            task = asyncio.current_task()
            assert task is not None and task.cancelling() == 0  # the cancel request was consumed
            async with asyncio.timeout(5):  # later timeouts in the same task still work
                await asyncio.sleep(0)
        return await deadlines.wait(value_after(0.01, "again"), 1.0)

    assert asyncio.run(main()) == "again"


def test_a_cancel_from_elsewhere_stays_a_cancel() -> None:
    deadlines = Deadlines(TICK)

    async def main() -> None:
        reader = asyncio.create_task(deadlines.wait(value_after(60), 30.0))
        await asyncio.sleep(0.01)
        reader.cancel()
        with pytest.raises(asyncio.CancelledError):
            await reader

    asyncio.run(main())


def test_only_the_stalled_awaits_among_many_time_out() -> None:
    deadlines = Deadlines(TICK)

    async def main() -> list[str]:
        async def one(i: int) -> str:
            try:
                return await deadlines.wait(value_after(60 if i % 3 == 0 else 0.0, f"ok {i}"), 0.3)
            except TimeoutError:
                return f"timeout {i}"

        return await asyncio.gather(*(one(i) for i in range(30)))

    results = asyncio.run(main())
    assert results == [f"timeout {i}" if i % 3 == 0 else f"ok {i}" for i in range(30)]


def test_the_watcher_runs_only_while_awaits_are_registered() -> None:
    deadlines = Deadlines(TICK)

    async def main() -> None:
        await deadlines.wait(value_after(0.0), 1.0)
        watcher = deadlines._watcher
        assert watcher is not None
        await asyncio.wait_for(watcher, timeout=5)  # ends within a tick of the last await
        assert not deadlines._deadlines

    asyncio.run(main())


def test_one_instance_serves_successive_event_loops() -> None:
    deadlines = Deadlines(TICK)  # as one app's middleware does when tests run it on several loops

    async def stalled() -> None:
        with pytest.raises(TimeoutError):
            await deadlines.wait(value_after(60), 0.05)

    asyncio.run(stalled())
    asyncio.run(stalled())


def test_the_tick_must_be_positive() -> None:
    with pytest.raises(ValueError, match="tick_s must be positive"):
        Deadlines(0)
