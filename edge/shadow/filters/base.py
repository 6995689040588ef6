"""The contract between the shadow proxy and its object filters (re-exported by `edge.shadow.filters`).

A filter is a pure function of (request, object, what the shadow knows about the cluster): it never does
I/O, so it behaves the same online and offline. Filters never mutate the object they are given (it is
the cached copy); they return a new object, or the same one when nothing changes.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

Obj = dict[str, Any]

READ_VERBS = frozenset({"get", "list", "watch"})
ANY_COMPONENT = "*"  # as in YurtHub's component lists: every client


@dataclass(frozen=True, slots=True)
class FilterRequest:
    component: str  # from the User-Agent, e.g. "kube-proxy", "coredns", "kubelet"
    verb: str  # "get" | "list" | "watch"
    group: str
    version: str
    resource: str
    namespace: str | None
    name: str | None


class ObjectFilter(Protocol):
    name: str

    def wants(self, req: FilterRequest) -> bool: ...

    def apply(self, req: FilterRequest, obj: dict[str, Any]) -> dict[str, Any] | None: ...


def selected(filters: Iterable[ObjectFilter], req: FilterRequest) -> list[ObjectFilter]:
    """The filters that want `req`; computed once per request, then used for every object/event."""
    return [f for f in filters if f.wants(req)]


def apply_all(filters: Sequence[ObjectFilter], req: FilterRequest, obj: Obj) -> Obj | None:
    """Run `filters` in order over one object; None as soon as one drops it."""
    out: Obj | None = obj
    for f in filters:
        if out is None:
            break
        out = f.apply(req, out)
    return out


def component_matches(components: frozenset[str], component: str) -> bool:
    return ANY_COMPONENT in components or component in components


def meta(obj: Obj) -> dict[str, Any]:
    m = obj.get("metadata")
    return m if isinstance(m, dict) else {}


def labels_of(obj: Obj | None) -> dict[str, Any]:
    if obj is None:
        return {}
    v = meta(obj).get("labels")
    return v if isinstance(v, dict) else {}


def annotations_of(obj: Obj | None) -> dict[str, Any]:
    if obj is None:
        return {}
    v = meta(obj).get("annotations")
    return v if isinstance(v, dict) else {}


def is_status(obj: Obj) -> bool:
    """A watch ERROR event carries a Status, not the resource: filters pass it through."""
    return obj.get("kind") == "Status"


class LogOnce:
    """Warn about a condition once per distinct message: filters run on every object of every watch event,
    and a misconfigured node would otherwise flood the log. Bounded so odd input cannot grow it forever."""

    def __init__(self, logger: logging.Logger, limit: int = 1024) -> None:
        self._log = logger
        self._seen: set[str] = set()
        self._limit = limit

    def warning(self, msg: str) -> None:
        if msg in self._seen or len(self._seen) >= self._limit:
            return
        self._seen.add(msg)
        self._log.warning("%s", msg)
