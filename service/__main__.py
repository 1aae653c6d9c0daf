"""``python -m service --host H --port P``: serve the app under uvicorn (``service.main:create_app``).

Other settings come from ``MNIST_AE_*`` environment variables (see service/settings.py).
"""

from __future__ import annotations

import argparse
import logging
import sys
import threading
from types import FrameType

import uvicorn
from pydantic import ValidationError

from service.main import StartupError, create_app, load_model
from service.settings import describe_settings_error, get_settings
from service.state import ServiceState

log = logging.getLogger("service")


class DrainingServer(uvicorn.Server):
    """uvicorn, with a grace period on the first SIGTERM/SIGINT.

    For ``grace_s`` seconds /readyz answers 503 while every request is still served, so that a
    load balancer or Kubernetes stops routing new traffic here; then uvicorn's own graceful
    shutdown runs: it stops accepting connections, finishes the accepted requests (up to
    ``--graceful-timeout``), and the lifespan drains the batch queue. A second signal skips
    what is left of the grace.
    """

    def __init__(self, config: uvicorn.Config, state: ServiceState, grace_s: float) -> None:
        super().__init__(config)
        self.state = state
        self.grace_s = grace_s
        self._grace: threading.Timer | None = None

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self.grace_s > 0 and self._grace is None:
            self.state.draining = True  # /readyz turns 503 now
            self._grace = threading.Timer(self.grace_s, self._end_grace)
            self._grace.daemon = True
            self._grace.start()
            return
        super().handle_exit(sig, frame)

    def _end_grace(self) -> None:
        log.info("drain grace of %.1f s over; stopping", self.grace_s)
        self.should_exit = True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m service",
        description="Serve the MNIST autoencoder over HTTP. Settings: MNIST_AE_* environment variables.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--host", default="127.0.0.1", help="interface to bind (0.0.0.0 for all)")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--graceful-timeout", type=float, default=30.0,
                        help="seconds to finish accepted requests once shutdown starts")  # fmt: skip
    parser.add_argument("--loop", choices=["auto", "asyncio", "uvloop"], default="auto",
                        help="event loop; auto picks uvloop when installed")  # fmt: skip
    parser.add_argument("--http", choices=["auto", "h11", "httptools"], default="auto",
                        help="HTTP parser; auto picks httptools when installed")  # fmt: skip
    args = parser.parse_args(argv)

    try:
        settings = get_settings()
    except ValidationError as exc:
        print(f"error: cannot start: {describe_settings_error(exc)}", file=sys.stderr)  # noqa: T201
        return 2
    try:  # fail in one clear line, before uvicorn starts, if the checkpoint is unusable; loaded once
        checkpoint = load_model(settings)
    except StartupError as exc:
        print(f"error: {exc}", file=sys.stderr)  # noqa: T201 (before logging exists)
        return 2
    app = create_app(settings, checkpoint=checkpoint)

    config = uvicorn.Config(
        app,
        host=args.host,
        port=args.port,
        log_config=None,  # the app configures logging itself
        access_log=False,
        timeout_graceful_shutdown=args.graceful_timeout,
        proxy_headers=False,
        loop=args.loop,
        http=args.http,
    )
    DrainingServer(config, app.state.service, settings.drain_grace_s).run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
