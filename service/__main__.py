"""``python -m service --host H --port P``: serve the app under uvicorn.

Other settings come from ``MNIST_AE_*`` environment variables (see service/settings.py).
"""

from __future__ import annotations

import argparse
import sys

import uvicorn

from service.checkpoint import CheckpointError, load_checkpoint
from service.settings import get_settings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m service",
        description="Serve the MNIST autoencoder over HTTP. Settings: MNIST_AE_* environment variables.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--host", default="127.0.0.1", help="interface to bind (0.0.0.0 for all)")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--graceful-timeout", type=float, default=30.0,
                        help="seconds to finish accepted requests after SIGTERM")  # fmt: skip
    parser.add_argument("--loop", choices=["auto", "asyncio", "uvloop"], default="auto",
                        help="event loop; auto picks uvloop when installed")  # fmt: skip
    parser.add_argument("--http", choices=["auto", "h11", "httptools"], default="auto",
                        help="HTTP parser; auto picks httptools when installed")  # fmt: skip
    args = parser.parse_args(argv)

    settings = get_settings()
    try:  # fail in one clear line, before uvicorn starts, if the checkpoint is unusable
        load_checkpoint(settings.checkpoint)
    except CheckpointError as exc:
        print(f"error: cannot start: {exc}", file=sys.stderr)  # noqa: T201 (before logging exists)
        return 2
    uvicorn.run(
        "service.main:app",
        host=args.host,
        port=args.port,
        log_config=None,  # the app configures logging itself
        access_log=False,
        timeout_graceful_shutdown=args.graceful_timeout,
        proxy_headers=False,
        loop=args.loop,
        http=args.http,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
