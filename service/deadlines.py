"""Timeouts for many short awaits, checked by one watcher instead of one timer each.

``asyncio.timeout`` schedules a timer handle on entry and cancels it on exit: about 5 µs, paid for
every chunk of every request body (bench/deadlines.py), although a body almost never stalls. Here
an await registers its task's deadline in a dict (a fraction of a microsecond) and one watcher
task, running only while awaits are registered, wakes every ``tick_s`` and cancels the tasks past
their deadline; the cancelled await raises ``TimeoutError``, as ``asyncio.timeout`` does. The
price is precision: a stalled await ends between ``timeout_s`` and ``timeout_s + tick_s``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

T = TypeVar("T")


class Deadlines:
    def __init__(self, tick_s: float) -> None:
        if tick_s <= 0:
            raise ValueError(f"tick_s must be positive, not {tick_s}")
        self.tick_s = tick_s
        self._deadlines: dict[asyncio.Task[object], float] = {}
        self._expired: set[asyncio.Task[object]] = set()
        self._watcher: asyncio.Task[None] | None = None

    async def wait(self, awaitable: Awaitable[T], timeout_s: float) -> T:
        """``await awaitable``, or raise ``TimeoutError`` once ``timeout_s`` (plus up to one tick) has passed.

        One await at a time per task (each request's body is read by its own task)."""
        # one lookup of the running loop, not two: on Python 3.11 each costs a getpid() syscall
        task = asyncio.current_task()
        if task is None:  # pragma: no cover - always called from a task under uvicorn
            raise RuntimeError("Deadlines.wait needs a running task")
        loop = task.get_loop()
        self._deadlines[task] = loop.time() + timeout_s
        watcher = self._watcher
        # a watcher of another (closed) event loop would never fire: tests run apps on several loops
        if watcher is None or watcher.done() or watcher.get_loop() is not loop:
            self._watcher = loop.create_task(self._watch(), name="deadline-watcher")
        try:
            return await awaitable
        except asyncio.CancelledError:
            if task not in self._expired:
                raise  # cancelled by someone else: not ours to swallow
            uncancel = getattr(task, "uncancel", None)  # Python 3.11+: the cancel request is consumed
            if uncancel is not None:
                uncancel()
            raise TimeoutError from None
        finally:
            self._deadlines.pop(task, None)  # the watcher may have dropped it already
            self._expired.discard(task)

    async def _watch(self) -> None:
        loop = asyncio.get_running_loop()
        while self._deadlines:
            await asyncio.sleep(self.tick_s)
            now = loop.time()
            for task, deadline in list(self._deadlines.items()):
                if task.done():  # its loop closed mid-await, so its cleanup never ran
                    self._deadlines.pop(task, None)
                elif deadline <= now and task not in self._expired and task.get_loop() is loop:
                    self._expired.add(task)
                    task.cancel()
