"""The storage contract the registry uses (kube's storage.Interface, split into small Protocols)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from aggapi.machinery.fields import FieldSelector, parse_field_selector
from aggapi.machinery.labels import LabelSelector, parse_label_selector

Obj = dict[str, Any]
UpdateFunc = Callable[[Obj], Awaitable[Obj]]
EventType = Literal["ADDED", "MODIFIED", "DELETED", "BOOKMARK", "ERROR"]


def object_fields(obj: Obj, extra: tuple[str, ...] = ()) -> dict[str, str]:
    """Fields every kind can be selected by (kube's DefaultClusterScopedAttr/DefaultNamespaceScopedAttr),
    plus a kind's own selectable fields (dotted paths, e.g. a pod's spec.nodeName; absent reads as "")."""
    meta = obj.get("metadata") or {}
    fields = {"metadata.name": str(meta.get("name", ""))}
    if "namespace" in meta:
        fields["metadata.namespace"] = str(meta["namespace"])
    for path in extra:
        value: Any = obj
        for part in path.split("."):
            value = value.get(part) if isinstance(value, dict) else None
        if isinstance(value, bool):
            fields[path] = "true" if value else "false"  # Go's strconv.FormatBool
        elif value is not None and not isinstance(value, dict | list):
            fields[path] = str(value)
    return fields


@dataclass(frozen=True, slots=True)
class Predicate:
    label: LabelSelector = field(default_factory=lambda: parse_label_selector(""))
    field: FieldSelector = field(default_factory=lambda: parse_field_selector(""))
    selectable: tuple[str, ...] = ()  # the kind's own selectable fields the field selector may use

    @property
    def empty(self) -> bool:
        return self.label.empty() and self.field.empty()

    def matches(self, obj: Obj) -> bool:
        if self.empty:
            return True
        meta = obj.get("metadata") or {}
        if not self.label.matches(meta.get("labels") or {}):
            return False
        return self.field.matches(object_fields(obj, self.selectable))


EVERYTHING = Predicate()


@dataclass(frozen=True, slots=True)
class ListOptions:
    resource_version: str = ""
    resource_version_match: str = ""  # "", "NotOlderThan", "Exact"
    limit: int = 0
    continue_token: str = ""
    predicate: Predicate = EVERYTHING


@dataclass(frozen=True, slots=True)
class ListResult:
    items: list[Obj]
    resource_version: int
    continue_token: str = ""
    remaining: int | None = None


@dataclass(frozen=True, slots=True)
class WatchOptions:
    resource_version: str = ""
    predicate: Predicate = EVERYTHING
    allow_bookmarks: bool = False
    send_initial_events: bool | None = None


@dataclass(slots=True)
class WatchEvent:
    """One event as a watcher sees it. `encoded` memoizes serializations so the bytes are made once
    and shared by every watcher that receives the same event in the same format."""

    type: EventType
    object: Obj
    resource_version: int
    encoded: dict[Any, bytes] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Preconditions:
    uid: str | None = None
    resource_version: str | None = None


class Watch(Protocol):
    def __aiter__(self) -> AsyncIterator[WatchEvent]: ...

    def stop(self) -> None: ...


class Reader(Protocol):
    async def get(self, key: str, *, resource_version: str = "") -> Obj: ...

    async def get_list(self, prefix: str, opts: ListOptions) -> ListResult: ...


class Writer(Protocol):
    async def create(self, key: str, obj: Obj, *, dry_run: bool = False) -> Obj: ...

    async def guaranteed_update(
        self,
        key: str,
        update: UpdateFunc,
        *,
        preconditions: Preconditions | None = None,
        dry_run: bool = False,
    ) -> Obj: ...

    async def delete(
        self,
        key: str,
        *,
        preconditions: Preconditions | None = None,
        validate: Callable[[Obj], None] | None = None,
        dry_run: bool = False,
    ) -> Obj: ...


class Watcher(Protocol):
    async def watch(self, prefix: str, opts: WatchOptions) -> Watch: ...


class Storage(Reader, Writer, Watcher, Protocol):
    """What one resource's registry store is given: reads, writes and watches under a key prefix."""
