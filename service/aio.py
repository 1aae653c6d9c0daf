"""asyncio helpers."""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import AsyncIterator

if sys.version_info >= (3, 11):
    timeout = asyncio.timeout  # a deadline on the running task: no extra task, unlike wait_for
else:  # pragma: no cover

    @contextlib.asynccontextmanager
    async def timeout(seconds: float) -> AsyncIterator[None]:
        task = asyncio.current_task()
        assert task is not None
        handle = asyncio.get_running_loop().call_later(seconds, task.cancel)
        try:
            yield
        except asyncio.CancelledError:
            raise TimeoutError from None
        finally:
            handle.cancel()
