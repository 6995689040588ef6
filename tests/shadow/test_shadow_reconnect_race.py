"""Reconnect ordering (docs/shadow.md, "Reconnect"): once the relist has closed the watches held open
offline, the shadow is online for new requests while it pushes the writes accepted offline, so a client
that re-watches during the push (kubelets always have a pending status; reflectors re-watch at once) is
served upstream instead of being held open offline with nothing to close it. The push is made slow by a
gate on the upstream status PATCH (what the reviewer did with a fake upstream taking 1 s)."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

import aiohttp
import pytest
from shadowkit import NODE, Kube, Relay, eventually, pod, running, wait_mode

from edge.shadow.config import ShadowConfig
from edge.shadow.local import OfflineWatch
from edge.shadow.reconcile import USER_AGENT as RECONNECT_UA
from edge.shadow.requestinfo import parse
from edge.shadow.selectors import Selection

SMP = "application/strategic-merge-patch+json"


async def test_a_watch_opened_while_offline_writes_are_pushed_is_served_upstream(
    cfg: ShadowConfig,
    relay: Relay,
    admin: Kube,
    http: aiohttp.ClientSession,
    ns: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    pods = f"/api/v1/namespaces/{ns}/pods"
    node_status = f"/api/v1/nodes/{NODE}/status"
    assert (await admin.req("POST", pods, pod("before", ns, {"app": "a"})))[0] == 201
    async with running(cfg) as shadow:
        await wait_mode(shadow, online=True)
        kubelet = Kube(f"http://127.0.0.1:{shadow.ports['http']}", http)
        code, listed = await kubelet.get(pods)
        assert code == 200
        assert (await kubelet.get(f"/api/v1/nodes/{NODE}"))[0] == 200

        await relay.cut()
        await wait_mode(shadow, online=False)
        beat = {"type": "Ready", "status": "True", "lastHeartbeatTime": "2032-01-01T00:00:00Z"}
        code, _ = await kubelet.req("PATCH", node_status, {"status": {"conditions": [beat]}}, ctype=SMP)
        assert code == 200 and shadow.pending.node_status is not None

        pushing, release = asyncio.Event(), asyncio.Event()
        upstream_request = shadow.upstream.request

        async def slow_push(
            method: str, path_qs: str, headers: Mapping[str, str], body: bytes | None, **kw: Any
        ) -> aiohttp.ClientResponse:
            if method == "PATCH" and path_qs == node_status and headers.get("User-Agent") == RECONNECT_UA:
                pushing.set()
                await release.wait()
            return await upstream_request(method, path_qs, headers, body, **kw)

        monkeypatch.setattr(shadow.upstream, "request", slow_push)
        await relay.restore()

        async def in_push() -> bool | None:
            return True if pushing.is_set() else None

        await eventually("the reconnect pushing the offline node status", in_push)
        # A reflector re-watches now, from the resourceVersion of its (offline) list.
        rv = listed["metadata"]["resourceVersion"]
        events: list[str] = []

        async def watch() -> None:
            async for ev in kubelet.watch(f"{pods}?watch=1&resourceVersion={rv}"):
                events.append(f"{ev['type']} {ev['object']['metadata']['name']}")

        watcher = asyncio.create_task(watch())
        try:
            assert (await admin.req("POST", pods, pod("during-push", ns, {"app": "a"})))[0] == 201

            async def seen() -> bool | None:
                return True if "ADDED during-push" in events else None

            await eventually("the new pod through the watch opened during the push", seen)
            assert not shadow.local.watches  # nothing held open offline
            assert pushing.is_set() and not release.is_set()  # all of it while the push was still out
        finally:
            release.set()
            watcher.cancel()
            await asyncio.gather(watcher, return_exceptions=True)

        async def pushed() -> bool | None:
            return True if shadow.pending.node_status is None else None

        await eventually("the offline node status pushed", pushed)
        _, node = await admin.get(f"/api/v1/nodes/{NODE}")
        assert "2032-01-01T00:00:00Z" in [c.get("lastHeartbeatTime") for c in node["status"]["conditions"]]


async def test_a_watch_that_registers_offline_after_the_switch_is_closed_at_once(
    cfg: ShadowConfig, relay: Relay, http: aiohttp.ClientSession, ns: str
) -> None:
    """The window inside one request: it chose the offline path, and registers its watch only after the
    shadow went online (it was preparing its response meanwhile)."""
    pods = f"/api/v1/namespaces/{ns}/pods"
    async with running(cfg) as shadow:
        await wait_mode(shadow, online=True)
        kubelet = Kube(f"http://127.0.0.1:{shadow.ports['http']}", http)
        assert (await kubelet.get(pods))[0] == 200
        info = parse("GET", pods, {"watch": "1"}, "kubelet/1")
        view = shadow.cache.covering_view(info)
        assert view is not None
        late = OfflineWatch(info, Selection.parse(ns, "", ""), view, bookmarks=False)
        shadow.local.register(late)
        assert late.queue.get_nowait() is None  # closed: the client re-watches, upstream this time
