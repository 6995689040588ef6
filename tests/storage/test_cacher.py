"""The watch cache (aggapi.storage.cacher) on a real etcd, without HTTP: consistent and cached reads,
pagination, watch replay beyond the ring, selector transitions, initial events and bookmarks."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import pytest
from support.etcd import EtcdServer

from aggapi.machinery.labels import parse_label_selector
from aggapi.storage.cacher import INITIAL_EVENTS_END, CacheConfig, Cacher, CacheWatcher
from aggapi.storage.errors import Expired, TooLargeResourceVersion
from aggapi.storage.etcd import EtcdClient, EtcdConfig
from aggapi.storage.etcdstore import EtcdStore
from aggapi.storage.interface import ListOptions, ListResult, Obj, Predicate, WatchEvent, WatchOptions

pytestmark = pytest.mark.timeout(60)

WAIT = 10.0  # hang guard for one awaited event; never a timing assertion
BOOKMARK = {"apiVersion": "edge.aggapi.io/v1alpha1", "kind": "NodePool"}


class SpyStore(EtcdStore):
    """An EtcdStore that counts the reads the cacher sends to etcd."""

    def __init__(self, client: EtcdClient) -> None:
        super().__init__(client)
        self.lists = 0
        self.revisions = 0
        self.after_list: Callable[[], Awaitable[None]] | None = None  # runs once, after the next list

    async def get_list(self, prefix: str, opts: ListOptions) -> ListResult:
        self.lists += 1
        res = await super().get_list(prefix, opts)
        hook, self.after_list = self.after_list, None
        if hook is not None:
            await hook()
        return res

    async def current_revision(self) -> int:
        self.revisions += 1
        return await super().current_revision()


@dataclass
class Env:
    store: SpyStore
    cacher: Cacher
    prefix: str

    def key(self, name: str) -> str:
        return self.prefix + name

    async def create(self, name: str, labels: dict[str, str] | None = None, value: int = 0) -> Obj:
        meta: dict[str, Any] = {"name": name}
        if labels is not None:
            meta["labels"] = labels
        obj = {**BOOKMARK, "metadata": meta, "spec": {"value": value}}
        return await self.cacher.create(self.key(name), obj)

    async def update(self, name: str, change: Callable[[Obj], None]) -> Obj:
        async def apply(obj: Obj) -> Obj:
            change(obj)
            return obj

        return await self.cacher.guaranteed_update(self.key(name), apply)

    async def set_value(self, name: str, value: int) -> Obj:
        return await self.update(name, lambda o: o["spec"].update(value=value))

    async def set_labels(self, name: str, labels: dict[str, str] | None) -> Obj:
        def change(obj: Obj) -> None:
            if labels is None:
                obj["metadata"].pop("labels", None)
            else:
                obj["metadata"]["labels"] = labels

        return await self.update(name, change)

    async def delete(self, name: str) -> Obj:
        return await self.cacher.delete(self.key(name))

    async def watch(self, **opts: Any) -> Events:
        return Events(await self.cacher.watch(self.prefix, WatchOptions(**opts)))


class Events:
    """One watcher's events, awaited one at a time with a hang guard."""

    def __init__(self, watcher: CacheWatcher) -> None:
        self.watcher = watcher
        self._it = aiter(watcher)

    async def next(self) -> WatchEvent:
        return await asyncio.wait_for(anext(self._it), WAIT)

    async def take(self, n: int) -> list[WatchEvent]:
        return [await self.next() for _ in range(n)]


MakeEnv = Callable[..., Awaitable[Env]]


async def until(cond: Callable[[], bool]) -> None:
    """Poll a condition on the cache's state, with a hang guard."""
    async with asyncio.timeout(WAIT):
        while True:
            if cond():
                return
            await asyncio.sleep(0.001)


@pytest.fixture
async def make_env(etcd_server: EtcdServer) -> AsyncIterator[MakeEnv]:
    """Builds a running Cacher over a fresh key prefix; everything is stopped and awaited afterwards."""
    clients: list[EtcdClient] = []
    tasks: list[asyncio.Task[None]] = []

    async def make(
        *,
        warm_up: bool = True,
        after_list: Callable[[SpyStore, str], Awaitable[None]] | None = None,
        **config: Any,
    ) -> Env:
        client = EtcdClient(EtcdConfig((etcd_server.client_url,)))
        clients.append(client)
        store = SpyStore(client)
        prefix = f"/t-{uuid.uuid4().hex[:8]}/edge.aggapi.io/nodepools/"
        cacher = Cacher(store, prefix, bookmark_object=BOOKMARK, config=CacheConfig(**config))
        if after_list is not None:
            hook = after_list
            store.after_list = lambda: hook(store, prefix)
        tasks.append(asyncio.create_task(cacher.run(), name=f"cacher:{prefix}"))
        async with asyncio.timeout(WAIT):
            await cacher.synced.wait()
            if not warm_up:
                return Env(store, cacher, prefix)
            # Write once and see the event arrive: the cache's etcd watch is then open and caught up. (While
            # it catches up, etcd 3.5.1 answers progress requests too early: see
            # test_consistent_list_right_after_the_cache_watch_opens.)
            warm = prefix + "warm-up"
            await store.create(warm, {**BOOKMARK, "metadata": {"name": "warm-up"}, "spec": {"value": 0}})
            await until(lambda: warm in cacher.objects)
            await store.delete(warm)
            await until(lambda: warm not in cacher.objects)
        return Env(store, cacher, prefix)

    try:
        yield make
    finally:
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await t
        for c in clients:
            await c.close()


def names(items: list[Obj]) -> list[str]:
    return [o["metadata"]["name"] for o in items]


def rv(obj: Obj) -> int:
    return int(obj["metadata"]["resourceVersion"])


def summary(ev: WatchEvent) -> tuple[str, str, int]:
    return ev.type, ev.object["metadata"]["name"], ev.object["spec"]["value"]


# ---- reads -----------------------------------------------------------------------------------------


async def test_consistent_list_sees_preceding_write_and_rv0_is_served_from_cache(make_env: MakeEnv) -> None:
    env = await make_env()
    for i in range(5):
        written = await env.create(f"obj-{i}")
        env.store.lists = env.store.revisions = 0
        # resourceVersion "": a consistent read. etcd is asked for its revision only; the objects come
        # from the cache once it has caught up with that revision, so the write just made is in.
        res = await env.cacher.get_list(env.prefix, ListOptions())
        assert names(res.items) == [f"obj-{j}" for j in range(i + 1)]
        assert res.resource_version >= rv(written)
        assert (env.store.lists, env.store.revisions) == (0, 1)

    # resourceVersion "0": whatever the cache holds, with no etcd round trip at all.
    env.store.lists = env.store.revisions = 0
    res = await env.cacher.get_list(env.prefix, ListOptions(resource_version="0"))
    assert names(res.items) == [f"obj-{j}" for j in range(5)]
    assert res.resource_version == env.cacher.rev
    assert (env.store.lists, env.store.revisions) == (0, 0)


async def test_consistent_list_right_after_the_cache_watch_opens(make_env: MakeEnv) -> None:
    async def write_between_list_and_watch(store: SpyStore, prefix: str) -> None:
        for name in ("x", "y", "z"):
            await store.create(prefix + name, {**BOOKMARK, "metadata": {"name": name}, "spec": {"value": 0}})

    env = await make_env(warm_up=False, after_list=write_between_list_and_watch)
    # The cache's etcd watch is open and may still be catching up: the consistent read must not
    # trust anything but events or etcd's own count/revision at the quorum revision.
    await until(lambda: env.cacher._watching)
    res = await env.cacher.get_list(env.prefix, ListOptions())
    assert names(res.items) == ["x", "y", "z"]


async def test_not_older_than_waits_for_a_written_rv_and_rejects_a_future_one(make_env: MakeEnv) -> None:
    env = await make_env(fresh_timeout=0.5)
    written = await env.create("a")
    res = await env.cacher.get_list(
        env.prefix, ListOptions(resource_version=str(rv(written)), resource_version_match="NotOlderThan")
    )
    assert names(res.items) == ["a"]
    assert res.resource_version >= rv(written)

    future = rv(written) + 1000
    opts = ListOptions(resource_version=str(future), resource_version_match="NotOlderThan")
    with pytest.raises(TooLargeResourceVersion) as exc:
        await env.cacher.get_list(env.prefix, opts)
    assert exc.value.requested == future
    assert exc.value.current < future


async def test_limit_and_continue_page_through_a_consistent_snapshot(make_env: MakeEnv) -> None:
    env = await make_env()
    all_names = [f"p{i:02d}" for i in range(12)]
    for i, name in enumerate(all_names):
        await env.create(name, labels={"parity": "even" if i % 2 == 0 else "odd"})

    async def pages(limit: int, pred: Predicate, write_after_first: str = "") -> list[ListResult]:
        out: list[ListResult] = []
        token = ""
        while True:
            opts = ListOptions(limit=limit, continue_token=token, predicate=pred)
            res = await env.cacher.get_list(env.prefix, opts)
            out.append(res)
            if len(out) == 1 and write_after_first:
                await env.create(write_after_first, labels={"parity": "even"})
            if not res.continue_token:
                return out
            token = res.continue_token
            assert len(out) < 20, "continue tokens do not terminate"

    env.store.lists = 0
    got = await pages(5, Predicate(), write_after_first="p05a")  # not part of the list being paged
    assert [names(p.items) for p in got] == [all_names[0:5], all_names[5:10], all_names[10:12]]
    assert env.store.lists == len(got)  # every page came from etcd
    assert len({p.resource_version for p in got}) == 1  # one snapshot revision for the whole list
    assert got[0].remaining == 7

    even = Predicate(label=parse_label_selector("parity=even"))
    got = await pages(2, even, write_after_first="p00a")
    listed = [n for p in got for n in names(p.items)]
    # Each matching object exactly once, in key order (p05a from the first list included, p00a not).
    assert listed == ["p00", "p02", "p04", "p05a", "p06", "p08", "p10"]
    assert all(len(p.items) <= 2 for p in got)
    assert len({p.resource_version for p in got}) == 1


# ---- watch -----------------------------------------------------------------------------------------


async def test_watch_older_than_the_ring_replays_every_event_from_etcd(make_env: MakeEnv) -> None:
    env = await make_env(capacity=3)
    start = env.cacher.rev
    expected: list[tuple[str, str, int]] = []
    write_rvs: list[int | None] = []

    async def created(name: str) -> None:
        obj = await env.create(name, value=1)
        expected.append(("ADDED", name, 1))
        write_rvs.append(rv(obj))

    async def modified(name: str, value: int) -> None:
        obj = await env.set_value(name, value)
        expected.append(("MODIFIED", name, value))
        write_rvs.append(rv(obj))

    async def deleted(name: str) -> None:
        obj = await env.delete(name)
        expected.append(("DELETED", name, obj["spec"]["value"]))
        write_rvs.append(None)

    await created("a")
    await created("b")
    await created("c")
    for v in (2, 3, 4):
        await modified("a", v)
    await deleted("b")
    await created("d")
    await modified("c", 2)
    await deleted("a")
    assert await env.cacher.wait_fresh(await env.store.current_revision())
    assert env.cacher.window_start > start  # the ring has dropped the first events: etcd must fill in

    events = await env.watch(resource_version=str(start))
    got = await events.take(len(expected))
    assert [summary(ev) for ev in got] == expected
    rvs = [ev.resource_version for ev in got]
    assert all(a < b for a, b in zip([start, *rvs], rvs, strict=False))
    assert all(w is None or w == r for w, r in zip(write_rvs, rvs, strict=True))
    assert all(int(ev.object["metadata"]["resourceVersion"]) == ev.resource_version for ev in got)

    live = await env.create("e", value=7)  # and the watch goes on live after the replay
    ev = await events.next()
    assert summary(ev) == ("ADDED", "e", 7)
    assert ev.resource_version == rv(live)
    events.watcher.stop()


async def test_watch_older_than_the_cache_with_no_event_to_anchor_a_replay_is_expired(
    make_env: MakeEnv,
) -> None:
    env = await make_env(warm_up=False)
    listed_at = env.cacher.window_start
    # Nothing written since the cache listed: no event marks where a replay from etcd would be complete,
    # so the client is told to relist (410) rather than risk a replay that silently ends early.
    with pytest.raises(Expired):
        await env.cacher.watch(env.prefix, WatchOptions(resource_version=str(listed_at - 1)))

    obj = await env.create("first", value=1)
    assert await env.cacher.wait_fresh(rv(obj))
    events = await env.watch(resource_version=str(listed_at - 1))
    ev = await events.next()
    assert (summary(ev), ev.resource_version) == (("ADDED", "first", 1), rv(obj))
    events.watcher.stop()


async def test_selector_watch_sees_objects_enter_and_leave(make_env: MakeEnv) -> None:
    env = await make_env()
    pred = Predicate(label=parse_label_selector("tier=edge"))
    events = await env.watch(resource_version=str(env.cacher.rev), predicate=pred)

    await env.create("x", labels={"tier": "cloud"}, value=1)  # never matches: no event
    entered = await env.set_labels("x", {"tier": "edge"})
    ev = await events.next()
    assert (ev.type, ev.resource_version) == ("ADDED", rv(entered))
    assert ev.object["metadata"]["labels"] == {"tier": "edge"}

    changed = await env.set_value("x", 2)
    ev = await events.next()
    assert (ev.type, ev.resource_version, ev.object["spec"]["value"]) == ("MODIFIED", rv(changed), 2)

    left = await env.set_labels("x", {"tier": "cloud"})
    ev = await events.next()
    # Leaving the selection is a DELETED of the last matching state, at the revision it left.
    assert (ev.type, ev.resource_version) == ("DELETED", rv(left))
    assert ev.object["metadata"]["labels"] == {"tier": "edge"}
    assert ev.object["metadata"]["resourceVersion"] == str(rv(left))

    await env.set_value("x", 3)  # outside the selection: no event
    await env.delete("x")  # deleted while not matching: no event
    marker = await env.create("y", labels={"tier": "edge"}, value=9)
    ev = await events.next()  # nothing queued between leaving and this
    assert (summary(ev), ev.resource_version) == (("ADDED", "y", 9), rv(marker))
    events.watcher.stop()


async def test_send_initial_events_ends_with_annotated_bookmark(make_env: MakeEnv) -> None:
    env = await make_env()
    last = None
    for name in ("c", "a", "b"):
        last = await env.create(name)
    assert last is not None
    events = await env.watch(resource_version="", send_initial_events=True, allow_bookmarks=True)
    initial = await events.take(3)
    assert [(ev.type, ev.object["metadata"]["name"]) for ev in initial] == [
        ("ADDED", "a"),
        ("ADDED", "b"),
        ("ADDED", "c"),
    ]
    bookmark = await events.next()
    assert bookmark.type == "BOOKMARK"
    assert bookmark.object["apiVersion"] == BOOKMARK["apiVersion"]
    assert bookmark.object["kind"] == BOOKMARK["kind"]
    assert bookmark.object["metadata"]["annotations"] == {INITIAL_EVENTS_END: "true"}
    assert bookmark.resource_version >= rv(last)
    assert bookmark.object["metadata"]["resourceVersion"] == str(bookmark.resource_version)

    after = await env.set_value("a", 5)
    ev = await events.next()
    assert (summary(ev), ev.resource_version) == (("MODIFIED", "a", 5), rv(after))
    events.watcher.stop()


async def test_send_bookmarks_reaches_only_bookmark_watchers(make_env: MakeEnv) -> None:
    env = await make_env()
    seed = await env.create("seed")
    assert await env.cacher.wait_fresh(rv(seed))
    start = str(env.cacher.rev)
    with_bookmarks = await env.watch(resource_version=start, allow_bookmarks=True)
    without = await env.watch(resource_version=start)

    env.cacher.send_bookmarks()
    ev = await with_bookmarks.next()
    assert ev.type == "BOOKMARK"
    assert ev.resource_version == env.cacher.rev
    assert ev.object["metadata"] == {"resourceVersion": str(env.cacher.rev)}
    assert "annotations" not in ev.object["metadata"]

    marker = await env.create("marker")
    ev = await without.next()  # the first thing this watcher sees is the write, not a bookmark
    assert (ev.type, ev.resource_version) == ("ADDED", rv(marker))
    ev = await with_bookmarks.next()
    assert (ev.type, ev.resource_version) == ("ADDED", rv(marker))
    with_bookmarks.watcher.stop()
    without.watcher.stop()


async def test_watchers_share_one_encoding_cache_per_event(make_env: MakeEnv) -> None:
    env = await make_env()
    start = str(env.cacher.rev)
    everything = await env.watch(resource_version=start)
    selected = await env.watch(resource_version=start, predicate=Predicate(label=parse_label_selector("a=b")))

    await env.create("shared", labels={"a": "b"})
    first, second = await everything.next(), await selected.next()
    assert first.resource_version == second.resource_version
    # One event serialized once: both watchers' events carry the very same memo of encoded bytes.
    assert first.encoded is second.encoded
    first.encoded["json"] = b"{}"
    assert second.encoded["json"] == b"{}"
    everything.watcher.stop()
    selected.watcher.stop()
