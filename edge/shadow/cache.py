"""What the shadow records, under which keys, and how a list is answered from it.

Objects: one file per object and component, `{component}/{resource}/{namespace|_cluster}/{name}.json`,
where `resource` carries the group for non-core groups (`deployments.apps`), so `events` and
`events.events.k8s.io` never share a directory. Each component has its own copy: what kube-proxy saw
never changes what the kubelet is answered.

List views: a list (all its pages) or a watch answers one *selection* — (namespace, labelSelector,
fieldSelector). Each selection a component used gets a view `{component}/{resource}/_views/{id}` naming
the object files that list returned: a snapshot `{id}.json` (rewritten atomically on every full list)
and a membership log `{id}.log` (`<generation> +key` / `<generation> -key`, appended on watch events;
only lines of the snapshot's generation count). Two selections never overwrite each other's view, and
an object a selected watch reports DELETED (perhaps only because it stopped matching) leaves that view
only — its file goes when no view of the component references it any more.

Offline a list is answered only from a *complete* view: the exact selection, or a view of the same
component and resource without selectors whose namespace covers the request, re-filtered. Anything else
is 404 rather than a silently incomplete list."""

from __future__ import annotations

import base64
import hashlib
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from edge.shadow.disk import DiskStore, Loaded
from edge.shadow.requestinfo import ANONYMOUS_SCOPE, RequestInfo
from edge.shadow.selectors import Selection, canonical

log = logging.getLogger(__name__)

Obj = dict[str, Any]
Op = tuple[str, str, Any]  # ("put"|"delete"|"append", rel, payload)
CLUSTER = "_cluster"
MAX_PENDING_LISTS = 64


def obj_key(component: str, resource: str, namespace: str | None, name: str) -> str:
    return f"{component}/{resource}/{namespace or CLUSTER}/{name}.json"


def nonresource_key(component: str, path_qs: str, accept: str) -> str:
    digest = hashlib.sha256(f"{path_qs}\0{accept}".encode()).hexdigest()[:16]
    return f"{component}/_nonresource/{digest}.json"


def rv_int(obj: Obj | None) -> int:
    try:
        return int(((obj or {}).get("metadata") or {}).get("resourceVersion") or 0)
    except ValueError:
        return 0


@dataclass(slots=True)
class View:
    component: str
    resource: str
    namespace: str | None
    label_selector: str
    field_selector: str
    kind: str = ""  # e.g. PodList
    api_version: str = ""
    resource_version: str = ""
    members: set[str] = field(default_factory=set)
    generation: int = 0
    log_lines: int = 0

    @property
    def base(self) -> str:
        raw = f"{self.namespace or ''}\0{self.label_selector}\0{self.field_selector}".encode()
        return f"{self.component}/{self.resource}/_views/{hashlib.sha256(raw).hexdigest()[:16]}"

    @property
    def unselected(self) -> bool:
        return not self.label_selector and not self.field_selector

    def snapshot(self) -> Obj:
        return {
            "component": self.component,
            "resource": self.resource,
            "namespace": self.namespace,
            "labelSelector": self.label_selector,
            "fieldSelector": self.field_selector,
            "kind": self.kind,
            "apiVersion": self.api_version,
            "resourceVersion": self.resource_version,
            "generation": self.generation,
            "items": sorted(self.members),
        }


@dataclass(slots=True)
class Diff:
    added: list[Obj] = field(default_factory=list)
    modified: list[Obj] = field(default_factory=list)
    removed: list[Obj] = field(default_factory=list)


def view_of(info: RequestInfo) -> View:
    lab, fld = canonical(info.label_selector, info.field_selector)
    return View(info.component, info.group_resource, info.namespace, lab, fld)


class Cache:
    def __init__(self, store: DiskStore, components: Iterable[str]) -> None:
        self.store = store
        self.components = frozenset(components)
        self.objects: dict[str, Obj] = {}
        self.views: dict[str, View] = {}
        self.nonresource: dict[str, Obj] = {}
        self.pending_raw: dict[str, Obj] = {}  # _pending/*.json: writes accepted offline (reconcile.py)
        self._pending: dict[str, View] = {}  # continue token → the view its pages are filling
        self.loaded = False

    def caches(self, component: str) -> bool:
        """`coredns` (node credentials) and `coredns@token` (a pod's token) are cached when coredns is
        listed; `...@anonymous` (no credentials on the HTTPS port) never is."""
        name, _, scope = component.partition("@")
        if scope and "@" + scope == ANONYMOUS_SCOPE:
            return False
        return "*" in self.components or name in self.components

    # ---- start -----------------------------------------------------------------------------------

    async def load(self) -> Loaded:
        loaded = await self.store.load()
        bad: list[str] = []
        for rel, value in loaded.objects.items():
            parts = rel.split("/")
            if len(parts) == 2 and parts[0] == "_pending":
                self.pending_raw[rel] = value
            elif len(parts) == 3 and parts[1] == "_nonresource":
                self.nonresource[rel] = value
            elif len(parts) == 4 and parts[2] == "_views":
                view = self._view_from(value)
                if view is None or view.base + ".json" != rel:
                    bad.append(rel)
                    continue
                for line in loaded.logs.get(view.base + ".log", []):
                    gen, _, rest = line.partition(" ")
                    if gen == str(view.generation) and rest[:1] in "+-" and rest[1:]:
                        (view.members.add if rest[0] == "+" else view.members.discard)(rest[1:])
                        view.log_lines += 1
                self.views[view.base] = view
            elif len(parts) == 4 and isinstance((value.get("metadata") or {}).get("name"), str):
                self.objects[rel] = value
            else:
                bad.append(rel)
        for rel in bad:
            await self.store.quarantine(rel, "not a cache entry this shadow wrote")
            loaded.quarantined += 1
        for view in self.views.values():
            view.members &= self.objects.keys()  # a file removed before its "-" line was logged
        self.loaded = True
        return loaded

    @staticmethod
    def _view_from(value: Obj) -> View | None:
        try:
            items = value["items"]
            view = View(
                str(value["component"]),
                str(value["resource"]),
                value.get("namespace"),
                str(value.get("labelSelector", "")),
                str(value.get("fieldSelector", "")),
                str(value.get("kind", "")),
                str(value.get("apiVersion", "")),
                str(value.get("resourceVersion", "")),
                {str(i) for i in items},
                int(value.get("generation", 0)),
            )
        except (KeyError, TypeError, ValueError):
            return None
        return view

    # ---- recording online answers -------------------------------------------------------------------

    def _put(self, info: RequestInfo, obj: Obj, ops: list[Op]) -> str | None:
        meta = obj.get("metadata") or {}
        name = meta.get("name")
        if not isinstance(name, str) or not name:
            return None
        rel = obj_key(info.component, info.group_resource, meta.get("namespace"), name)
        self._store_object(rel, obj, ops)
        return rel

    def _store_object(self, rel: str, obj: Obj, ops: list[Op]) -> None:
        """Keep `obj` under `rel`; its file is rewritten only if the cached copy differs (an unchanged
        object, same resourceVersion and content, as a relist returns it, costs no write)."""
        if self.objects.get(rel) == obj:
            return
        self.objects[rel] = obj
        ops.append(("put", rel, obj))

    def _drop(self, rel: str, ops: list[Op], keep_for: set[str]) -> None:
        """Remove the object file unless a view other than `keep_for` still names it."""
        comp, res = rel.split("/")[:2]
        for view in self.views.values():
            if (
                view.base not in keep_for
                and view.component == comp
                and view.resource == res
                and rel in view.members
            ):
                return
        if self.objects.pop(rel, None) is not None:
            ops.append(("delete", rel, None))

    async def record_get(self, info: RequestInfo, obj: Obj) -> None:
        """Recorded in memory at once; written in the background (docs/shadow.md, durability): on disk
        before the next answer for the same object, and before any later watch event is forwarded."""
        key = obj_key(info.component, info.group_resource, info.namespace, info.name or "")
        await self.store.ready(key)
        ops: list[Op] = []
        self._put(info, obj, ops)
        self.store.submit(ops, key)

    async def record_not_found(self, info: RequestInfo) -> None:
        rel = obj_key(info.component, info.group_resource, info.namespace, info.name or "")
        ops: list[Op] = []
        for view in self.views.values():
            if rel in view.members:
                view.members.discard(rel)
                self._log(view, f"-{rel}", ops)
        if self.objects.pop(rel, None) is not None:
            ops.append(("delete", rel, None))
        await self.store.apply(ops)

    async def record_list(self, info: RequestInfo, body: Obj, continue_token: str) -> None:
        """One page of a list. The view is replaced when its last page arrives. Recorded in memory at
        once, written in the background like record_get: on disk before the next list of the same
        selection is answered (its later pages do not wait), and before any later watch event is forwarded."""
        key = view_of(info).base
        await self.store.ready("" if continue_token else key)
        kind, api_version = str(body.get("kind", "")), str(body.get("apiVersion", ""))
        item_kind = kind[:-4] if kind.endswith("List") else kind
        if continue_token:
            view = self._pending.pop(continue_token, None)
        else:
            view = view_of(info)
            view.kind, view.api_version = kind, api_version
        ops: list[Op] = []
        members: set[str] = set()
        for item in body.get("items") or []:
            if isinstance(item, dict):
                item.setdefault("kind", item_kind)
                item.setdefault("apiVersion", api_version)
                rel = self._put(info, item, ops)
                if rel is not None:
                    members.add(rel)
        meta = body.get("metadata") or {}
        nxt = str(meta.get("continue") or "")
        if view is not None:
            view.members |= members
            if nxt:
                while len(self._pending) >= MAX_PENDING_LISTS:
                    self._pending.pop(next(iter(self._pending)))
                self._pending[nxt] = view
            else:
                view.resource_version = str(meta.get("resourceVersion", ""))
                self._commit(view, ops)
        self.store.submit(ops, key)

    def _commit(self, new: View, ops: list[Op], diff: Diff | None = None) -> None:
        old = self.views.get(new.base)
        if old is not None and (old.members, old.resource_version, old.kind, old.api_version) == (
            new.members,
            new.resource_version,
            new.kind,
            new.api_version,
        ):
            return  # the same answer again: the view on disk (snapshot + log) already says so
        new.generation = (old.generation + 1) if old is not None else 1
        new.log_lines = 0
        self.views[new.base] = new
        ops.append(("put", new.base + ".json", new.snapshot()))
        ops.append(("delete", new.base + ".log", None))
        if old is not None:
            for rel in old.members - new.members:
                gone = self.objects.get(rel)
                self._drop(rel, ops, keep_for={new.base})
                if diff is not None and gone is not None:
                    diff.removed.append(gone)

    def _log(self, view: View, line: str, ops: list[Op]) -> None:
        view.log_lines += 1
        if view.log_lines > max(1000, 2 * len(view.members)):  # compact: a new snapshot generation
            view.generation += 1
            view.log_lines = 0
            ops.append(("put", view.base + ".json", view.snapshot()))
            ops.append(("delete", view.base + ".log", None))
        else:
            ops.append(("append", view.base + ".log", [f"{view.generation} {line}"]))

    async def record_event(self, info: RequestInfo, etype: str, obj: Obj, kind: str) -> None:
        """Apply one event of a watch from `info` to the cache (before it is forwarded)."""
        if etype not in ("ADDED", "MODIFIED", "DELETED"):
            return
        view = self.views.get(view_of(info).base)
        ops: list[Op] = []
        obj.setdefault("kind", kind)
        obj.setdefault("apiVersion", info.api_version)
        if etype == "DELETED":
            meta = obj.get("metadata") or {}
            rel = obj_key(info.component, info.group_resource, meta.get("namespace"), str(meta.get("name")))
            views = [view] if view is not None else []
            if view is None or view.unselected:  # gone for good: out of every view of the component
                views = [v for v in self.views.values() if rel in v.members]
            for v in views:
                if rel in v.members:
                    v.members.discard(rel)
                    self._log(v, f"-{rel}", ops)
            self._drop(rel, ops, keep_for=set())
        else:
            added = self._put(info, obj, ops)
            if added is not None and view is not None:
                if added not in view.members:
                    view.members.add(added)
                    self._log(view, f"+{added}", ops)
                if rv_int(obj) > int(view.resource_version or 0):
                    view.resource_version = str(rv_int(obj))
        await self.store.apply(ops)

    async def replace_view(self, view: View, body: Obj) -> Diff:
        """Reconnect: the view's selection listed afresh upstream replaces it; the changes come back."""
        diff = Diff()
        fresh = View(view.component, view.resource, view.namespace, view.label_selector, view.field_selector)
        fresh.kind = str(body.get("kind") or view.kind)
        fresh.api_version = str(body.get("apiVersion") or view.api_version)
        item_kind = fresh.kind[:-4] if fresh.kind.endswith("List") else fresh.kind
        fresh.resource_version = str((body.get("metadata") or {}).get("resourceVersion", ""))
        ops: list[Op] = []
        for item in body.get("items") or []:
            if not isinstance(item, dict):
                continue
            item.setdefault("kind", item_kind)
            item.setdefault("apiVersion", fresh.api_version)
            meta = item.get("metadata") or {}
            rel = obj_key(view.component, view.resource, meta.get("namespace"), str(meta.get("name")))
            before = self.objects.get(rel)
            if before is None or rel not in view.members:
                diff.added.append(item)
            elif rv_int(before) != rv_int(item):
                diff.modified.append(item)
            self._store_object(rel, item, ops)
            fresh.members.add(rel)
        self._commit(fresh, ops, diff)
        await self.store.apply(ops)
        return diff

    async def put_local(self, rel: str, obj: Obj) -> None:
        self.objects[rel] = obj
        await self.store.apply([("put", rel, obj)])

    async def record_nonresource(self, rel: str, path: str, ctype: str, body: bytes) -> None:
        """A discovery document; written in the background like record_get, and only when it changed."""
        entry = {"path": path, "contentType": ctype, "body": base64.b64encode(body).decode()}
        if self.nonresource.get(rel) == entry:
            return
        await self.store.ready(rel)
        self.nonresource[rel] = entry
        self.store.submit([("put", rel, entry)], rel)

    # ---- answering offline ------------------------------------------------------------------------

    def get(self, info: RequestInfo) -> Obj | None:
        return self.objects.get(obj_key(info.component, info.group_resource, info.namespace, info.name or ""))

    def covering_view(self, info: RequestInfo) -> View | None:
        exact = self.views.get(view_of(info).base)
        if exact is not None:
            return exact
        for view in self.views.values():
            if (
                view.component == info.component
                and view.resource == info.group_resource
                and view.unselected
                and (view.namespace is None or view.namespace == info.namespace)
            ):
                return view
        return None

    def select(self, view: View, selection: Selection) -> list[Obj]:
        out = [self.objects[rel] for rel in view.members if rel in self.objects]
        out = [o for o in out if selection.matches(o)]
        out.sort(key=lambda o: ((o.get("metadata") or {}).get("namespace", ""), o["metadata"]["name"]))
        return out

    def newest_rv(self, view: View, items: list[Obj]) -> str:
        newest = max([rv_int(o) for o in items] + [int(view.resource_version or 0)])
        return str(newest)
