"""Workers that take keys from a WorkQueue and reconcile them, with bounded concurrency.

A reconcile that raises is retried with the key's exponential backoff; one that raises `Requeue` is
retried after the delay it names (or its backoff); one that returns clears the key's backoff. A key is
never reconciled by two workers at once (the queue guarantees it), and a key added while it is being
reconciled is reconciled again afterwards.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from aggapi.controllers.kubejson import MERGE_PATCH, KubeUnavailable, kube_request
from aggapi.controllers.workqueue import QueueShutDown, WorkQueue

log = logging.getLogger(__name__)

Reconcile = Callable[[str], Awaitable[None]]


class Requeue(Exception):
    """Reconcile again later: after `after` seconds, or with the key's backoff when None."""

    def __init__(self, reason: str, after: float | None = None) -> None:
        super().__init__(reason)
        self.after = after


class ReconcileObserver(Protocol):
    def reconciled(self, controller: str, result: str, seconds: float) -> None: ...


class Controller:
    def __init__(
        self,
        name: str,
        queue: WorkQueue,
        reconcile: Reconcile,
        *,
        workers: int = 4,
        observer: ReconcileObserver | None = None,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        if workers < 1:
            raise ValueError("workers must be at least 1")
        self.name = name
        self.queue = queue
        self._reconcile = reconcile
        self._workers = workers
        self._observer = observer
        self._clock = clock
        self.reconciles = 0
        self.errors = 0

    async def run(self) -> None:
        """Run the workers until cancelled or the queue is shut down."""
        async with asyncio.TaskGroup() as tg:
            for i in range(self._workers):
                tg.create_task(self._worker(), name=f"{self.name}-worker-{i}")

    async def _worker(self) -> None:
        while True:
            try:
                key = await self.queue.get()
            except QueueShutDown:
                return
            try:
                await self.process(key)
            finally:
                self.queue.done(key)

    async def process(self, key: str) -> None:
        started = self._clock()
        result = "success"
        try:
            await self._reconcile(key)
            self.queue.forget(key)
        except Requeue as r:
            result = "requeue"
            if r.after is None:
                delay = self.queue.add_rate_limited(key)
            else:
                delay = r.after
                self.queue.add_after(key, delay)
            log.debug("%s: %s requeued in %.3fs: %s", self.name, key, delay, r)
        except asyncio.CancelledError:
            result = "cancelled"
            raise
        except Exception:
            result = "error"
            self.errors += 1
            delay = self.queue.add_rate_limited(key)
            log.exception("%s: reconciling %s failed; retrying in %.3fs", self.name, key, delay)
        finally:
            self.reconciles += 1
            if self._observer is not None:
                self._observer.reconciled(self.name, result, self._clock() - started)


async def patch_or_requeue(api: Any, path: str, patch: Any, what: str, *, timeout: float) -> bool:
    """A resourceVersion-guarded merge patch from a reconcile: True when applied, False when the object
    is gone; kube-apiserver unreachable or the object changed since it was read → Requeue (the informer
    brings the new state)."""
    try:
        ans = await kube_request(api, "PATCH", path, patch, content_type=MERGE_PATCH, timeout=timeout)
    except KubeUnavailable as exc:
        raise Requeue(str(exc)) from exc
    if ans.status == 409:
        raise Requeue(f"{what} changed since it was read")
    if ans.status == 404:
        return False
    if not ans.ok:
        raise RuntimeError(f"patching {what}: {ans.status} {ans.message}")
    return True


def same_status(a: dict[str, Any] | None, b: dict[str, Any]) -> bool:
    """Equal statuses once conditions' lastTransitionTime is set aside: a controller that recomputed a
    status writes it only when something besides those times changed."""

    def strip(s: dict[str, Any] | None) -> dict[str, Any]:
        s = dict(s or {})
        s["conditions"] = [
            {k: v for k, v in c.items() if k != "lastTransitionTime"}
            for c in s.get("conditions") or []
            if isinstance(c, dict)
        ]
        return s

    return strip(a) == strip(b)
