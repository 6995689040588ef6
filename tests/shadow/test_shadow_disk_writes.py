"""What the cache writes, and when (docs/shadow.md, "Atomic and recoverable" and "Durability"): an object or
list view that did not change is not written again; get/list answers are written in the background
(before the next answer for the same object or selection, and before any later watch event); watch events
are on disk before they are forwarded. No network: a Cache on a DiskStore in tmp_path, with a gate that
holds the writer thread where a test needs the write to be still pending."""

from __future__ import annotations

import asyncio
import copy
import threading
from pathlib import Path
from typing import Any

import orjson

from edge.shadow.cache import Cache
from edge.shadow.disk import DiskStore
from edge.shadow.requestinfo import RequestInfo, parse

UA = "kubelet/v1.30.0 (linux/amd64)"
KIND = {"kind": "Pod", "apiVersion": "v1"}
NS = "default"


class GatedStore(DiskStore):
    """A DiskStore that counts what reaches the disk and can hold its writer thread."""

    def __init__(self, root: Path) -> None:
        super().__init__(root, fsync=False)
        self.gate = threading.Event()
        self.gate.set()
        self.written: list[tuple[str, str]] = []  # (op, rel), in the order the writer ran them

    def _apply_sync(self, ops: list[tuple[str, str, Any]]) -> None:
        self.gate.wait(timeout=60)
        self.written += [(op, rel) for op, rel, _ in ops]
        super()._apply_sync(ops)


def pod(name: str, rv: str, **spec: Any) -> dict[str, Any]:
    meta = {"name": name, "namespace": NS}
    if rv:
        meta["resourceVersion"] = rv
    return {"metadata": meta, "spec": {"nodeName": "edge-1", **spec}}


def pod_list(rv: str, *items: dict[str, Any]) -> dict[str, Any]:
    body = {"kind": "PodList", "apiVersion": "v1", "metadata": {"resourceVersion": rv}, "items": list(items)}
    return copy.deepcopy(body)  # as a fresh parse of an upstream answer


def info(path: str = f"/api/v1/namespaces/{NS}/pods", **query: str) -> RequestInfo:
    return parse("GET", path, query, UA)


def rel(name: str) -> str:
    return f"kubelet/pods/{NS}/{name}.json"


async def _cache(tmp_path: Path) -> tuple[Cache, GatedStore]:
    store = GatedStore(tmp_path / "cache")
    cache = Cache(store, ["kubelet"])
    await cache.load()
    return cache, store


async def test_an_unchanged_relist_writes_nothing(tmp_path: Path) -> None:
    cache, store = await _cache(tmp_path)
    try:
        a, b, c = pod("a", "10"), pod("b", "11"), pod("c", "12")
        await cache.record_list(info(), pod_list("20", a, b, c), "")
        await store.flush()
        view = next(iter(cache.views.values()))
        objects = [("put", rel("a")), ("put", rel("b")), ("put", rel("c"))]
        assert sorted(store.written) == sorted(
            [*objects, ("put", view.base + ".json"), ("delete", view.base + ".log")]
        )

        store.written.clear()  # the same answer again (a relist, a resync): no file is touched
        await cache.record_list(info(), pod_list("20", a, b, c), "")
        await cache.record_get(info(f"/api/v1/namespaces/{NS}/pods/a"), copy.deepcopy(a) | KIND)
        await store.flush()
        assert store.written == []

        # one object changed: only its file; the view's resourceVersion moved: its snapshot
        await cache.record_list(info(), pod_list("21", a, pod("b", "13", image="x"), c), "")
        await store.flush()
        assert store.written == [
            ("put", rel("b")),
            ("put", view.base + ".json"),
            ("delete", view.base + ".log"),
        ]

        # one object gone: the view and the removal
        store.written.clear()
        await cache.record_list(info(), pod_list("22", a, pod("b", "13", image="x")), "")
        await store.flush()
        assert store.written == [
            ("put", view.base + ".json"),
            ("delete", view.base + ".log"),
            ("delete", rel("c")),
        ]
        on_disk = orjson.loads((store.root / rel("b")).read_bytes())
        assert on_disk["spec"]["image"] == "x" and on_disk["kind"] == "Pod"
    finally:
        store.close()


async def test_same_resource_version_other_content_is_written(tmp_path: Path) -> None:
    """A copy changed locally (a status accepted offline keeps the resourceVersion) is replaced by the
    upstream one even though the resourceVersion is the same; without a resourceVersion, content decides."""
    cache, store = await _cache(tmp_path)
    try:
        get = info(f"/api/v1/namespaces/{NS}/pods/a")
        await cache.record_get(get, pod("a", "10") | {"kind": "Pod"})
        local = pod("a", "10") | {"kind": "Pod", "status": {"phase": "Running"}}
        await cache.put_local(rel("a"), local)
        store.written.clear()
        await cache.record_get(get, pod("a", "10") | {"kind": "Pod"})
        await store.flush()
        assert store.written == [("put", rel("a"))]
        assert "status" not in orjson.loads((store.root / rel("a")).read_bytes())

        store.written.clear()
        noversion = info(f"/api/v1/namespaces/{NS}/pods/n")
        await cache.record_get(noversion, pod("n", "") | {"kind": "Pod"})
        await cache.record_get(noversion, pod("n", "") | {"kind": "Pod"})
        await cache.record_get(noversion, pod("n", "", image="y") | {"kind": "Pod"})
        await store.flush()
        assert store.written == [("put", rel("n")), ("put", rel("n"))]
    finally:
        store.close()


async def test_a_list_answer_does_not_wait_for_the_disk_but_the_next_one_of_its_view_does(
    tmp_path: Path,
) -> None:
    cache, store = await _cache(tmp_path)
    try:
        store.gate.clear()  # the writer thread is held: nothing reaches the disk
        await cache.record_list(info(), pod_list("20", pod("a", "10")), "")  # returns: not waiting
        view = next(iter(cache.views.values()))
        assert cache.objects[rel("a")]["metadata"]["resourceVersion"] == "10"  # in memory at once
        await cache.record_list(info(labelSelector="app=x"), pod_list("20", pod("a", "10")), "")  # other view

        # the next list of the same selection waits until the previous one is on disk
        same = asyncio.create_task(cache.record_list(info(), pod_list("21", pod("a", "11")), ""))
        # ... and a watch event is on disk, with everything recorded before it, when it may be forwarded
        watch = info(watch="1", labelSelector="app=x")
        event = asyncio.create_task(cache.record_event(watch, "ADDED", pod("e", "12"), "Pod"))
        for _ in range(20):
            await asyncio.sleep(0)
        assert not same.done() and not event.done()
        assert not (store.root / rel("a")).exists()

        store.gate.set()
        await same
        await event
        assert (store.root / rel("e")).is_file()
        assert (store.root / (view.base + ".json")).is_file()
        a = orjson.loads((store.root / rel("a")).read_bytes())
        assert a["metadata"]["resourceVersion"] in ("10", "11")  # the second list is queued behind
        await store.flush()
        a = orjson.loads((store.root / rel("a")).read_bytes())
        assert a["metadata"]["resourceVersion"] == "11"
    finally:
        store.gate.set()
        store.close()


async def test_a_cancelled_caller_does_not_cancel_its_write(tmp_path: Path) -> None:
    cache, store = await _cache(tmp_path)
    try:
        store.gate.clear()
        await cache.record_list(info(), pod_list("20", pod("a", "10")), "")  # keeps the writer busy
        event = asyncio.create_task(cache.record_event(info(watch="1"), "ADDED", pod("e", "12"), "Pod"))
        for _ in range(5):
            await asyncio.sleep(0)
        event.cancel()  # the client went away while its event was queued
        store.gate.set()
        await store.flush()
        assert (store.root / rel("e")).is_file()
        assert event.cancelled()
    finally:
        store.gate.set()
        store.close()


async def test_a_restart_reads_back_what_was_skipped_and_written(tmp_path: Path) -> None:
    cache, store = await _cache(tmp_path)
    a, b = pod("a", "10"), pod("b", "11")
    await cache.record_list(info(), pod_list("20", a, b), "")
    await cache.record_list(info(), pod_list("20", a, b), "")  # skipped
    await cache.record_event(info(watch="1"), "DELETED", pod("b", "12"), "Pod")
    await cache.record_list(info(), pod_list("20", a), "")  # the same members now: skipped as well
    store.close()  # writes everything queued
    again, store2 = await _cache(tmp_path)
    try:
        assert sorted(again.objects) == [rel("a")]
        (view,) = again.views.values()
        assert view.members == {rel("a")} and view.resource_version == "20"
    finally:
        store2.close()


async def test_an_event_that_writes_nothing_still_waits_for_what_was_queued_before(tmp_path: Path) -> None:
    cache, store = await _cache(tmp_path)
    try:
        watch = info(watch="1", labelSelector="app=x")
        await cache.record_event(watch, "ADDED", pod("e", "12"), "Pod")
        store.gate.clear()
        await cache.record_list(info(), pod_list("20", pod("a", "10")), "")  # queued, held
        again = asyncio.create_task(cache.record_event(watch, "MODIFIED", pod("e", "12"), "Pod"))  # no change
        for _ in range(20):
            await asyncio.sleep(0)
        assert not again.done()  # it may not be forwarded before the list is on disk
        store.gate.set()
        await again
        assert (store.root / rel("a")).is_file()
    finally:
        store.gate.set()
        store.close()
