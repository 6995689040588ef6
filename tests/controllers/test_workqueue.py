"""The work queue and the controller workers: dedup, per-key exponential backoff, bounded concurrency."""

from __future__ import annotations

import asyncio

import pytest

from aggapi.controllers.controller import Controller, Requeue
from aggapi.controllers.workqueue import Backoff, QueueShutDown, WorkQueue
from aggapi.metrics import Metrics


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_dedup_while_waiting() -> None:
    q = WorkQueue("t")
    for key in ("a", "b", "a", "a"):
        q.add(key)
    assert len(q) == 2
    assert await q.get() == "a"
    assert await q.get() == "b"
    assert len(q) == 0


async def test_key_added_while_processing_comes_back_once_after_done() -> None:
    q = WorkQueue("t")
    q.add("a")
    key = await q.get()
    q.add("a")
    q.add("a")
    assert len(q) == 0  # not handed to a second worker while the first has it
    assert q.processing == {"a"}
    q.done(key)
    assert len(q) == 1
    assert await q.get() == "a"
    q.done("a")
    assert len(q) == 0


async def test_done_without_new_add_does_not_requeue() -> None:
    q = WorkQueue("t")
    q.add("a")
    q.done(await q.get())
    assert len(q) == 0 and q.processing == frozenset()


def test_backoff_doubles_and_caps() -> None:
    b = Backoff(base=0.01, cap=0.05)
    assert [b.delay(n) for n in range(1, 6)] == [0.01, 0.02, 0.04, 0.05, 0.05]


async def test_rate_limited_per_key_backoff_and_forget() -> None:
    clock = FakeClock()
    q = WorkQueue("t", backoff=Backoff(base=1.0, cap=100.0), clock=clock)
    assert q.add_rate_limited("a") == 1.0
    assert q.add_rate_limited("a") == 2.0
    assert q.add_rate_limited("b") == 1.0  # backoff is per key
    assert q.requeues("a") == 2
    assert len(q) == 0 and q.delayed == 3

    getter = asyncio.create_task(q.get())
    await asyncio.sleep(0)
    assert not getter.done()  # nothing due yet
    clock.now += 1.0
    q.wakeup()
    assert await getter in ("a", "b")
    q.forget("a")
    assert q.requeues("a") == 0
    assert q.add_rate_limited("a") == 1.0


async def test_delayed_key_is_deduplicated_with_queued_one() -> None:
    clock = FakeClock()
    q = WorkQueue("t", clock=clock)
    q.add("a")
    q.add_after("a", 5)
    clock.now += 5
    assert await q.get() == "a"
    q.done("a")
    # The delayed copy became due while "a" was queued... and was merged with it, or comes now once.
    q.wakeup()
    assert len(q) + q.delayed <= 1


async def test_shutdown_wakes_getters() -> None:
    q = WorkQueue("t")
    getter = asyncio.create_task(q.get())
    await asyncio.sleep(0)
    q.shutdown()
    with pytest.raises(QueueShutDown):
        await getter


async def test_controller_bounded_concurrency_and_no_parallel_same_key() -> None:
    metrics = Metrics()
    q = WorkQueue("t", observer=metrics)
    running: dict[str, int] = {}
    peak = 0
    release = asyncio.Event()
    seen: list[str] = []
    eleven = asyncio.Event()

    async def reconcile(key: str) -> None:
        nonlocal peak
        running[key] = running.get(key, 0) + 1
        assert running[key] == 1, "the same key reconciled twice at once"
        peak = max(peak, sum(running.values()))
        seen.append(key)
        if len(seen) == 11:
            eleven.set()
        await release.wait()
        running[key] -= 1

    ctl = Controller("c", q, reconcile, workers=3, observer=metrics)
    task = asyncio.create_task(ctl.run())
    for i in range(10):
        q.add(f"k{i}")
    for _ in range(20):
        await asyncio.sleep(0)
    assert peak == 3 and len(seen) == 3
    q.add("k0")  # while k0 is being processed: again afterwards
    release.set()
    async with asyncio.timeout(10):
        await eleven.wait()
    assert seen.count("k0") == 2
    q.shutdown()
    await task
    assert ctl.reconciles == 11 and ctl.errors == 0
    text = metrics.render().decode()
    assert 'aggapi_controller_reconcile_total{controller="c",result="success"} 11.0' in text
    assert 'workqueue_depth{name="t"} 0.0' in text


async def test_controller_retries_failures_with_backoff_then_forgets() -> None:
    clock = FakeClock()
    q = WorkQueue("t", backoff=Backoff(base=1.0, cap=60.0), clock=clock)
    attempts = 0

    async def reconcile(key: str) -> None:
        nonlocal attempts
        attempts += 1
        if attempts == 1:
            raise RuntimeError("boom")
        if attempts == 2:
            raise Requeue("not yet")

    ctl = Controller("c", q, reconcile, workers=1)
    q.add("a")
    await ctl.process(await q.get())
    q.done("a")
    assert q.requeues("a") == 1 and q.delayed == 1 and ctl.errors == 1
    clock.now += 1.0
    await ctl.process(await q.get())
    q.done("a")
    assert q.requeues("a") == 2  # Requeue without a delay uses the backoff too
    clock.now += 2.0
    await ctl.process(await q.get())
    q.done("a")
    assert attempts == 3 and q.requeues("a") == 0  # success forgets the failures
