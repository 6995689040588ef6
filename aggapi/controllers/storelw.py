"""A ListWatcher over aggapi's own storage (a registry Store), so an Informer can follow aggapi's own
objects (NodePools) without going through HTTP: list, then watch from the list's revision; 410 Gone
becomes Expired (relist)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from aggapi.controllers.informer import Expired, ListWatchError, Obj
from aggapi.machinery import apierrors
from aggapi.registry.store import Store
from aggapi.storage.interface import ListOptions, WatchOptions


class StoreListWatcher:
    def __init__(self, store: Store, namespace: str = "") -> None:
        self._store = store
        self._ns = namespace

    async def list(self) -> tuple[list[Obj], str]:
        try:
            res = await self._store.list(self._ns, ListOptions())
        except apierrors.StatusError as exc:
            raise ListWatchError(f"list {self._store.rdef.resource}: {exc}") from exc
        return res.items, str(res.resource_version)

    @contextlib.asynccontextmanager
    async def watch(self, resource_version: str) -> AsyncIterator[AsyncIterator[Obj]]:
        try:
            w = await self._store.watch(
                self._ns, WatchOptions(resource_version=resource_version, allow_bookmarks=True)
            )
        except apierrors.StatusError as exc:
            if exc.code == 410:
                raise Expired(str(exc)) from exc
            raise ListWatchError(f"watch {self._store.rdef.resource}: {exc}") from exc

        async def events() -> AsyncIterator[Obj]:
            async for ev in w:
                yield {"type": ev.type, "object": ev.object}

        try:
            yield events()
        finally:
            w.stop()
