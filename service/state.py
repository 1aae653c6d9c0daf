"""What the running service holds: settings, metrics, the loaded model and its batcher, and readiness."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from dataclasses import dataclass, field

from service.batcher import MicroBatcher
from service.checkpoint import Checkpoint
from service.metrics import Metrics
from service.model import ModelConfig
from service.settings import Settings


@dataclass(frozen=True)
class Serving:
    """The model side of every inference call, built once when the model is loaded."""

    batcher: MicroBatcher
    settings: Settings
    config: ModelConfig


@dataclass
class ServiceState:
    settings: Settings
    metrics: Metrics
    checkpoint: Checkpoint | None = None
    serving: Serving | None = None  # set once the model is loaded
    ready: bool = False  # loaded and warmed up
    draining: bool = False  # shutting down: finishing accepted requests, taking no new ones
    reload_lock: asyncio.Lock = field(default_factory=asyncio.Lock)  # one roll-out at a time
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)

    @property
    def status(self) -> str:
        if self.draining:
            return "draining"
        return "ready" if self.ready else "loading"

    def background(self, work: Coroutine[object, object, None]) -> None:
        """Run ``work`` as a task of its own, kept referenced until it ends (asyncio holds tasks weakly)."""
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def set_ready(self, ready: bool) -> None:
        self.ready = ready
        self.metrics.ready.set(1 if ready else 0)
