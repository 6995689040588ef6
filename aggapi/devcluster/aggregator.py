"""The aggregator: follows APIServices in the devcluster's own store, keeps their Available condition
current, merges their discovery, and proxies their group-versions. It is the routes' Delegate for
every group-version an APIService with a `service` registers."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from aggapi.devcluster import aggdiscovery, proxy
from aggapi.devcluster.backends import (
    AGGREGATOR,
    APIServiceSpec,
    Availability,
    Backend,
    FrontProxyCredentials,
    Unresolved,
    check_available,
    resolve,
)
from aggapi.devcluster.stores import Stores
from aggapi.http.middleware import USER_KEY
from aggapi.http.requestinfo import RequestInfo
from aggapi.machinery import apierrors
from aggapi.machinery.timefmt import format_rfc3339
from aggapi.registry.resource import Obj
from aggapi.storage.interface import ListOptions, WatchOptions

log = logging.getLogger(__name__)

GROUP, RESOURCE = "apiregistration.k8s.io", "apiservices"


def available_condition(obj: Obj) -> dict[str, Any] | None:
    for c in (obj.get("status") or {}).get("conditions") or []:
        if c.get("type") == "Available":
            return dict(c)
    return None


class Aggregator:
    def __init__(
        self,
        stores: Stores,
        creds: FrontProxyCredentials,
        *,
        check_interval: float = 5.0,
        retry: float = 1.0,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._stores = stores
        self._creds = creds
        self._interval = check_interval
        self._retry = retry
        self._clock = clock
        self.objects: dict[str, Obj] = {}
        self.backends: dict[str, Backend] = {}  # APIServices with a service, by name
        self._wake = asyncio.Event()
        self._synced = asyncio.Event()

    # ---- the routes' Delegate --------------------------------------------------------------------

    def _backend(self, group: str, version: str) -> Backend | None:
        for b in self.backends.values():
            if (b.spec.group, b.spec.version) == (group, version):
                return b
        return None

    def serves(self, group: str, version: str) -> bool:
        return self._backend(group, version) is not None

    def available(self, b: Backend) -> bool:
        cond = available_condition(self.objects.get(b.spec.name) or {})
        return cond is not None and cond.get("status") == "True"

    def discovery(self, aggregated_version: str) -> list[dict[str, Any]]:
        bs = list(self.backends.values())
        return aggdiscovery.group_discovery(bs) if aggregated_version else aggdiscovery.api_groups(bs)

    def openapi_v3_paths(self) -> dict[str, Any]:
        return {
            f"apis/{b.spec.group}/{b.spec.version}": {"serverRelativeURL": b.openapi_url}
            for b in self.backends.values()
            if b.openapi_url and self.available(b)
        }

    async def handle(self, request: web.Request, info: RequestInfo) -> web.StreamResponse:
        b = self._backend(info.group, info.version)
        if b is None:
            raise apierrors.StatusError(404, "NotFound", "the server could not find the requested resource")
        if not self.available(b):
            return proxy.unavailable("service unavailable")
        if b.ssl is None:
            return web.Response(status=500, text=b.ssl_error + "\n")
        assert b.spec.service is not None
        try:
            host, port = await resolve(self._stores, b.spec.service)
        except Unresolved as exc:
            log.info("resolving %s: %s", b.spec.name, exc.message)
            return proxy.unavailable("service unavailable")
        # OpenAPI is the aggregator's own download in kube, so the backend sees the aggregator.
        user = AGGREGATOR if request.path.startswith("/openapi/") else request[USER_KEY]
        return await proxy.forward(request, info, b, host, port, user)

    # ---- following APIServices -------------------------------------------------------------------

    async def _apply(self, event: str, obj: Obj) -> None:
        name = str(obj["metadata"]["name"])
        old = self.backends.get(name)
        if event == "DELETED":
            self.objects.pop(name, None)
            spec = None
        else:
            self.objects[name] = obj
            spec = APIServiceSpec.parse(obj)
            if spec.service is None:
                spec = None
        if old is not None and (spec is None or old.spec != spec):
            del self.backends[name]
            await old.close()
        if spec is not None and name not in self.backends:
            self.backends[name] = Backend(spec, self._creds)
            self._wake.set()  # new or changed: check it now, not at the next tick

    async def run_informer(self) -> None:
        store = self._stores(GROUP, RESOURCE)
        try:
            while True:
                try:
                    listed = await store.list("", ListOptions())
                    seen = {str(o["metadata"]["name"]) for o in listed.items}
                    for name in [n for n in self.objects if n not in seen]:
                        await self._apply("DELETED", self.objects[name])
                    for o in listed.items:
                        await self._apply("ADDED", o)
                    self._synced.set()
                    watch = await store.watch("", WatchOptions(resource_version=str(listed.resource_version)))
                    try:
                        async for ev in watch:
                            if ev.type == "ERROR":
                                break
                            if ev.type != "BOOKMARK":
                                await self._apply(ev.type, ev.object)
                    finally:
                        watch.stop()
                except apierrors.StatusError as exc:
                    log.warning("following APIServices: %s; relisting", exc)
                await asyncio.sleep(self._retry)
        finally:
            for b in list(self.backends.values()):
                await b.close()

    # ---- availability ----------------------------------------------------------------------------

    async def run_checks(self) -> None:
        await self._synced.wait()
        while True:
            self._wake.clear()
            await asyncio.gather(*(self._check(b) for b in list(self.backends.values())))
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._interval):
                    await self._wake.wait()

    async def _check(self, b: Backend) -> None:
        try:
            result = await check_available(b, self._stores)
            await self._set_condition(b.spec.name, result)
            if result.endpoint is not None:
                await aggdiscovery.refresh(b, *result.endpoint)
            else:
                b.stale = True
        except Exception:  # one broken APIService must not stop the checks of the others
            log.exception("checking APIService %s", b.spec.name)

    async def _set_condition(self, name: str, a: Availability) -> None:
        current = available_condition(self.objects.get(name) or {})
        if current is not None and (current.get("status"), current.get("reason"), current.get("message")) == (
            a.status,
            a.reason,
            a.message,
        ):
            return
        if current is None or current.get("status") != a.status:
            log.info("APIService %s: Available=%s (%s: %s)", name, a.status, a.reason, a.message)
        now = format_rfc3339(self._clock())

        async def desired(obj: Obj) -> Obj:
            status = obj.setdefault("status", {})
            conds = [c for c in status.get("conditions") or [] if c.get("type") != "Available"]
            prev = available_condition(obj) or {}
            # lastTransitionTime moves only when the status flips, as kube's SetAPIServiceCondition does.
            since = prev.get("lastTransitionTime", now) if prev.get("status") == a.status else now
            cond = {
                "type": "Available",
                "status": a.status,
                "lastTransitionTime": since,
                "reason": a.reason,
                "message": a.message,
            }
            status["conditions"] = [*conds, cond]
            return obj

        try:
            updated = await self._stores(GROUP, RESOURCE).update("", name, desired, subresource="status")
        except apierrors.StatusError as exc:
            if exc.code != 404:  # deleted meanwhile: nothing to mark
                raise
            return
        self.objects[name] = updated  # the informer will see the same soon; the proxy needs it now
