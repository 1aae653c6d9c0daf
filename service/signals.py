"""What the process signals mean to the service, whichever ASGI server runs it, one process or many:

- SIGTERM and SIGINT: the drain. At once /readyz turns 503, so that a load balancer or Kubernetes
  stops routing here, and every response carries ``Connection: close`` (service/request_layer.py),
  so that kept-alive clients reconnect elsewhere; requests are still served for
  ``MNIST_AE_DRAIN_GRACE_S``. Then the server's own handler runs (uvicorn's graceful shutdown: no
  new connections, idle ones closed, the accepted requests finished, then the lifespan drains the
  batch queue). A second signal skips what is left of the grace. With ``--workers N`` uvicorn's
  supervisor passes SIGTERM on to each worker, and each drains so; so does a worker that a SIGHUP
  to the supervisor restarts.
- SIGHUP: roll the configured checkpoint out again (service/reload.py). With ``--workers N``,
  send it to the supervisor instead, which restarts the workers one by one.

Installed by the lifespan on the event loop, in the main thread only (where servers run it), and
removed when it ends.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import threading
from collections.abc import Callable
from types import FrameType
from typing import Any

from service.reload import reload_on_signal
from service.state import ServiceState

log = logging.getLogger(__name__)

ServerHandler = Callable[[int, FrameType | None], Any]


def install(loop: asyncio.AbstractEventLoop, state: ServiceState) -> list[signal.Signals]:
    """Install the handlers; returns the signals to hand back with :func:`remove`."""
    if threading.current_thread() is not threading.main_thread() or not hasattr(signal, "SIGHUP"):
        return []
    loop.add_signal_handler(signal.SIGHUP, lambda: state.background(reload_on_signal(state)))
    installed = [signal.SIGHUP]
    for sig in (signal.SIGTERM, signal.SIGINT):
        server_handler = signal.getsignal(sig)  # the server's own (uvicorn's handle_exit)
        if callable(server_handler):
            loop.add_signal_handler(sig, _drain_first, loop, state, sig, server_handler, state.settings.drain_grace_s)
            installed.append(sig)
    return installed


def remove(loop: asyncio.AbstractEventLoop, installed: list[signal.Signals]) -> None:
    for sig in installed:
        loop.remove_signal_handler(sig)


def _drain_first(
    loop: asyncio.AbstractEventLoop,
    state: ServiceState,
    sig: signal.Signals,
    server_handler: ServerHandler,
    grace_s: float,
) -> None:
    if state.draining:  # a second signal: stop now
        server_handler(sig, None)
        return
    state.start_draining()
    log.info("%s: /readyz says 503 for %.1f s while requests are still served, then stopping", sig.name, grace_s)
    loop.call_later(grace_s, server_handler, sig, None)
