"""The micro-batcher with a stand-in predictor that records every forward pass."""

from __future__ import annotations

import asyncio
import threading
import time

import numpy as np
import pytest

from service.batcher import MicroBatcher
from service.errors import InferenceFailed, NotReady, Overloaded
from service.inference import Op
from service.metrics import Metrics

pytestmark = pytest.mark.anyio

POISON = -1.0


class RecordingPredictor:
    """Doubles its input; raises on a batch holding POISON; can hold each pass until released."""

    def __init__(self, delay_s: float = 0.0) -> None:
        self.batches: list[tuple[Op, list[float]]] = []
        self.delay_s = delay_s
        self.gate = threading.Event()
        self.gate.set()
        self.running = threading.Event()  # set once a forward pass has begun

    def run(self, op: Op, batch: np.ndarray) -> tuple[np.ndarray, ...]:
        self.running.set()
        self.gate.wait(5)
        time.sleep(self.delay_s)
        self.batches.append((op, [float(v) for v in batch[:, 0, 0]]))
        if (batch == POISON).any():
            raise RuntimeError("boom")
        doubled = batch * 2
        if op is Op.RECONSTRUCT:
            mean = batch.reshape(len(batch), -1).mean(axis=1)
            return doubled, mean, 100 * mean
        return (doubled,)


def make(predictor: RecordingPredictor, **overrides: float) -> MicroBatcher:
    options = {"max_batch_images": 64, "max_wait_s": 0.005, "max_queue_images": 1000, **overrides}
    batcher = MicroBatcher(predictor, metrics=Metrics(), **options)  # type: ignore[arg-type]
    batcher.start()
    return batcher


def images(value: float, n: int = 1) -> np.ndarray:
    return np.full((n, 28, 28), value, dtype=np.float32)


async def test_concurrent_requests_each_get_exactly_their_own_rows() -> None:
    predictor = RecordingPredictor()
    batcher = make(predictor, max_wait_s=0.05)
    sizes = [1 + i % 5 for i in range(40)]
    # every row of request i carries the value i, so any mix-up shows
    results = await asyncio.gather(*(batcher.submit(Op.RECONSTRUCT, images(i, n)) for i, n in enumerate(sizes)))
    for i, (n, (recon, mse, _)) in enumerate(zip(sizes, results, strict=True)):
        assert recon.shape == (n, 28, 28)
        np.testing.assert_array_equal(recon, images(2 * i, n))
        np.testing.assert_array_equal(mse, np.full(n, i, np.float32))
    assert sum(len(rows) for _, rows in predictor.batches) == sum(sizes)
    assert len(predictor.batches) < len(sizes), "requests were gathered into shared forward passes"
    await batcher.close(5)


async def test_a_full_batch_runs_at_once_and_never_exceeds_the_limit() -> None:
    predictor = RecordingPredictor()
    batcher = make(predictor, max_batch_images=4, max_wait_s=10.0)  # waiting would hang: only fullness closes
    await asyncio.gather(*(batcher.submit(Op.ENCODE, images(i)) for i in range(12)))
    assert [len(rows) for _, rows in predictor.batches] == [4, 4, 4]
    assert predictor.batches[0][1] == [0.0, 1.0, 2.0, 3.0], "queue order kept"
    await batcher.close(5)


async def test_a_request_bigger_than_the_batch_limit_runs_alone() -> None:
    predictor = RecordingPredictor()
    batcher = make(predictor, max_batch_images=4)
    (out,) = await batcher.submit(Op.ENCODE, images(3, 6))
    assert out.shape == (6, 28, 28)
    assert [len(rows) for _, rows in predictor.batches] == [6]
    await batcher.close(5)


async def test_operations_are_batched_separately() -> None:
    predictor = RecordingPredictor()
    batcher = make(predictor, max_wait_s=0.05)
    await asyncio.gather(
        batcher.submit(Op.ENCODE, images(1)), batcher.submit(Op.DECODE, images(2)), batcher.submit(Op.ENCODE, images(3))
    )
    assert sorted((op.value, rows) for op, rows in predictor.batches) == [("decode", [2.0]), ("encode", [1.0, 3.0])]
    await batcher.close(5)


async def test_a_failing_batch_fails_only_its_own_requests_and_the_worker_recovers() -> None:
    predictor = RecordingPredictor()
    batcher = make(predictor, max_batch_images=1)  # one request per batch
    outcomes = await asyncio.gather(
        batcher.submit(Op.ENCODE, images(1)),
        batcher.submit(Op.ENCODE, images(POISON)),
        batcher.submit(Op.ENCODE, images(3)),
        return_exceptions=True,
    )
    assert isinstance(outcomes[1], InferenceFailed) and outcomes[1].status_code == 500
    np.testing.assert_array_equal(outcomes[0][0], images(2))  # type: ignore[index]
    np.testing.assert_array_equal(outcomes[2][0], images(6))  # type: ignore[index]
    (after,) = await batcher.submit(Op.ENCODE, images(5))
    np.testing.assert_array_equal(after, images(10))
    await batcher.close(5)


async def test_everyone_in_a_failing_batch_gets_the_error() -> None:
    predictor = RecordingPredictor()
    batcher = make(predictor, max_batch_images=3, max_wait_s=10.0)
    outcomes = await asyncio.gather(
        *(batcher.submit(Op.ENCODE, images(v)) for v in (1, POISON, 3)), return_exceptions=True
    )
    assert all(isinstance(o, InferenceFailed) for o in outcomes)
    await batcher.close(5)


async def test_a_cancelled_request_is_dropped_from_its_batch() -> None:
    predictor = RecordingPredictor()
    batcher = make(predictor, max_batch_images=1)
    predictor.gate.clear()  # hold the first forward pass
    first = asyncio.create_task(batcher.submit(Op.ENCODE, images(1)))
    assert await asyncio.to_thread(predictor.running.wait, 5), "the first forward pass is running"
    gone = asyncio.create_task(batcher.submit(Op.ENCODE, images(2)))
    kept = asyncio.create_task(batcher.submit(Op.ENCODE, images(3)))
    await asyncio.sleep(0)  # one turn of the loop: both are queued behind the running pass
    gone.cancel()  # its client disconnected while it was queued
    predictor.gate.set()
    await first
    await kept
    assert [rows for _, rows in predictor.batches] == [[1.0], [3.0]]
    await batcher.close(5)


async def test_a_full_queue_answers_503_at_once() -> None:
    predictor = RecordingPredictor()
    batcher = make(predictor, max_batch_images=1, max_queue_images=3)
    predictor.gate.clear()
    held = [asyncio.create_task(batcher.submit(Op.ENCODE, images(i))) for i in range(3)]
    assert await asyncio.to_thread(predictor.running.wait, 5)  # one is running, two are queued
    with pytest.raises(Overloaded, match="limit 3") as info:
        await batcher.submit(Op.ENCODE, images(9, 2))
    assert info.value.status_code == 503 and info.value.headers == {"retry-after": "1"}
    predictor.gate.set()
    await asyncio.gather(*held)
    await batcher.close(5)


async def test_close_finishes_accepted_work_then_refuses_new_work() -> None:
    predictor = RecordingPredictor(delay_s=0.02)
    batcher = make(predictor, max_batch_images=2)
    accepted = [asyncio.create_task(batcher.submit(Op.ENCODE, images(i))) for i in range(6)]
    await asyncio.sleep(0)
    assert await batcher.close(5) is True
    assert all(task.done() and not task.exception() for task in accepted)
    with pytest.raises(NotReady, match="shutting down"):
        await batcher.submit(Op.ENCODE, images(1))


async def test_a_lone_request_does_not_wait_for_company() -> None:
    predictor = RecordingPredictor()
    batcher = make(predictor, max_wait_s=60.0)  # waiting for the deadline would time this test out
    (out,) = await asyncio.wait_for(batcher.submit(Op.ENCODE, images(1)), timeout=10)
    np.testing.assert_array_equal(out, images(2))
    await batcher.close(5)


async def test_a_batch_waits_for_requests_still_being_decoded() -> None:
    predictor = RecordingPredictor()
    batcher = make(predictor, max_wait_s=60.0)
    decoding = asyncio.Event()
    done_decoding = asyncio.Event()

    async def slow_request() -> np.ndarray:
        with batcher.arrival():
            decoding.set()
            await done_decoding.wait()  # stands for reading and decoding a body
        (out,) = await batcher.submit(Op.ENCODE, images(2))
        return out

    slow = asyncio.create_task(slow_request())
    await decoding.wait()
    fast = asyncio.create_task(batcher.submit(Op.ENCODE, images(1)))
    await asyncio.sleep(0.05)  # a window in which nothing may happen: no event marks a pass that does not start
    assert not predictor.running.is_set(), "the queued request waits while another is on its way"
    done_decoding.set()
    await asyncio.wait_for(asyncio.gather(slow, fast), timeout=10)
    assert [rows for _, rows in predictor.batches] == [[1.0, 2.0]], "both went in one forward pass"
    await batcher.close(5)
