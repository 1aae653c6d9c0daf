"""What the running service holds: settings, metrics, the model being served and its batcher, and
readiness; and the guard every inference call passes first (:meth:`ServiceState.admit`)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from service.access import check_api_key
from service.batcher import MicroBatcher
from service.budget import ByteBudget
from service.checkpoint import Checkpoint
from service.errors import NotReady
from service.metrics import Metrics
from service.settings import Settings

if TYPE_CHECKING:  # imported only when tracing is on (service/tracing.py)
    from service.tracing import Tracing


@dataclass
class ServiceState:
    settings: Settings
    metrics: Metrics
    checkpoint: Checkpoint | None = None  # the one being served; a roll-out replaces it
    batcher: MicroBatcher | None = None  # set once the model is loaded; it runs the checkpoint's predictor
    budget: ByteBudget | None = None  # the memory requests in flight may hold; set once the model is warm
    ready: bool = False  # loaded and warmed up
    draining: bool = False  # shutting down: finishing accepted requests, taking no new ones
    reload_lock: asyncio.Lock = field(default_factory=asyncio.Lock)  # one roll-out at a time
    on_drain: list[Callable[[], None]] = field(default_factory=list)  # run by start_draining
    tracing: Tracing | None = None  # OpenTelemetry, when the OTEL_* variables turn it on
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)

    @property
    def status(self) -> str:
        if self.draining:
            return "draining"
        return "ready" if self.ready else "loading"

    @property
    def routable(self) -> bool:
        """What readiness probes report: warm, and not draining (a draining server still serves,
        but load balancers should stop sending it requests)."""
        return self.ready and not self.draining

    def admit(self, authorization: str | None) -> MicroBatcher:
        """The guard of every front door's inference: 401 without the API key (when one is set),
        503 until the model is warm; returns the batcher that serves the model. A draining server
        still admits: its probes already say 503, and requests that arrive meanwhile are served."""
        check_api_key(authorization, self.settings.api_key)
        if not self.ready or self.batcher is None:
            raise NotReady(f"the model is not ready ({self.status}); retry shortly", headers={"retry-after": "1"})
        return self.batcher

    def start_draining(self) -> None:
        """The drain begins (SIGTERM, or the end of the lifespan): probes say 503 from now on, and
        each ``on_drain`` callback runs once."""
        if self.draining:
            return
        self.draining = True
        for callback in self.on_drain:
            callback()

    def traced(self, step: str) -> AbstractContextManager[Any]:
        """``with state.traced("decode"):`` around one step of a request: a child span of the
        request's when tracing is on, nothing otherwise."""
        return nullcontext() if self.tracing is None else self.tracing.step(step)

    def background(self, work: Coroutine[object, object, None]) -> None:
        """Run ``work`` as a task of its own, kept referenced until it ends (asyncio holds tasks weakly)."""
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def set_ready(self, ready: bool) -> None:
        self.ready = ready
        self.metrics.ready.set(1 if ready else 0)
