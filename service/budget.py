"""The memory a server process may spend on requests in flight, and the bytes each request holds.

Every request with a body reserves bytes from one :class:`ByteBudget` for as long as it is in
flight: from the moment its headers arrive (its declared ``Content-Length``) or as its chunks do,
until its response has been sent. The reservation covers the body, what is decoded from it, the
outputs and the response rendered from them: ``BYTES_PER_BODY_BYTE`` times the body, plus a fixed
``BYTES_PER_REQUEST`` for a small one. A reservation that does not fit is refused at once, with
503 and ``Retry-After``, before the body is read: overload costs the server nothing.

Where the budget comes from: ``MNIST_AE_MEMORY_LIMIT_MB``, or else the memory limit of the
process's cgroup (a container's ``memory`` limit, a pod's ``limits.memory``), or else the
machine's memory, is the one number. A server process keeps ``MEMORY_TARGET`` (85%) of its share
of it (the limit over the worker processes sharing it) and spends on requests what its warm model
and runtime have not taken already.
"""

from __future__ import annotations

import os
from pathlib import Path

from service.errors import Overloaded

MEMORY_TARGET = 0.85  # of the memory limit: what the process may reach at its peak
# measured on the shipped model (python -m bench.burst, docs/decisions.md): 96 clients posting
# 1,024-image JSON bodies of 7.6 MB (the body, the parsed lists of floats, the arrays, the 8.3 MB
# JSON answer) peaked at 89.5% of the limit at 4x, 85.1% at 6x, and at 81-82% with 8x and
# in_flight_capacity's headroom; a .npy of uint8 images is answered in float32, 4x its size
BYTES_PER_BODY_BYTE = 8
BYTES_PER_REQUEST = 256 * 1024  # a one-PNG request still decodes, batches and renders a response

_CGROUP_V2_LIMIT = Path("/sys/fs/cgroup/memory.max")
_CGROUP_V1_LIMIT = Path("/sys/fs/cgroup/memory/memory.limit_in_bytes")


def request_bytes(body_bytes: int) -> int:
    """What a request whose body is ``body_bytes`` long holds in memory at most, by the budget's account."""
    return BYTES_PER_REQUEST + BYTES_PER_BODY_BYTE * body_bytes


def memory_limit_bytes(
    setting_mb: int | None, *, cgroup_v2: Path = _CGROUP_V2_LIMIT, cgroup_v1: Path = _CGROUP_V1_LIMIT
) -> int:
    """The one number: ``setting_mb`` when set, else the cgroup's memory limit, else the machine's memory."""
    if setting_mb is not None:
        return setting_mb * 2**20
    machine = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    for path in (cgroup_v2, cgroup_v1):
        try:
            text = path.read_text().strip()
        except OSError:
            continue
        if text.isdigit() and int(text) < machine:  # "max" (v2) or a huge number (v1): no limit
            return int(text)
    return machine


def in_flight_capacity(limit_bytes: int, processes: int, resident_bytes: int, largest_request: int) -> int:
    """Bytes a process may reserve for requests: ``MEMORY_TARGET`` of its share of the limit, less
    what it holds already, less one largest request's worth of headroom: the event loop parses or
    renders one body at a time, and its transient Python objects (a JSON body's lists of floats)
    come on top of what the requests hold. Never less than one largest request, or it could serve none."""
    return max(int(MEMORY_TARGET * limit_bytes / processes) - resident_bytes - largest_request, largest_request)


class ByteBudget:
    """Bytes reserved by the requests in flight, against a capacity. Used from the event loop only."""

    def __init__(self, capacity: int) -> None:
        if capacity <= 0:
            raise ValueError(f"capacity must be positive, got {capacity}")
        self.capacity = capacity
        self.reserved = 0
        self.peak = 0  # the most reserved at once since the last burst ended (see take_peak)

    def try_reserve(self, n: int) -> bool:
        """Reserve ``n`` bytes if they fit; whether they did."""
        if self.reserved + n > self.capacity:
            return False
        self.reserved += n
        self.peak = max(self.peak, self.reserved)
        return True

    def release(self, n: int) -> None:
        self.reserved -= n

    def take_peak(self) -> int:
        """The peak since the last call, and start counting again from what is reserved now."""
        peak, self.peak = self.peak, self.reserved
        return peak


class Held:
    """The bytes one request holds in the memory budget (none before the budget exists: until the
    model is warm, when inference is refused anyway). Every front door holds its requests' bytes so:
    the request layer (service/request_layer.py) and gRPC (service/oip_grpc/server.py)."""

    __slots__ = ("budget", "bytes")

    def __init__(self, budget: ByteBudget | None) -> None:
        self.budget = budget
        self.bytes = 0

    def take(self, n: int) -> bool:
        """Hold ``n`` more bytes if they fit; whether they did."""
        if self.budget is None:
            return True
        if not self.budget.try_reserve(n):
            return False
        self.bytes += n
        return True

    def take_chunk(self, n: int) -> bool:
        """Hold what a streamed body's next ``n`` bytes will cost."""
        return self.take(BYTES_PER_BODY_BYTE * n + (0 if self.bytes else BYTES_PER_REQUEST))

    def release(self) -> bool:
        """Give the bytes back; whether no request holds any now."""
        if self.budget is None or not self.bytes:
            return False
        self.budget.release(self.bytes)
        self.bytes = 0
        return self.budget.reserved == 0

    def overloaded(self) -> Overloaded:
        """The refusal of a request that did not fit (so there is a budget)."""
        assert self.budget is not None
        reserved, capacity = self.budget.reserved, self.budget.capacity
        return Overloaded(
            f"requests in flight hold {reserved / 2**20:.0f} MB of the {capacity / 2**20:.0f} MB this server "
            "spends on them; retry shortly",
            # the connection stays open: the server reads the unread body and drops it, so the client,
            # still sending it, gets this answer (a close would reset the connection under it)
            headers={"retry-after": "1"},
        )
