"""In-process access to the devcluster's own registry stores (what kube's controllers reach through
informers): the same Store the HTTP handlers use, so writes are validated and watched alike."""

from __future__ import annotations

from aiohttp import web

from aggapi.devcluster.kinds import find
from aggapi.registry.store import Store
from aggapi.server import RUNTIME


class Stores:
    """Bound to the app once it is built; usable once its storage has started (in background loops
    and request handlers, never before)."""

    def __init__(self) -> None:
        self.app: web.Application | None = None

    def __call__(self, group: str, resource: str) -> Store:
        if self.app is None:
            raise RuntimeError("stores used before the app was built")
        d = find(group, resource)
        handler = self.app[RUNTIME].handlers.get((d.group, d.version, d.resource))
        if handler is None:
            raise RuntimeError("stores used before storage started")
        return handler.store
