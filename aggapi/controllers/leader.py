"""Leader election on a coordination.k8s.io/v1 Lease, as client-go's leaderelection does it.

Every replica tries to acquire the Lease every `retry_period`. A Lease held by another identity counts
as expired `lease_duration` after this replica last saw its record change (local monotonic time, so
clock skew between replicas does not matter). Writes are PUTs carrying the resourceVersion that was
read, so two replicas can never both believe they won the same round. The leader renews every
`retry_period`; if no renewal succeeds for `renew_deadline` it stops leading (its controllers are
cancelled) and goes back to acquiring. On shutdown a leader releases the Lease (empty holder, 1 s
duration) so another replica takes over at once; a leader that dies without releasing is replaced
within `lease_duration` (+ one retry period).
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any, Protocol

from aggapi.controllers.kubejson import KubeUnavailable, kube_request

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class LeaderElectionConfig:
    identity: str
    namespace: str = "kube-system"
    name: str = "aggapi-controllers"
    lease_duration: float = 15.0
    renew_deadline: float = 10.0
    retry_period: float = 2.0
    request_timeout: float = 5.0
    release_on_cancel: bool = True

    def validate(self) -> list[str]:
        errs = []
        if not self.identity:
            errs.append("leader election needs an identity")
        if not self.lease_duration > self.renew_deadline > self.retry_period > 0:
            errs.append("leader election needs lease duration > renew deadline > retry period > 0")
        return errs


@dataclass(frozen=True, slots=True)
class LeaseRecord:
    holder: str = ""
    lease_duration_seconds: int = 0
    acquire_time: str = ""
    renew_time: str = ""
    transitions: int = 0
    resource_version: str = ""


class LeaseError(Exception):
    """The Lease could not be read or written (other than a lost race)."""


class LeaseLock(Protocol):
    async def get(self) -> LeaseRecord | None: ...

    async def create(self, record: LeaseRecord) -> LeaseRecord | None:
        """The created record, or None when someone else created it first."""
        ...

    async def update(self, record: LeaseRecord) -> LeaseRecord | None:
        """Write guarded by record.resource_version; None when it changed meanwhile."""
        ...


class LeaderObserver(Protocol):
    def leading(self, name: str, leading: bool) -> None: ...


def micro_time(t: datetime) -> str:
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class KubeLease:
    """A LeaseLock on kube-apiserver's /apis/coordination.k8s.io/v1."""

    def __init__(self, api: Any, namespace: str, name: str, *, timeout: float = 5.0) -> None:
        self._api = api
        self.namespace, self.name = namespace, name
        self._timeout = timeout
        self._collection = f"/apis/coordination.k8s.io/v1/namespaces/{namespace}/leases"

    def _body(self, r: LeaseRecord) -> dict[str, Any]:
        spec: dict[str, Any] = {
            "holderIdentity": r.holder,
            "leaseDurationSeconds": r.lease_duration_seconds,
            "leaseTransitions": r.transitions,
        }
        if r.acquire_time:
            spec["acquireTime"] = r.acquire_time
        if r.renew_time:
            spec["renewTime"] = r.renew_time
        meta: dict[str, Any] = {"name": self.name, "namespace": self.namespace}
        if r.resource_version:
            meta["resourceVersion"] = r.resource_version
        return {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": meta, "spec": spec}

    @staticmethod
    def _record(obj: dict[str, Any]) -> LeaseRecord:
        spec = obj.get("spec") or {}
        return LeaseRecord(
            holder=str(spec.get("holderIdentity") or ""),
            lease_duration_seconds=int(spec.get("leaseDurationSeconds") or 0),
            acquire_time=str(spec.get("acquireTime") or ""),
            renew_time=str(spec.get("renewTime") or ""),
            transitions=int(spec.get("leaseTransitions") or 0),
            resource_version=str((obj.get("metadata") or {}).get("resourceVersion") or ""),
        )

    async def _call(self, method: str, path: str, body: Any = None) -> tuple[int, dict[str, Any]]:
        try:
            ans = await kube_request(self._api, method, path, body, timeout=self._timeout)
        except KubeUnavailable as exc:
            raise LeaseError(str(exc)) from exc
        return ans.status, ans.body

    async def get(self) -> LeaseRecord | None:
        code, body = await self._call("GET", f"{self._collection}/{self.name}")
        if code == 404:
            return None
        if code != 200:
            raise LeaseError(f"GET lease {self.namespace}/{self.name}: {code} {body.get('message', '')}")
        return self._record(body)

    async def create(self, record: LeaseRecord) -> LeaseRecord | None:
        code, body = await self._call(
            "POST", self._collection, self._body(replace(record, resource_version=""))
        )
        if code == 409:
            return None
        if code not in (200, 201):
            raise LeaseError(f"create lease {self.namespace}/{self.name}: {code} {body.get('message', '')}")
        return self._record(body)

    async def update(self, record: LeaseRecord) -> LeaseRecord | None:
        code, body = await self._call("PUT", f"{self._collection}/{self.name}", self._body(record))
        if code in (404, 409):
            return None
        if code != 200:
            raise LeaseError(f"update lease {self.namespace}/{self.name}: {code} {body.get('message', '')}")
        return self._record(body)


Lead = Callable[[], Coroutine[Any, Any, None]]


class LeaderElector:
    def __init__(
        self,
        lock: LeaseLock,
        config: LeaderElectionConfig,
        *,
        monotonic: Callable[[], float] = time.monotonic,
        wall: Callable[[], datetime] = lambda: datetime.now(UTC),
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        rng: Callable[[], float] = random.random,
        observer: LeaderObserver | None = None,
    ) -> None:
        errs = config.validate()
        if errs:
            raise ValueError("; ".join(errs))
        self._lock = lock
        self.config = config
        self._now = monotonic
        self._wall = wall
        self._sleep = sleep
        self._rng = rng
        self._observer = observer
        self._observed: LeaseRecord | None = None
        self._observed_at = 0.0
        self.is_leader = False
        self.terms = 0  # times this elector became leader (tests, logs)

    @property
    def observed_holder(self) -> str:
        return self._observed.holder if self._observed is not None else ""

    async def run(self, lead: Lead) -> None:
        """Acquire, run `lead` while leading, step down when renewals fail; repeat until cancelled."""
        c = self.config
        while True:
            await self._acquire()
            self._set_leading(True)
            log.info("leader election %s/%s: %s is now the leader", c.namespace, c.name, c.identity)
            lost = await self._lead(lead)
            self._set_leading(False)
            if lost:
                log.warning("leader election %s/%s: %s lost the lease", c.namespace, c.name, c.identity)
            await self._sleep(c.retry_period)

    async def _lead(self, lead: Lead) -> bool:
        """Lead until the lease is lost (True) or `lead` ends (False: released for another replica)."""
        c = self.config
        leading = asyncio.create_task(lead(), name=f"leading:{c.name}")
        renewing = asyncio.create_task(self._renew_until_lost(), name=f"lease-renew:{c.name}")
        try:
            done, _ = await asyncio.wait({leading, renewing}, return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            await _cancel(leading, renewing)
            if c.release_on_cancel:
                await self._release()
            raise
        await _cancel(leading, renewing)
        if leading in done:
            exc = None if leading.cancelled() else leading.exception()
            log.error("leader election %s: the leading work ended (%s); releasing the lease", c.name, exc)
            await self._release()
            return False
        return True

    async def _acquire(self) -> None:
        c = self.config
        while True:
            if await self._try():
                return
            await self._sleep(c.retry_period * (1 + 0.2 * self._rng()))  # jitter: replicas spread out

    async def _renew_until_lost(self) -> None:
        c = self.config
        last = self._now()
        while True:
            await self._sleep(c.retry_period)
            if await self._try():
                last = self._now()
                continue
            held_by_other = self.observed_holder not in ("", c.identity)
            if held_by_other or self._now() - last >= c.renew_deadline:
                return

    async def _try(self) -> bool:
        """One acquire-or-renew round; False when another holds a valid lease or the write lost a race."""
        c = self.config
        try:
            async with asyncio.timeout(c.request_timeout):
                return await self._try_once()
        except (LeaseError, TimeoutError) as exc:
            log.warning("leader election %s/%s: %s", c.namespace, c.name, exc or "timed out")
            return False

    async def _try_once(self) -> bool:
        c = self.config
        now = micro_time(self._wall())
        duration = max(1, round(c.lease_duration))
        current = await self._lock.get()
        if current is None:
            created = await self._lock.create(LeaseRecord(c.identity, duration, now, now, 0))
            if created is not None:
                self._observe(created)
            return created is not None
        if self._observed is None or current != self._observed:
            self._observe(current)
        mine = current.holder == c.identity
        if current.holder and not mine and self._observed_at + current.lease_duration_seconds > self._now():
            return False
        new = LeaseRecord(
            holder=c.identity,
            lease_duration_seconds=duration,
            acquire_time=current.acquire_time if mine else now,
            renew_time=now,
            transitions=current.transitions if mine else current.transitions + 1,
            resource_version=current.resource_version,
        )
        written = await self._lock.update(new)
        if written is not None:
            self._observe(written)
        return written is not None

    def _observe(self, record: LeaseRecord) -> None:
        self._observed = record
        self._observed_at = self._now()

    async def _release(self) -> None:
        c = self.config
        if self._observed is None or self._observed.holder != c.identity:
            return
        record = replace(
            self._observed, holder="", lease_duration_seconds=1, renew_time=micro_time(self._wall())
        )
        try:
            async with asyncio.timeout(c.request_timeout):
                if await self._lock.update(record) is not None:
                    log.info("leader election %s/%s: released by %s", c.namespace, c.name, c.identity)
        except (LeaseError, TimeoutError) as exc:
            log.warning("leader election %s/%s: release failed: %s", c.namespace, c.name, exc or "timeout")
        self._observed = None

    def _set_leading(self, leading: bool) -> None:
        self.is_leader = leading
        if leading:
            self.terms += 1
        if self._observer is not None:
            self._observer.leading(self.config.name, leading)


async def _cancel(*tasks: asyncio.Task[None]) -> None:
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
