"""The informer: against the real devcluster (list, watch, handlers, indexers), and with a scripted
transport for what a live server rarely does on cue (410 Gone, errors, watches that end)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

from edgekit import eventually, unique
from support.devcluster import Devcluster

from aggapi.auth.kube import api_client
from aggapi.controllers.informer import EventHandler, Expired, Informer, InformerConfig, ListWatchError, Obj
from aggapi.controllers.nodes import NodeDirectory, node_informer
from edge.kubelet_sim import NodeIdentity, node_object


def node(name: str, rv: str, **labels: str) -> Obj:
    return {"metadata": {"name": name, "resourceVersion": rv, "labels": labels}}


class Recorder:
    def __init__(self) -> None:
        self.events: list[tuple[str, str]] = []

    def handler(self) -> EventHandler:
        return EventHandler(
            on_add=lambda o: self.events.append(("add", o["metadata"]["name"])),
            on_update=lambda old, new: self.events.append(("update", new["metadata"]["name"])),
            on_delete=lambda o: self.events.append(("delete", o["metadata"]["name"])),
        )


class Scripted:
    """A ListWatcher answering from queues the test fills."""

    def __init__(self) -> None:
        self.lists: asyncio.Queue[tuple[list[Obj], str] | Exception] = asyncio.Queue()
        self.watches: asyncio.Queue[list[Obj | Exception]] = asyncio.Queue()
        self.watched_from: list[str] = []

    async def list(self) -> tuple[list[Obj], str]:
        item = await self.lists.get()
        if isinstance(item, Exception):
            raise item
        return item

    @contextlib.asynccontextmanager
    async def watch(self, resource_version: str) -> AsyncIterator[AsyncIterator[Obj]]:
        self.watched_from.append(resource_version)
        script = await self.watches.get()

        async def events() -> AsyncIterator[Obj]:
            for ev in script:
                if isinstance(ev, Exception):
                    raise ev
                yield ev

        yield events()


async def test_relist_on_gone_diffs_the_cache_and_resumes_watches() -> None:
    lw, rec = Scripted(), Recorder()
    sleeps: list[float] = []

    async def sleep(s: float) -> None:
        sleeps.append(s)
        await asyncio.sleep(0)

    inf = Informer(
        lw,
        InformerConfig("t", short_watch=0),
        sleep=sleep,
        rng=lambda: 1.0,
        indexers={"pool": lambda o: [o["metadata"]["labels"].get("pool", "")]},
    )
    inf.add_handler(rec.handler())
    inf.add_handler(EventHandler(on_add=lambda o: 1 / 0))  # a broken handler hurts nobody else
    lw.lists.put_nowait(([node("a", "1", pool="x"), node("b", "2")], "10"))
    lw.watches.put_nowait(
        [
            {"type": "ADDED", "object": node("c", "11", pool="x")},
            {"type": "MODIFIED", "object": node("a", "12", pool="y")},
            {"type": "BOOKMARK", "object": {"metadata": {"resourceVersion": "15"}}},
        ]
    )  # then the watch ends normally: resumed from 15
    lw.watches.put_nowait([{"type": "ERROR", "object": {"code": 410, "message": "too old"}}])
    lw.lists.put_nowait(([node("a", "12", pool="y"), node("c", "20", pool="x"), node("d", "21")], "30"))
    task = asyncio.create_task(inf.run())
    try:
        await eventually(lambda: inf.relists == 2 and inf.resource_version == "30", "relisted")
        assert inf.has_synced
        assert rec.events == [
            ("add", "a"),
            ("add", "b"),  # first list
            ("add", "c"),
            ("update", "a"),  # watch
            ("delete", "b"),
            ("update", "c"),
            ("add", "d"),  # relist diff: a unchanged, b gone
        ]
        await eventually(lambda: lw.watched_from == ["10", "15", "30"], "watching from the relist's version")
        assert [o["metadata"]["name"] for o in inf.by_index("pool", "x")] == ["c"]
        assert inf.get("a") is not None and inf.get("b") is None
        assert sleeps == []  # 410 relists at once, without backoff
    finally:
        task.cancel()


async def test_errors_back_off_and_relist() -> None:
    lw = Scripted()
    sleeps: list[float] = []

    async def sleep(s: float) -> None:
        sleeps.append(s)
        await asyncio.sleep(0)

    inf = Informer(lw, InformerConfig("t", backoff_initial=1, backoff_max=4), sleep=sleep, rng=lambda: 1.0)
    for _ in range(4):
        lw.lists.put_nowait(ListWatchError("connection refused"))
    lw.lists.put_nowait(([node("a", "1")], "5"))
    lw.watches.put_nowait([ListWatchError("stream reset")])
    lw.lists.put_nowait(([node("a", "1")], "6"))
    task = asyncio.create_task(inf.run())
    try:
        await eventually(lambda: inf.resource_version == "6", "relisted after the watch failed")
        assert sleeps == [1, 2, 4, 4, 4]  # doubling, capped; reset only once a watch works
    finally:
        task.cancel()


async def test_nodes_from_the_devcluster(devcluster: Devcluster, tmp_path: Any) -> None:
    api = await api_client(str(devcluster.kubeconfig(tmp_path / "kubeconfig")))
    admin = devcluster.admin()
    a, b = unique("inf-a"), unique("inf-b")
    admin.apply(
        "/api/v1/nodes",
        node_object(NodeIdentity(a, "127.0.9.1"), labels={"openyurt.io/is-edge-worker": "true"}),
    )
    inf = node_informer(api)
    rec = Recorder()
    inf.add_handler(rec.handler())
    directory = NodeDirectory(inf)
    task = asyncio.create_task(inf.run())
    try:
        async with asyncio.timeout(10):
            assert await directory.addresses(a) == {"127.0.9.1", a}
        assert await directory.addresses("no-such-node-here") is None
        ep = directory.kubelet_endpoint(a)
        assert ep is not None and (ep.address, ep.port) == ("127.0.9.1", 10250)
        assert [o["metadata"]["name"] for o in directory.by_address("127.0.9.1")] == [a]
        slim = inf.get(a)
        assert slim is not None and "nodeInfo" not in slim["status"]  # what aggapi does not need is dropped
        admin.apply("/api/v1/nodes", node_object(NodeIdentity(b, "127.0.9.2")))
        await eventually(lambda: ("add", b) in rec.events, "watch saw the new node")
        admin.request("DELETE", f"/api/v1/nodes/{a}")
        await eventually(lambda: ("delete", a) in rec.events, "watch saw the deletion")
        assert directory.get(a) is None and directory.by_address("127.0.9.1") == []
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        admin.request("DELETE", f"/api/v1/nodes/{b}")
        await api.close()


async def test_without_kube_apiserver_every_node_is_unknown() -> None:
    directory = NodeDirectory(None)
    assert await directory.addresses("edge-1") is None
    assert directory.get("edge-1") is None and directory.by_address("10.0.0.1") == []


def test_expired_is_distinct_from_errors() -> None:
    assert not issubclass(Expired, ListWatchError)
