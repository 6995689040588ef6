"""Answers while the cloud is unreachable, from the disk cache (see docs/shadow.md, "Offline").

- get: the component's cached object, else 404. list: from a complete view (cache.py), re-filtered by
  namespace, label and field selectors, else 404. watch: held open (BOOKMARKs every bookmark_interval
  when the client allows them) until the cloud is back: then the changes the reconnect relist found are
  sent (ADDED/MODIFIED/DELETED, then a BOOKMARK at the new list's resourceVersion) and the stream ends,
  so the client re-watches upstream from there.
- The node's own status (nodes/<me>/status PATCH/PUT) and Lease (kube-node-lease/<me> PUT/PATCH) are
  applied to the cached copy, answered 200 and queued for upstream (reconcile.py).
- Events are echoed 201 (not stored). Everything else that writes is 503 "cloud unreachable".
"""

from __future__ import annotations

import asyncio
import base64
import copy
import logging
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import orjson
from aiohttp import web

from edge.shadow.cache import Cache, View, nonresource_key, obj_key
from edge.shadow.filters import FilterRequest, ObjectFilter
from edge.shadow.merge import apply_patch
from edge.shadow.reconcile import LEASE, LEASE_NS, NODE_STATUS, PendingWrites
from edge.shadow.requestinfo import RequestInfo
from edge.shadow.selectors import Selection, SelectorError
from edge.shadow.status import accepts_json, json_response, not_found, offline_refused, status_response

log = logging.getLogger(__name__)

Obj = dict[str, Any]
DEFAULT_WATCH_TIMEOUT = 1800.0  # kube's --min-request-timeout: a watch without timeoutSeconds ends after this


def run_filters(filters: Sequence[ObjectFilter], req: FilterRequest, obj: Obj) -> Obj | None:
    out: Obj | None = obj
    for f in filters:
        if out is None:
            return None
        out = f.apply(req, out)
    return out


def filter_request(info: RequestInfo) -> FilterRequest:
    return FilterRequest(
        component=info.client,
        verb=info.verb,
        group=info.group,
        version=info.version,
        resource=info.resource,
        namespace=info.namespace,
        name=info.name,
    )


class OfflineWatch:
    def __init__(self, info: RequestInfo, selection: Selection, view: View, bookmarks: bool) -> None:
        self.info = info
        self.selection = selection
        self.view = view
        self.bookmarks = bookmarks
        self.queue: asyncio.Queue[tuple[str, Obj] | None] = asyncio.Queue()

    def push(self, etype: str, obj: Obj) -> None:
        self.queue.put_nowait((etype, obj))

    def close(self) -> None:
        self.queue.put_nowait(None)


class Local:
    def __init__(
        self,
        cache: Cache,
        pending: PendingWrites,
        node_name: str,
        filters: Sequence[ObjectFilter],
        bookmark_interval: float,
    ) -> None:
        self.cache = cache
        self.pending = pending
        self.node_name = node_name
        self.filters = tuple(filters)
        self.bookmark_interval = bookmark_interval
        self.watches: set[OfflineWatch] = set()
        # False while the shadow is online: a watch that decided to be served here but registers only
        # after the switch (it was still preparing its response) is closed at once, so no watch is
        # left held open offline while online (the client re-watches upstream).
        self.serving_watches = True

    def register(self, watch: OfflineWatch) -> None:
        """Hold `watch` open until the reconnect closes it (or at once, if the shadow is online)."""
        self.watches.add(watch)
        if not self.serving_watches:
            watch.close()

    def close_watches(self) -> None:
        for watch in list(self.watches):
            watch.close()

    async def handle(
        self, request: web.Request, info: RequestInfo, body: bytes
    ) -> tuple[web.StreamResponse, str]:
        """The answer, and where it came from ("cache" or "local")."""
        if not info.is_resource:
            return self._nonresource(request, info), "cache"
        if info.is_read and not info.subresource:
            if not accepts_json(request.headers.get("Accept", "")) and info.verb != "watch":
                return status_response(
                    406, "offline the shadow answers only application/json (see docs/shadow.md)", info=info
                ), "cache"
            try:
                selection = Selection.parse(info.namespace, info.label_selector, info.field_selector)
            except SelectorError as e:
                return status_response(400, str(e), info=info), "cache"
            if info.verb == "get":
                return self._get(info), "cache"
            if info.verb == "list":
                return self._list(info, selection), "cache"
            return await self._watch(request, info, selection), "cache"
        if body[:4] == b"k8s\x00" or "protobuf" in request.headers.get("Content-Type", ""):
            return offline_refused(
                info, "a protobuf request body cannot be applied locally; configure the client for JSON"
            ), "local"
        if self.own_write(info) is not None:
            return await self._local_write(request, info, body), "local"
        if info.verb == "create" and info.resource == "events" and not info.subresource:
            return self._echo_event(info, body), "local"
        if info.verb in ("delete", "deletecollection"):
            return offline_refused(info, "deletes are not accepted while offline"), "local"
        return offline_refused(
            info, f"{info.verb} of {info.group_resource} is not accepted while offline"
        ), "local"

    # ---- reads ------------------------------------------------------------------------------------

    def _nonresource(self, request: web.Request, info: RequestInfo) -> web.StreamResponse:
        key = nonresource_key(info.component, request.path_qs, request.headers.get("Accept", ""))
        entry = self.cache.nonresource.get(key)
        if entry is None or request.method != "GET":
            return status_response(404, f"{request.path} not cached (the cloud is unreachable)")
        return web.Response(
            body=base64.b64decode(entry["body"]), headers={"Content-Type": entry["contentType"]}
        )

    def _filtered(self, info: RequestInfo, obj: Obj) -> Obj | None:
        req = filter_request(info)
        chosen = [f for f in self.filters if f.wants(req)]
        return run_filters(chosen, req, obj) if chosen else obj

    def _get(self, info: RequestInfo) -> web.StreamResponse:
        obj = self.cache.get(info)
        out = self._filtered(info, obj) if obj is not None else None
        return json_response(out) if out is not None else not_found(info)

    def _list(self, info: RequestInfo, selection: Selection) -> web.StreamResponse:
        view = self.cache.covering_view(info)
        if view is None:
            return not_found(info)
        items = self.cache.select(view, selection)
        rv = self.cache.newest_rv(view, items)
        req = filter_request(info)
        chosen = [f for f in self.filters if f.wants(req)]
        if chosen:
            items = [o for o in (run_filters(chosen, req, i) for i in items) if o is not None]
        return json_response(
            {
                "kind": view.kind or "List",
                "apiVersion": view.api_version or info.api_version,
                "metadata": {"resourceVersion": rv},
                "items": items,
            }
        )

    async def _watch(
        self, request: web.Request, info: RequestInfo, selection: Selection
    ) -> web.StreamResponse:
        view = self.cache.covering_view(info)
        if view is None:
            return not_found(info)
        q = request.query
        bookmarks = q.get("allowWatchBookmarks", "").lower() in ("true", "1")
        try:
            limit = float(q.get("timeoutSeconds") or DEFAULT_WATCH_TIMEOUT)
        except ValueError:
            limit = DEFAULT_WATCH_TIMEOUT
        watch = OfflineWatch(info, selection, view, bookmarks)
        resp = web.StreamResponse(headers={"Content-Type": "application/json"})
        await resp.prepare(request)
        self.register(watch)
        item_kind = view.kind[:-4] if view.kind.endswith("List") else view.kind
        req = filter_request(info)
        chosen = [f for f in self.filters if f.wants(req)]
        try:
            async with asyncio.timeout(limit):
                while True:
                    try:
                        async with asyncio.timeout(self.bookmark_interval):
                            item = await watch.queue.get()
                    except TimeoutError:
                        if request.transport is None or request.transport.is_closing():
                            break
                        if bookmarks:
                            rv = self.cache.newest_rv(view, [])
                            await resp.write(_event("BOOKMARK", _bookmark(item_kind, view, rv)))
                        continue
                    if item is None:
                        break
                    etype, obj = item
                    out = run_filters(chosen, req, obj) if chosen else obj
                    if out is not None:
                        await resp.write(_event(etype, out))
        except TimeoutError:
            pass
        except (ConnectionError, RuntimeError) as e:
            log.debug("shadow: offline watch client went away: %r", e)
        finally:
            self.watches.discard(watch)
        return resp

    # ---- writes accepted offline ------------------------------------------------------------------

    def own_write(self, info: RequestInfo) -> str | None:
        """Which pending write (NODE_STATUS, LEASE) `info` is: an update or patch of this node's status
        or Lease with the node's own credentials (never a token's: that would be pushed as the node)."""
        if info.verb not in ("patch", "update") or info.component != info.client or not self._is_own(info):
            return None
        return NODE_STATUS if info.resource == "nodes" else LEASE

    def _is_own(self, info: RequestInfo) -> bool:
        if info.group == "" and info.resource == "nodes" and info.name == self.node_name:
            return info.subresource in ("status", "")
        return (
            info.group == "coordination.k8s.io"
            and info.resource == "leases"
            and info.namespace == LEASE_NS
            and info.name == self.node_name
            and not info.subresource
        )

    async def _local_write(self, request: web.Request, info: RequestInfo, body: bytes) -> web.StreamResponse:
        rel = obj_key(info.component, info.group_resource, info.namespace, info.name or "")
        current = self.cache.objects.get(rel)
        if current is None:
            return offline_refused(
                info, f"{info.group_resource} {info.name} was never cached, cannot update it"
            )
        try:
            patch = orjson.loads(body)
        except orjson.JSONDecodeError:
            return status_response(400, "request body is not JSON", info=info)
        if not isinstance(patch, dict):
            return status_response(400, "request body is not a JSON object", info=info)
        is_node = info.resource == "nodes"
        if info.verb == "patch":
            new = apply_patch(current, request.headers.get("Content-Type", ""), patch)
            if new is None:
                return offline_refused(info, "only strategic-merge and merge patches are applied offline")
            if is_node:  # a node patch offline may change status only (what the kubelet heartbeats)
                new = {**current, "status": new.get("status", current.get("status"))}
                status_patch = {"status": patch.get("status") or {}}
        elif is_node:
            new = {**current, "status": patch.get("status", current.get("status"))}
            status_patch = {"status": new.get("status") or {}}
        else:
            new = {**patch, "metadata": {**(patch.get("metadata") or {}), **_identity(current)}}
        new = copy.deepcopy(new)
        await self.cache.put_local(rel, new)
        if is_node:
            await self.pending.add_node_status(status_patch)
        else:
            await self.pending.set_lease_spec(new.get("spec") or {})
        return json_response(new)

    def _echo_event(self, info: RequestInfo, body: bytes) -> web.StreamResponse:
        try:
            event = orjson.loads(body)
        except orjson.JSONDecodeError:
            return status_response(400, "request body is not JSON", info=info)
        if not isinstance(event, dict):
            return status_response(400, "request body is not a JSON object", info=info)
        meta = dict(event.get("metadata") or {})
        if not meta.get("name"):
            meta["name"] = str(meta.get("generateName", "event.")) + uuid.uuid4().hex[:10]
        meta.setdefault("namespace", info.namespace)
        meta.setdefault("uid", str(uuid.uuid4()))
        meta.setdefault("creationTimestamp", datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"))
        return json_response({**event, "metadata": meta}, status=201)


def _identity(obj: Obj) -> Obj:
    meta = obj.get("metadata") or {}
    return {
        k: meta[k] for k in ("name", "namespace", "uid", "resourceVersion", "creationTimestamp") if k in meta
    }


def _bookmark(kind: str, view: View, rv: str) -> Obj:
    return {"kind": kind, "apiVersion": view.api_version, "metadata": {"resourceVersion": rv}}


def _event(etype: str, obj: Obj) -> bytes:
    return orjson.dumps({"type": etype, "object": obj}) + b"\n"
