"""TopologyIndex and TopologyFeeder: list+watch semantics with a scripted reader, then against the real
devcluster (nodes and services created through its API; the index follows the watch events)."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest
from filterkit import HTTPReader, node, nodepool, service
from support.devcluster import Devcluster

from edge.shadow.filters import ServiceTopologyFilter, TopologyFeeder, TopologyIndex
from edge.shadow.filters.base import FilterRequest
from edge.shadow.filters.topology import NODEPOOLS_PATH, NODES_PATH, SERVICES_PATH

END = object()  # ends one watch stream


async def eventually(cond: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.01)


class FakeReader:
    """Lists answer from a script (the last entry repeats; an Exception is raised); each watch stream
    reads that path's queue until END (or raises a queued Exception)."""

    def __init__(self) -> None:
        self.lists: dict[str, list[Any]] = defaultdict(lambda: [([], "1")])
        self.events: dict[str, asyncio.Queue[Any]] = defaultdict(asyncio.Queue)
        self.calls: list[tuple[str, str, str]] = []

    async def list(self, path: str) -> tuple[list[dict[str, Any]], str]:
        self.calls.append(("list", path, ""))
        script = self.lists[path]
        answer = script.pop(0) if len(script) > 1 else script[0]
        if isinstance(answer, Exception):
            raise answer
        items, rv = answer
        return list(items), rv

    async def watch(self, path: str, rv: str) -> AsyncIterator[tuple[str, dict[str, Any]]]:
        self.calls.append(("watch", path, rv))
        q = self.events[path]
        while True:
            ev = await q.get()
            if ev is END:
                return
            if isinstance(ev, Exception):
                raise ev
            yield ev


class Sleeps:
    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)
        await asyncio.sleep(0)  # never really sleep, but let other tasks run


@contextlib.asynccontextmanager
async def feeding(feeder: TopologyFeeder) -> AsyncIterator[None]:
    task = asyncio.create_task(feeder.run(), name="test-topology-feeder")
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def with_rv(obj: dict[str, Any], rv: str) -> dict[str, Any]:
    return {**obj, "metadata": {**obj["metadata"], "resourceVersion": rv}}


def test_index_keeps_slim_copies() -> None:
    index = TopologyIndex()
    n = node("edge-1", "hangzhou", "zone-1")
    index.upsert("Node", n)
    got = index.node("edge-1")
    assert got == {"metadata": {"name": "edge-1", "labels": n["metadata"]["labels"]}}
    index.upsert("NodePool", nodepool("hangzhou", ["edge-1"]))
    assert index.nodepool("hangzhou") == {
        "metadata": {"name": "hangzhou", "labels": {"nodepool.openyurt.io/type": "edge"}},
        "status": {"nodes": ["edge-1"]},
    }
    svc = service("web", "openyurt.io/nodepool")
    index.upsert("Service", svc)
    assert index.service("shop", "web") is not None and index.service("default", "web") is None
    index.replace("Service", [service("api", None)])
    assert index.service("shop", "web") is None and index.service("shop", "api") is not None
    index.delete("Node", {"metadata": {"name": "edge-1"}})
    assert index.node("edge-1") is None
    index.upsert("Node", {"metadata": {}})  # nameless: ignored
    assert index.count("Node") == 0
    assert [p["metadata"]["name"] for p in index.nodepools()] == ["hangzhou"]


async def test_feeder_lists_watches_and_resumes_from_last_rv() -> None:
    reader, index = FakeReader(), TopologyIndex()
    reader.lists[SERVICES_PATH] = [([service("web", None), service("old", None)], "10")]
    feeder = TopologyFeeder(reader, index, own_node=None, sleep=Sleeps())
    async with feeding(feeder):
        await eventually(lambda: feeder.synced("Service"))
        assert index.service("shop", "old") is not None
        q = reader.events[SERVICES_PATH]
        q.put_nowait(("MODIFIED", with_rv(service("web", "kubernetes.io/hostname"), "11")))
        q.put_nowait(("DELETED", with_rv(service("old", None), "12")))
        q.put_nowait(("BOOKMARK", {"kind": "Service", "metadata": {"resourceVersion": "15"}}))
        q.put_nowait(END)  # the server's watch timeout
        await eventually(lambda: ("watch", SERVICES_PATH, "15") in reader.calls)
        svc = index.service("shop", "web")
        assert svc is not None and svc["metadata"]["annotations"] == {
            "openyurt.io/topologyKeys": "kubernetes.io/hostname"
        }
        assert index.service("shop", "old") is None
        assert [c for c in reader.calls if c[1] == SERVICES_PATH] == [
            ("list", SERVICES_PATH, ""),
            ("watch", SERVICES_PATH, "10"),
            ("watch", SERVICES_PATH, "15"),
        ]


async def test_feeder_relists_on_error_event_and_forgets_what_vanished() -> None:
    reader, index = FakeReader(), TopologyIndex()
    reader.lists[NODES_PATH] = [
        ([node("edge-1"), node("edge-2")], "5"),
        ([node("edge-2"), node("edge-3")], "50"),  # edge-1 deleted while we were not watching
    ]
    feeder = TopologyFeeder(reader, index, own_node=None, sleep=Sleeps())
    async with feeding(feeder):
        await eventually(lambda: feeder.synced("Node"))
        q = reader.events[NODES_PATH]
        q.put_nowait(("ERROR", {"kind": "Status", "code": 410, "reason": "Expired", "message": "too old"}))
        await eventually(lambda: ("watch", NODES_PATH, "50") in reader.calls)
        assert index.node("edge-1") is None
        assert index.node("edge-2") is not None and index.node("edge-3") is not None


async def test_feeder_backs_off_and_kinds_are_independent() -> None:
    reader, index = FakeReader(), TopologyIndex()
    down = ConnectionRefusedError("aggapi unavailable")
    reader.lists[NODEPOOLS_PATH] = [down, down, down, down, ([nodepool("p1", ["edge-1"])], "3")]
    reader.lists[SERVICES_PATH] = [([service("web", None)], "7")]
    sleeps = Sleeps()
    feeder = TopologyFeeder(reader, index, own_node=None, backoff=(0.5, 2.0), sleep=sleeps)
    async with feeding(feeder):
        await eventually(feeder.synced)
        assert index.nodepool("p1") == {
            "metadata": {"name": "p1", "labels": {"nodepool.openyurt.io/type": "edge"}},
            "status": {"nodes": ["edge-1"]},
        }
        assert sleeps.delays == [0.5, 1.0, 2.0, 2.0]  # exponential, capped
        assert index.service("shop", "web") is not None


async def test_feeder_does_not_spin_on_streams_that_end_at_once() -> None:
    """Offline, a cache may end every watch immediately: the feeder relists with growing backoff."""
    reader, index = FakeReader(), TopologyIndex()
    sleeps = Sleeps()
    feeder = TopologyFeeder(reader, index, own_node="edge-1", backoff=(0.5, 4.0), sleep=sleeps)
    nodes_path = f"{NODES_PATH}?fieldSelector=metadata.name%3Dedge-1"
    assert feeder.paths["Node"] == nodes_path
    for _ in range(5):
        reader.events[nodes_path].put_nowait(END)
    async with feeding(feeder):
        # Five streams ended at once; the sixth waits for events.
        await eventually(lambda: [c[0] for c in reader.calls if c[1] == nodes_path].count("watch") == 6)
        assert [c[0] for c in reader.calls if c[1] == nodes_path] == ["list", "watch"] * 6
        node_sleeps = sleeps.delays  # the other kinds' watches block: every sleep is the Node feed's
        assert node_sleeps == [0.5, 1.0, 2.0, 4.0, 4.0]


async def test_feeder_rewatches_a_silent_stream_after_idle_timeout() -> None:
    reader, index = FakeReader(), TopologyIndex()
    feeder = TopologyFeeder(reader, index, own_node=None, idle_timeout=0.05, sleep=Sleeps())
    async with feeding(feeder):
        await eventually(lambda: len([c for c in reader.calls if c[:2] == ("watch", SERVICES_PATH)]) >= 3)


# --- against the real devcluster -------------------------------------------------------------------


@pytest.fixture
def names() -> Iterator[Callable[[str], str]]:
    suffix = uuid.uuid4().hex[:6]
    yield lambda base: f"{base}-{suffix}"


def _ok(code: int, body: Any) -> Any:
    assert code in (200, 201), body.get("message", body)
    return body


@pytest.mark.timeout(60)
async def test_feeder_follows_the_devcluster(devcluster: Devcluster, names: Callable[[str], str]) -> None:
    admin = devcluster.admin()

    async def call(method: str, path: str, body: Any = None) -> Any:
        return _ok(*await asyncio.to_thread(admin.request, method, path, body))

    me, peer, far = names("edge-me"), names("edge-peer"), names("edge-far")
    for n, zone in ((me, "z1"), (peer, "z1"), (far, "z2")):
        obj = node(n, "p-test", zone)
        del obj["metadata"]["resourceVersion"]
        await call("POST", "/api/v1/nodes", obj)
    svc_name = names("web")
    svc = service(svc_name, "kubernetes.io/hostname", namespace="default")
    await call("POST", "/api/v1/namespaces/default/services", svc)
    es = {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {"name": f"{svc_name}-abc", "labels": {"kubernetes.io/service-name": svc_name}},
        "addressType": "IPv4",
        "endpoints": [
            {"addresses": ["10.1.0.1"], "nodeName": me},
            {"addresses": ["10.1.0.2"], "nodeName": peer},
            {"addresses": ["10.1.0.3"], "nodeName": far},
        ],
    }
    es = await call("POST", "/apis/discovery.k8s.io/v1/namespaces/default/endpointslices", es)

    index = TopologyIndex()
    filt = ServiceTopologyFilter(me, index)
    req = FilterRequest("kube-proxy", "watch", "discovery.k8s.io", "v1", "endpointslices", "default", None)

    def ips() -> set[str]:
        out = filt.apply(req, es)
        assert out is not None
        return {a for ep in out["endpoints"] for a in ep["addresses"]}

    pki = devcluster.pki
    async with HTTPReader(devcluster.url, pki.ca, pki.admin_cert, pki.admin_key) as reader:
        feeder = TopologyFeeder(reader, index, own_node=None, backoff=(0.05, 0.2))
        async with feeding(feeder):
            await eventually(lambda: feeder.synced("Service") and feeder.synced("Node"))
            # The devcluster has no NodePools (aggapi serves them): that feed keeps retrying, the others run.
            assert not feeder.synced("NodePool")
            assert ips() == {"10.1.0.1"}

            # Annotation changed to the zone: the MODIFIED event reaches the index; the endpoints carry
            # no zone, so the Nodes' labels (also from the watch) place them.
            svc = await call("GET", f"/api/v1/namespaces/default/services/{svc_name}")
            svc["metadata"]["annotations"] = {"openyurt.io/topologyKeys": "topology.kubernetes.io/zone"}
            await call("PUT", f"/api/v1/namespaces/default/services/{svc_name}", svc)
            await eventually(lambda: ips() == {"10.1.0.1", "10.1.0.2"})

            # A Node relabelled into our zone.
            far_node = await call("GET", f"/api/v1/nodes/{far}")
            far_node["metadata"]["labels"]["topology.kubernetes.io/zone"] = "z1"
            await call("PUT", f"/api/v1/nodes/{far}", far_node)
            await eventually(lambda: ips() == {"10.1.0.1", "10.1.0.2", "10.1.0.3"})

            # A deleted Node: its endpoint can no longer be placed in a zone.
            await call("DELETE", f"/api/v1/nodes/{peer}")
            await eventually(lambda: index.node(peer) is None)
            assert ips() == {"10.1.0.1", "10.1.0.3"}

            # Annotation removed: the object passes unchanged.
            svc = await call("GET", f"/api/v1/namespaces/default/services/{svc_name}")
            svc["metadata"].pop("annotations")
            await call("PUT", f"/api/v1/namespaces/default/services/{svc_name}", svc)
            await eventually(lambda: filt.apply(req, es) is es)

        # Only the own Node, through a field selector (the default on edge nodes).
        own_index = TopologyIndex()
        own = TopologyFeeder(reader, own_index, own_node=me, backoff=(0.05, 0.2))
        async with feeding(own):
            await eventually(lambda: own.synced("Node"))
            assert own_index.count("Node") == 1 and own_index.node(me) is not None
            for name, zone in ((me, "z9"), (far, "z8")):  # a change to another Node is not seen
                obj = await call("GET", f"/api/v1/nodes/{name}")
                obj["metadata"]["labels"]["topology.kubernetes.io/zone"] = zone
                await call("PUT", f"/api/v1/nodes/{name}", obj)

            def own_zone() -> str | None:
                n = own_index.node(me)
                return None if n is None else n["metadata"]["labels"].get("topology.kubernetes.io/zone")

            await eventually(lambda: own_zone() == "z9")
            assert own_index.count("Node") == 1 and own_index.node(far) is None
