"""service.logs: one JSON object per line with the request id."""

from __future__ import annotations

import io
import json
import logging
import sys
from collections.abc import Iterator

import pytest

from service.logs import configure_logging, request_id_var


@pytest.fixture
def stderr() -> Iterator[io.StringIO]:
    """Where configure(...) points the service's handler; the root logger comes back after."""
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    yield io.StringIO()
    root.handlers[:], level = saved
    root.setLevel(level)


def configure(fmt: str, stream: io.StringIO) -> None:
    configure_logging("INFO", fmt)
    (handler,) = logging.getLogger().handlers
    assert isinstance(handler, logging.StreamHandler) and handler.stream is sys.stderr
    handler.setStream(stream)  # pytest swaps sys.stderr between phases, so patching it would not hold


def test_json_lines_carry_message_extra_fields_and_request_id(stderr: io.StringIO) -> None:
    configure("json", stderr)
    token = request_id_var.set("abc123")
    try:
        logging.getLogger("service.test").info("%s done", "POST", extra={"status": 200, "duration_ms": 1.5})
    finally:
        request_id_var.reset(token)
    (entry,) = [json.loads(line) for line in stderr.getvalue().splitlines()]
    assert entry["message"] == "POST done"
    assert entry["level"] == "INFO" and entry["logger"] == "service.test"
    assert entry["request_id"] == "abc123"
    assert entry["status"] == 200 and entry["duration_ms"] == 1.5
    assert entry["ts"].endswith("+00:00")
    assert not {"thread", "process", "funcName", "lineno"} & set(entry)  # LogRecord's own fields stay out


def test_exceptions_keep_their_traceback(stderr: io.StringIO) -> None:
    configure("json", stderr)
    try:
        raise ValueError("boom")
    except ValueError:
        logging.getLogger("service.test").exception("failed")
    (entry,) = [json.loads(line) for line in stderr.getvalue().splitlines()]
    assert "ValueError: boom" in entry["exception"] and "Traceback" in entry["exception"]
