"""The memory budget: the one number it comes from, its arithmetic, and the request layer holding
it: refused at once when full, given back when answered, streamed bodies chunk by chunk."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest

from service.budget import MEMORY_TARGET, ByteBudget, in_flight_capacity, memory_limit_bytes, request_bytes
from tests.conftest import in_process, npy, service_settings

NPY = {"content-type": "application/x-npy", "accept": "application/x-npy"}
MACHINE = 2**40  # more than any cgroup limit in these tests


def test_the_limit_is_the_setting_else_the_cgroup_else_the_machine(tmp_path: Path) -> None:
    v2, v1 = tmp_path / "memory.max", tmp_path / "memory.limit_in_bytes"
    assert memory_limit_bytes(512, cgroup_v2=v2, cgroup_v1=v1) == 512 * 2**20
    v2.write_text(f"{2**30}\n")
    assert memory_limit_bytes(None, cgroup_v2=v2, cgroup_v1=v1) == 2**30
    v2.write_text("max\n")  # cgroup v2 without a limit
    v1.write_text(f"{3 * 2**30}\n")
    assert memory_limit_bytes(None, cgroup_v2=v2, cgroup_v1=v1) == 3 * 2**30
    v1.write_text("9223372036854771712\n")  # cgroup v1 without a limit: the largest page-aligned number
    machine = memory_limit_bytes(None, cgroup_v2=v2, cgroup_v1=v1)
    assert 0 < machine < 9223372036854771712


def test_each_process_keeps_to_85_percent_of_its_share() -> None:
    assert MEMORY_TARGET == 0.85
    largest = request_bytes(16 * 2**20)
    # 1 GiB, one process holding 400 MB: 870 - 400 MB, less one largest request's headroom
    assert in_flight_capacity(2**30, 1, 400 * 2**20, largest) == int(0.85 * 2**30) - 400 * 2**20 - largest
    # two processes share it
    assert in_flight_capacity(2**30, 2, 400 * 2**20, largest) == largest, "never less than one largest request"
    assert in_flight_capacity(4 * 2**30, 2, 400 * 2**20, largest) == int(0.85 * 2 * 2**30) - 400 * 2**20 - largest


def test_a_budget_reserves_what_fits_and_remembers_its_peak() -> None:
    budget = ByteBudget(100)
    assert budget.try_reserve(60) and not budget.try_reserve(41) and budget.try_reserve(40)
    budget.release(60)
    budget.release(40)
    assert budget.reserved == 0 and budget.take_peak() == 100 and budget.take_peak() == 0
    with pytest.raises(ValueError):
        ByteBudget(0)


@pytest.mark.anyio
async def test_a_request_that_does_not_fit_is_refused_at_once_unread(tiny_checkpoint: Path) -> None:
    one = npy(np.full((1, 28, 28), 0.5, dtype=np.float32))
    many = npy(np.full((64, 28, 28), 0.5, dtype=np.float32))
    async with in_process(service_settings(tiny_checkpoint)) as (app, client):
        state = app.state.service
        assert state.budget is not None and state.budget.reserved == 0
        state.budget = ByteBudget(request_bytes(len(many)) - 1)  # room for one small request, not a large one
        assert (await client.post("/reconstruct", content=one, headers=NPY)).status_code == 200
        refused = await client.post("/reconstruct", content=many, headers=NPY)
        assert refused.status_code == 503, refused.text
        assert refused.headers["retry-after"] == "1" and "connection" not in refused.headers
        assert refused.json()["error"]["code"] == "overloaded" and "retry shortly" in refused.json()["error"]["message"]
        v2 = await client.post("/v2/models/mnist-autoencoder/infer", content=b"{" + b" " * len(many) + b"}")
        assert v2.status_code == 503, "every front door holds the budget"
        assert (await client.get("/readyz")).status_code == 200, "requests without a body hold nothing"
        assert state.budget.reserved == 0, "every request gave its bytes back"


@pytest.mark.anyio
async def test_requests_in_flight_hold_their_bytes_until_answered(tiny_checkpoint: Path) -> None:
    body = npy(np.full((8, 28, 28), 0.5, dtype=np.float32))
    async with in_process(service_settings(tiny_checkpoint)) as (app, client):
        state = app.state.service
        state.budget = budget = ByteBudget(3 * request_bytes(len(body)))
        answers = await asyncio.gather(*(client.post("/reconstruct", content=body, headers=NPY) for _ in range(12)))
        statuses = sorted(r.status_code for r in answers)
        assert set(statuses) <= {200, 503} and 200 in statuses
        assert budget.reserved == 0 and budget.take_peak() <= budget.capacity


@pytest.mark.anyio
async def test_a_streamed_body_takes_its_share_chunk_by_chunk(tiny_checkpoint: Path) -> None:
    body = npy(np.full((64, 28, 28), 0.5, dtype=np.float32))

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: sent chunked
        for start in range(0, len(body), 4096):
            yield body[start : start + 4096]

    async with in_process(service_settings(tiny_checkpoint)) as (app, client):
        state = app.state.service
        ok = await client.post("/reconstruct", content=chunks(), headers=NPY)
        assert ok.status_code == 200 and "content-length" not in ok.request.headers
        state.budget = ByteBudget(request_bytes(len(body)) // 2)
        refused = await client.post("/reconstruct", content=chunks(), headers=NPY)
        assert refused.status_code == 503 and refused.json()["error"]["code"] == "overloaded"
        assert state.budget.reserved == 0
