"""The in-memory view storage behind edgenodes: minted resourceVersions, watch resumption, selectors."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from aggapi.edge_api.memstore import MemoryView, MemoryViewConfig, RVMint
from aggapi.machinery.labels import parse_label_selector
from aggapi.storage import errors
from aggapi.storage.interface import ListOptions, Predicate, WatchEvent, WatchOptions

BOOKMARK = {"apiVersion": "edge.aggapi.io/v1alpha1", "kind": "EdgeNode"}


def obj(name: str, **labels: str) -> dict[str, Any]:
    return {"kind": "EdgeNode", "metadata": {"name": name, "labels": labels}, "spec": {"nodeName": name}}


def view(**kw: Any) -> MemoryView:
    return MemoryView(MemoryViewConfig(BOOKMARK, **kw), clock_ms=lambda: 1_000, secret=b"k" * 16)


async def drain(w: Any, n: int) -> list[WatchEvent]:
    out: list[WatchEvent] = []
    it = w.__aiter__()
    for _ in range(n):
        out.append(await asyncio.wait_for(it.__anext__(), 2))
    return out


def test_minted_versions_grow_and_foreign_ones_are_recognized() -> None:
    a, b = RVMint(1_000, b"a" * 16), RVMint(1_000, b"b" * 16)
    ours = [a.next() for _ in range(50)]
    assert ours == sorted(ours) and len(set(ours)) == 50
    assert all(a.counter_of(rv) is not None for rv in ours)
    theirs = [b.next() for _ in range(50)]  # same counters, another process
    assert sum(a.counter_of(rv) is not None for rv in theirs) <= 1  # 2^-16 each
    assert a.counter_of(a.current + (1 << 16)) is None  # from the future
    later = RVMint(2_000, b"a" * 16)  # a restart, later: its versions are all newer
    assert later.next() > a.current


async def test_apply_only_emits_on_change_and_list_filters() -> None:
    v = view()
    assert v.apply("a", obj("a", pool="x")) and v.apply("b", obj("b"))
    rv = v.mint.current
    assert not v.apply("a", obj("a", pool="x"))  # the same again: no new version
    assert v.mint.current == rv
    pred = Predicate(label=parse_label_selector("pool=x"))
    res = await v.get_list("/r/", ListOptions(predicate=pred))
    assert [o["metadata"]["name"] for o in res.items] == ["a"] and res.resource_version == rv
    got = await v.get("/r/a")
    assert got["metadata"]["resourceVersion"] != str(rv)  # a's own version, older
    with pytest.raises(errors.KeyNotFound):
        await v.get("/r/zzz")
    with pytest.raises(errors.Expired):
        await v.get_list("/r/", ListOptions(resource_version="12345"))


async def test_watch_resumes_from_a_version_and_sees_selector_moves() -> None:
    v = view()
    v.apply("a", obj("a", pool="x"))
    start = str(v.mint.current)
    v.apply("b", obj("b", pool="x"))
    v.apply("a", obj("a", pool="y"))  # leaves pool=x
    v.apply("b", None)
    pred = Predicate(label=parse_label_selector("pool=x"))
    w = await v.watch("/r/", WatchOptions(resource_version=start, predicate=pred))
    evs = await drain(w, 3)
    assert [(e.type, e.object["metadata"]["name"]) for e in evs] == [
        ("ADDED", "b"),
        ("DELETED", "a"),
        ("DELETED", "b"),
    ]
    v.apply("a", obj("a", pool="x"))  # back in
    (ev,) = await drain(w, 1)
    assert (ev.type, ev.object["metadata"]["name"]) == ("ADDED", "a")
    w.stop()
    assert v.watcher_count == 0


async def test_watch_initial_events_bookmark_and_expiry() -> None:
    v = view(ring_capacity=2)
    for i in range(5):
        v.apply(f"n{i}", obj(f"n{i}"))
    opts = WatchOptions(send_initial_events=True, allow_bookmarks=True, resource_version="")
    w = await v.watch("/r/", opts)
    evs = await drain(w, 6)
    assert [e.type for e in evs] == ["ADDED"] * 5 + ["BOOKMARK"]
    assert evs[-1].object["metadata"]["annotations"] == {"k8s.io/initial-events-end": "true"}
    v.close_watchers()
    first = v.mint.start << 16  # not even a minted value
    with pytest.raises(errors.Expired):
        await v.watch("/r/", WatchOptions(resource_version=str(first)))
    old = v.mint.counter - 4  # minted by us, but older than the ring keeps
    rv_old = old << 16 | v.mint._tag(old)
    with pytest.raises(errors.Expired):
        await v.watch("/r/", WatchOptions(resource_version=str(rv_old)))


async def test_reads_wait_for_the_first_sync_then_fail_unavailable() -> None:
    synced = asyncio.Event()
    v = MemoryView(MemoryViewConfig(BOOKMARK, ready_timeout=0.05), ready=synced.wait)
    with pytest.raises(errors.Unavailable):
        await v.get_list("/r/", ListOptions())
    synced.set()
    assert (await v.get_list("/r/", ListOptions())).items == []
