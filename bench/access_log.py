"""What one access-log line costs the event loop, through the handler and formatter the service
configures, with the LogRecord flags ``service.logs.configure_logging`` turns off (caller lookup,
thread, process) and with Python's defaults, alternated in one process.

    python -m bench.access_log

Lines go to /dev/null: the write itself costs the same either way.
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import sys
import time

from bench.report import command_line, write_section
from service.logs import configure_logging

PYTHON_DEFAULTS = {
    "_srcfile": os.path.normcase(logging.addLevelName.__code__.co_filename),  # as logging sets it
    "logThreads": True,
    "logProcesses": True,
    "logMultiprocessing": True,
}


def set_flags(values: dict[str, object]) -> None:
    for name, value in values.items():
        setattr(logging, name, value)


def access_line(log: logging.Logger) -> None:
    """The line service.middleware writes for every request."""
    log.info(
        "%s %s %d %.1fms", "POST", "/reconstruct", 200, 1.234,
        extra={"method": "POST", "path": "/reconstruct", "status": 200, "duration_ms": 1.234},
    )  # fmt: skip


def per_line_us(log: logging.Logger, lines: int) -> float:
    started = time.perf_counter()
    for _ in range(lines):
        access_line(log)
    return (time.perf_counter() - started) / lines * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--lines", type=int, default=20_000, help="lines per measurement")
    args = parser.parse_args()
    stderr = sys.stderr
    rows = []
    for fmt in ("json", "text"):
        with open(os.devnull, "w") as devnull:
            sys.stderr = devnull  # configure_logging's handler writes to sys.stderr as it finds it
            configure_logging("INFO", fmt)
            service_flags = {name: getattr(logging, name) for name in PYTHON_DEFAULTS}
            log = logging.getLogger("service.middleware")
            results: dict[str, list[float]] = {"python": [], "service": []}
            for _ in range(args.rounds):
                for label, flags in (("python", PYTHON_DEFAULTS), ("service", service_flags)):
                    set_flags(flags)
                    per_line_us(log, 1000)  # warm-up
                    results[label].append(per_line_us(log, args.lines))
            sys.stderr = stderr
        python, service = statistics.median(results["python"]), statistics.median(results["service"])
        rows.append(f"| {fmt} | {python:.2f} | {service:.2f} | {python / service:.2f}x |")
        print(rows[-1], flush=True)
    body = "\n".join([
        "## One access-log line",
        "",
        "Every request writes one access line on the event loop. `configure_logging` turns off what",
        "LogRecord gathers for formatters that print it (the caller's file and line, thread and process",
        "names, a getpid() syscall), which neither of the service's formatters prints. Median of "
        f"{args.rounds} alternated rounds of {args.lines:,} lines, written to /dev/null, in µs per line.",
        "",
        "| log format | Python's defaults | as the service configures it | gain |",
        "|---|---:|---:|---:|",
        *rows,
    ])  # fmt: skip
    write_section("access-log", command_line(), body)


if __name__ == "__main__":
    main()
