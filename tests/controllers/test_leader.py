"""Leader election on a real Lease in the session devcluster: two electors, one leader; the leader dies
without releasing → the other takes over once the lease expires; a clean shutdown releases at once."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

from support.devcluster import Devcluster

from aggapi.auth.kube import api_client
from aggapi.controllers.leader import KubeLease, LeaderElectionConfig, LeaderElector

FAST = {"lease_duration": 2.0, "renew_deadline": 1.5, "retry_period": 0.2, "request_timeout": 1.0}


@contextlib.asynccontextmanager
async def kube(devcluster: Devcluster, tmp_path: Path) -> AsyncIterator[object]:
    api = await api_client(str(devcluster.kubeconfig(tmp_path / "kubeconfig")))
    try:
        yield api
    finally:
        await api.close()


async def wait_until(pred: object, what: str, timeout: float = 20.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not pred():  # type: ignore[operator]
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for: {what}")
        await asyncio.sleep(0.05)


async def test_one_leader_and_takeover_when_it_dies(devcluster: Devcluster, tmp_path: Path) -> None:
    name = f"le-{uuid.uuid4().hex[:8]}"
    async with kube(devcluster, tmp_path) as api:
        leading: dict[str, int] = {"a": 0, "b": 0}
        both = asyncio.Event()

        def elector(ident: str, release: bool) -> LeaderElector:
            cfg = LeaderElectionConfig(ident, name=name, release_on_cancel=release, **FAST)  # type: ignore[arg-type]
            return LeaderElector(KubeLease(api, "kube-system", name, timeout=1.0), cfg)

        def work(ident: str) -> object:
            async def lead() -> None:
                leading[ident] += 1
                try:
                    if all(leading.values()):
                        both.set()  # both leading at the same moment: must never happen
                    await asyncio.Event().wait()
                finally:
                    leading[ident] -= 1

            return lead

        a, b = elector("a", release=False), elector("b", release=True)
        ta = asyncio.create_task(a.run(work("a")))  # type: ignore[arg-type]
        await wait_until(lambda: a.is_leader, "a leads")
        tb = asyncio.create_task(b.run(work("b")))  # type: ignore[arg-type]
        try:
            await wait_until(lambda: b.observed_holder == "a", "b sees a holding the lease")
            await asyncio.sleep(0.5)  # a few of b's retry periods: b must not lead meanwhile
            assert not b.is_leader and leading == {"a": 1, "b": 0}

            ta.cancel()  # a "dies": cancelled without releasing the lease
            with contextlib.suppress(asyncio.CancelledError):
                await ta
            assert leading["a"] == 0
            await wait_until(lambda: b.is_leader, "b takes over after a's lease expires")
            assert leading == {"a": 0, "b": 1} and not both.is_set()

            lease = await KubeLease(api, "kube-system", name).get()
            assert lease is not None and lease.holder == "b" and lease.transitions == 1
        finally:
            tb.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await tb
        released = await KubeLease(api, "kube-system", name).get()
        assert released is not None and released.holder == ""  # b released on a clean shutdown
        assert released.lease_duration_seconds == 1


async def test_released_lease_is_taken_at_once(devcluster: Devcluster, tmp_path: Path) -> None:
    name = f"le-{uuid.uuid4().hex[:8]}"
    # Long lease: if the release did not work, the second elector could not lead within this test.
    slow = {**FAST, "lease_duration": 120.0, "renew_deadline": 60.0}
    async with kube(devcluster, tmp_path) as api:
        cfg_a = LeaderElectionConfig("a", name=name, **slow)  # type: ignore[arg-type]
        cfg_b = LeaderElectionConfig("b", name=name, **slow)  # type: ignore[arg-type]
        a = LeaderElector(KubeLease(api, "kube-system", name), cfg_a)
        b = LeaderElector(KubeLease(api, "kube-system", name), cfg_b)

        async def idle() -> None:
            await asyncio.Event().wait()

        ta = asyncio.create_task(a.run(idle))
        await wait_until(lambda: a.is_leader, "a leads")
        tb = asyncio.create_task(b.run(idle))
        await wait_until(lambda: b.observed_holder == "a", "b sees a")
        ta.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await ta
        try:
            await wait_until(lambda: b.is_leader, "b leads right after a released", timeout=30)
        finally:
            tb.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await tb
