"""Reconnect: what the shadow does when the cloud comes back. Steps 1 and 2 run before it routes
requests upstream again; it goes online right after step 2 (no await in between), then runs step 3.

1. Every cached list view is listed afresh upstream with its own selection (node credentials) and
   replaces the cached one: objects deleted meanwhile disappear from disk.
2. Every watch held open offline gets the changes that relist found — ADDED/MODIFIED, then DELETED
   (at the new list's resourceVersion), then a BOOKMARK at it when the client allows bookmarks — and is
   closed, so the client re-watches upstream from a resourceVersion upstream knows.
3. Writes accepted offline are pushed: the node status as one strategic merge patch (all patches
   accepted offline merged, conditions by type), the Lease spec onto a fresh GET of the upstream Lease
   (renewals are last-write-wins by design). A 409 or other refusal drops the write with a log line.
   A write of the node's own status or Lease proxied upstream meanwhile supersedes it (proxy.py).

Writes accepted offline are kept in `{cache_dir}/_pending/` so a restart offline does not lose them."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import aiohttp
import orjson

from edge.aio import within
from edge.shadow.cache import Cache, Diff, View
from edge.shadow.disk import DiskStore
from edge.shadow.merge import strategic_merge
from edge.shadow.remote import Upstream, UpstreamUnavailable

if TYPE_CHECKING:
    from edge.shadow.local import Local
    from edge.shadow.metrics import ShadowMetrics

log = logging.getLogger(__name__)

Obj = dict[str, Any]
LEASE_NS = "kube-node-lease"
NODE_STATUS = "_pending/node-status.json"
LEASE = "_pending/lease.json"
USER_AGENT = "aggapi-edge-shadow/0.1.0"
SMP = "application/strategic-merge-patch+json"
JSON_HEADERS = {"Accept": "application/json", "User-Agent": USER_AGENT}


class PendingWrites:
    def __init__(self, store: DiskStore, raw: dict[str, Obj]) -> None:
        self.store = store
        self.node_status: Obj | None = None
        self.lease_spec: Obj | None = None
        self.restore(raw)

    def restore(self, raw: dict[str, Obj]) -> None:
        """What a previous run accepted offline and had not pushed yet."""
        self.node_status = (raw.get(NODE_STATUS) or {}).get("patch")
        self.lease_spec = (raw.get(LEASE) or {}).get("spec")

    async def add_node_status(self, patch: Obj) -> None:
        merged = strategic_merge(self.node_status or {}, patch)
        self.node_status = merged
        await self.store.apply([("put", NODE_STATUS, {"patch": merged})])

    async def set_lease_spec(self, spec: Obj) -> None:
        self.lease_spec = spec
        await self.store.apply([("put", LEASE, {"spec": spec})])

    def current(self, which: str) -> Obj | None:
        return self.node_status if which == NODE_STATUS else self.lease_spec

    async def clear(self, which: str, pushed: Obj | None = None) -> bool:
        """Forget the write (given `pushed`: only if it is still that one, not a newer one accepted
        offline meanwhile). True if it was forgotten."""
        if self.current(which) is None or (pushed is not None and self.current(which) is not pushed):
            return False
        if which == NODE_STATUS:
            self.node_status = None
        else:
            self.lease_spec = None
        await self.store.apply([("delete", which, None)])
        return True


def list_path(view: View) -> str:
    resource, _, group = view.resource.partition(".")
    version = view.api_version.rsplit("/", 1)[-1] or "v1"
    base = f"/apis/{group}/{version}" if group else f"/api/{version}"
    ns = f"/namespaces/{view.namespace}" if view.namespace else ""
    query = []
    if view.label_selector:
        query.append(("labelSelector", view.label_selector))
    if view.field_selector:
        query.append(("fieldSelector", view.field_selector))
    qs = "&".join(f"{k}={_quote(v)}" for k, v in query)
    return f"{base}{ns}/{resource}" + (f"?{qs}" if qs else "")


def _quote(v: str) -> str:
    return quote(v, safe="")


class Reconnector:
    def __init__(
        self,
        cache: Cache,
        upstream: Upstream,
        local: Local,
        pending: PendingWrites,
        node_name: str,
        metrics: ShadowMetrics,
        timeout: float,
    ) -> None:
        self.cache = cache
        self.upstream = upstream
        self.local = local
        self.pending = pending
        self.node_name = node_name
        self.metrics = metrics
        self.timeout = timeout

    async def run(self, go_online: Callable[[], None] = lambda: None) -> None:
        """Relist, send offline watches what changed and close them, then `go_online()` (at once: no
        await in between, so no watch can register offline after the close), then push the writes
        accepted offline while new requests already go upstream."""
        diffs: dict[str, Diff] = {}
        for view in list(self.cache.views.values()):
            try:
                code, body = await self._call("GET", list_path(view))
            except (UpstreamUnavailable, aiohttp.ClientError, TimeoutError, OSError) as e:
                log.warning("shadow: reconnect: relisting %s failed (%r); kept as cached", view.base, e)
                continue
            if code != 200 or not isinstance(body, dict):
                log.warning("shadow: reconnect: relisting %s answered %s; kept as cached", view.base, code)
                continue
            diff = await self.cache.replace_view(view, body)
            diffs[view.base] = diff
            if diff.removed or diff.added or diff.modified:
                log.info(
                    "shadow: reconnect: %s: %d added, %d modified, %d deleted while offline",
                    view.base,
                    len(diff.added),
                    len(diff.modified),
                    len(diff.removed),
                )
        for watch in list(self.local.watches):
            new_view = self.cache.views.get(watch.view.base, watch.view)
            found = diffs.get(watch.view.base)
            if found is not None:
                diff = found
                rv = new_view.resource_version
                for obj in sorted(diff.added + diff.modified, key=_rv):
                    if watch.selection.matches(obj):
                        watch.push("ADDED" if obj in diff.added else "MODIFIED", obj)
                for obj in diff.removed:
                    if watch.selection.matches(obj):
                        gone = {**obj, "metadata": {**(obj.get("metadata") or {}), "resourceVersion": rv}}
                        watch.push("DELETED", gone)
                if watch.bookmarks and rv:
                    kind = new_view.kind[:-4] if new_view.kind.endswith("List") else new_view.kind
                    bookmark = {
                        "kind": kind,
                        "apiVersion": new_view.api_version,
                        "metadata": {"resourceVersion": rv},
                    }
                    watch.push("BOOKMARK", bookmark)
            watch.close()
        go_online()
        await self._push_writes()

    async def _call(
        self, method: str, path: str, body: Obj | None = None, ctype: str = ""
    ) -> tuple[int, Any]:
        headers = dict(JSON_HEADERS)
        if body is not None:
            headers["Content-Type"] = ctype or "application/json"
        data = orjson.dumps(body) if body is not None else None
        resp = await self.upstream.request(method, path, headers, data)
        try:
            raw = await within(resp.read(), self.timeout)
        finally:
            resp.release()
        try:
            return resp.status, orjson.loads(raw) if raw else None
        except orjson.JSONDecodeError:
            return resp.status, raw.decode(errors="replace")

    async def _push_writes(self) -> None:
        """Runs while new requests already go upstream: a write of the node itself that reaches kube-
        apiserver meanwhile supersedes the pending one (Proxy drops it), which is then not pushed, or
        not cleared if a newer one was accepted offline (the cloud went away again) meanwhile."""
        me = self.node_name
        status = self.pending.node_status
        if status is not None:
            try:
                code, out = await self._call("PATCH", f"/api/v1/nodes/{me}/status", status, SMP)
            except (UpstreamUnavailable, aiohttp.ClientError, TimeoutError, OSError) as e:
                log.warning("shadow: reconnect: node status not pushed yet (%r); will retry", e)
                return
            if await self.pending.clear(NODE_STATUS, status):
                self._outcome("node status", code, out)
        spec = self.pending.lease_spec
        if spec is not None:
            path = f"/apis/coordination.k8s.io/v1/namespaces/{LEASE_NS}/leases/{me}"
            try:
                code, lease = await self._call("GET", path)
                if code == 200 and isinstance(lease, dict) and self.pending.lease_spec is spec:
                    lease["spec"] = {**(lease.get("spec") or {}), **spec}
                    code, lease = await self._call("PUT", path, lease)
            except (UpstreamUnavailable, aiohttp.ClientError, TimeoutError, OSError) as e:
                log.warning("shadow: reconnect: lease not pushed yet (%r); will retry", e)
                return
            if await self.pending.clear(LEASE, spec):
                self._outcome("lease", code, lease)

    def _outcome(self, what: str, code: int, out: Any) -> None:
        if 200 <= code < 300:
            log.info("shadow: reconnect: %s accepted offline pushed upstream", what)
            self.metrics.local_writes.labels("pushed").inc()
        else:
            msg = out.get("message") if isinstance(out, dict) else out
            log.warning(
                "shadow: reconnect: %s accepted offline dropped: upstream answered %s: %s", what, code, msg
            )
            self.metrics.local_writes.labels("dropped").inc()


def _rv(obj: Obj) -> int:
    try:
        return int((obj.get("metadata") or {}).get("resourceVersion") or 0)
    except ValueError:
        return 0
