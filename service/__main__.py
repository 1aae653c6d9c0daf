"""``python -m service --host H --port P [--workers N]``: serve the app under uvicorn.

Other settings come from ``MNIST_AE_*`` environment variables (service/settings.py). With one
process the checkpoint is loaded once, here, before uvicorn starts, and handed to the app. With
``--workers N``, uvicorn's supervisor starts N processes that each build the app
(``service.main:create_app``) and load the checkpoint, each with its own batcher; it is checked
here first all the same, so that a bad one stops everything in one line. Their Prometheus metrics
are added up across them (service/metrics.py). SIGTERM drains every worker (service/signals.py);
SIGHUP to this process restarts the workers one at a time on the configured checkpoint.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import socket
import sys
import tempfile
from types import FrameType
from typing import Any

import uvicorn
from pydantic import ValidationError
from uvicorn.supervisors import Multiprocess

from service.logs import configure_logging
from service.main import WORKERS_VARIABLE, StartupError, create_app, load_model
from service.settings import describe_settings_error, get_settings

METRICS_DIR = "PROMETHEUS_MULTIPROC_DIR"  # prometheus_client's multiprocess mode reads it
# after the server stops accepting: time for the requests on connections it accepted just before to
# arrive and be read (a client sends its request as soon as it is connected)
READ_ACCEPTED_S = 0.1
# how long uvicorn's supervisor waits for a worker it starts to be ready, and for a worker to
# answer its health check. Its default, 5 s, is shorter than a worker's start under load on 2
# cores (6 s measured: 5.3 s to spawn and import torch, 0.7 s to load and warm up), and a SIGHUP
# restart would be abandoned; a longer one delays noticing a worker killed while it was being
# checked by as much (the check waits on a pipe that the supervisor holds both ends of)
WORKER_START_TIMEOUT_S = 20


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m service",
        description="Serve the MNIST autoencoder over HTTP. Settings: MNIST_AE_* environment variables.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--host", default="127.0.0.1", help="interface to bind (0.0.0.0 for all)")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument(
        "--workers",
        type=int,
        default=1,
        help="server processes, each with its own model and batcher (one per core or so)",
    )
    parser.add_argument(
        "--graceful-timeout", type=float, default=30.0, help="seconds to finish accepted requests once shutdown starts"
    )
    parser.add_argument(
        "--loop",
        choices=["auto", "asyncio", "uvloop"],
        default="auto",
        help="event loop; auto picks uvloop when installed",
    )
    parser.add_argument(
        "--http",
        choices=["auto", "h11", "httptools"],
        default="auto",
        help="HTTP parser; auto picks httptools when installed",
    )
    args = parser.parse_args(argv)
    if args.workers < 1:
        parser.error("--workers must be at least 1")

    try:
        settings = get_settings()
    except ValidationError as exc:
        print(f"error: cannot start: {describe_settings_error(exc)}", file=sys.stderr)  # noqa: T201
        return 2
    try:  # fail in one clear line, before uvicorn starts, if the checkpoint is unusable
        checkpoint = load_model(settings)
    except StartupError as exc:
        print(f"error: {exc}", file=sys.stderr)  # noqa: T201 (before logging exists)
        return 2

    options = {
        "host": args.host,
        "port": args.port,
        "log_config": None,
        "access_log": False,
        "proxy_headers": False,
        "timeout_graceful_shutdown": args.graceful_timeout,
        "timeout_worker_healthcheck": WORKER_START_TIMEOUT_S,
        "loop": args.loop,
        "http": args.http,
    }
    os.environ[WORKERS_VARIABLE] = str(args.workers)  # each process takes its share of the memory limit
    if args.workers == 1:
        config = uvicorn.Config(create_app(settings, checkpoint=checkpoint), **options)
        listener = config.bind_socket()
        # the port keeps listening until the process exits (see DrainingServer)
        with listener.dup():
            DrainingServer(config).run(sockets=[listener])
        return 0
    configure_logging(settings.log_level, settings.log_format)  # the supervisor's own lines
    with tempfile.TemporaryDirectory(prefix="mnist-ae-metrics-") as metrics_dir:
        os.environ.setdefault(METRICS_DIR, metrics_dir)  # the workers inherit it; an operator's own wins
        config = uvicorn.Config("service.main:create_app", factory=True, workers=args.workers, **options)
        listener = config.bind_socket()
        supervisor = Multiprocess(config, sockets=[listener])
        close_on_stop(listener)
        supervisor.run()
    return 0


class DrainingServer(uvicorn.Server):
    """uvicorn's server, whose shutdown loses no request it has accepted.

    uvicorn's own shutdown stops accepting and at once closes every connection with no request in
    progress, including one accepted an instant before whose request it has not read yet: the
    client, having sent it, gets no answer. Here the requests on such connections are read and
    answered first (with ``Connection: close``). And the port keeps listening until the process
    exits (``python -m service`` holds a duplicate of the listener): a port proxy that accepts on
    the server's behalf (Docker's) would otherwise accept and drop every connection made while
    the accepted requests finish; such a connection waits in the backlog instead and is reset at
    the exit, one lost request per client at most. (With --workers, see :func:`close_on_stop`.)
    """

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        for server in self.servers:
            server.close()  # no new connections; uvicorn's shutdown closes them again, harmlessly
        await asyncio.sleep(READ_ACCEPTED_S)
        await super().shutdown(sockets)


def close_on_stop(listener: socket.socket) -> None:
    """On SIGTERM or SIGINT, close the supervisor's copy of the listening socket, then hand the
    signal on as before. The workers each hold the port until their drain ends and they stop
    accepting; were this copy to outlive them, the kernel would go on queueing connections that
    nobody accepts, and reset every one of them when the supervisor exits: a lost request for each
    client. Closed, the port refuses them once the last worker stops accepting."""
    for sig in (signal.SIGTERM, signal.SIGINT):
        handed_on = signal.getsignal(sig)  # the supervisor's: it queues the signal for its loop

        def handler(signum: int, frame: FrameType | None, handed_on: Any = handed_on) -> None:
            listener.close()
            if callable(handed_on):
                handed_on(signum, frame)

        signal.signal(sig, handler)


if __name__ == "__main__":
    sys.exit(main())
