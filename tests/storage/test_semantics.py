"""kube-apiserver storage semantics through the HTTP API of a real `aggapi serve` on a real etcd:
optimistic concurrency, watch resumption across restarts, compaction, finalizers, etcd outages,
preconditions, generation and the status subresource, dry runs and deletecollection."""

from __future__ import annotations

import asyncio
import itertools
import json
import random
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from support.aggapi import NP, AggapiServer, Api, api_client, client_ssl, nodepool
from support.etcd import EtcdServer, start_etcd

from aggapi.devlab import LabPKI
from aggapi.storage.etcd import EtcdClient, EtcdConfig

pytestmark = pytest.mark.timeout(120)

WAIT = 15.0  # hang guard for one awaited event or poll; never a timing assertion


def unique(base: str) -> str:
    return f"{base}-{uuid.uuid4().hex[:8]}"


def path(name: str) -> str:
    return f"{NP}/{name}"


def rv_of(obj: dict[str, Any]) -> int:
    return int(obj["metadata"]["resourceVersion"])


def counter(obj: dict[str, Any]) -> int:
    return int(obj["spec"]["annotations"]["counter"])


async def next_event(q: asyncio.Queue[dict[str, Any]]) -> dict[str, Any]:
    return await asyncio.wait_for(q.get(), WAIT)


async def poll(check: Callable[[], Any], what: str, timeout: float = 30.0, interval: float = 0.05) -> None:
    """Await `check()` (sync or async) until it is truthy, failing with `what` after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        res = check()
        if asyncio.iscoroutine(res):
            res = await res
        if res:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(interval)


@asynccontextmanager
async def bounded_client(server: AggapiServer, total: float = 30.0) -> AsyncIterator[Api]:
    """An Api whose requests fail with a client timeout instead of hanging (watches excepted)."""
    conn = aiohttp.TCPConnector(ssl=client_ssl(server.pki), limit=100)
    async with aiohttp.ClientSession(connector=conn, timeout=aiohttp.ClientTimeout(total=total)) as session:
        yield Api(server.url, session)


async def start(server: AggapiServer) -> None:
    await asyncio.to_thread(server.start)


async def stop(server: AggapiServer) -> None:
    await asyncio.to_thread(server.stop)


async def read_watch_body(api: Api, params: dict[str, str]) -> list[dict[str, Any]]:
    """The whole body of a watch that the server ends by itself (e.g. with an ERROR event)."""
    timeout = aiohttp.ClientTimeout(total=WAIT)
    q = {"watch": "true", **params}
    async with api.session.get(api.base + NP, params=q, timeout=timeout) as r:
        assert r.status == 200, await r.text()
        text = await r.text()
    return [json.loads(line) for line in text.splitlines() if line.strip()]


# ---- 1. optimistic concurrency -------------------------------------------------------------------


async def test_concurrent_read_modify_write_loses_no_update(aggapi: AggapiServer) -> None:
    name = unique("counter")
    writers, increments = 20, 50
    conflicts = 0
    async with api_client(aggapi) as api:
        status, created = await api.post(NP, nodepool(name, annotations={"counter": "0"}))
        assert status == 201, created

        async def writer() -> None:
            nonlocal conflicts
            for _ in range(increments):
                for attempt in itertools.count():
                    status, obj = await api.get(path(name))
                    assert status == 200, obj
                    obj["spec"]["annotations"]["counter"] = str(counter(obj) + 1)
                    status, body = await api.put(path(name), obj)  # carries the read resourceVersion
                    if status == 200:
                        break
                    assert status == 409, body
                    assert body["kind"] == "Status" and body["reason"] == "Conflict", body
                    conflicts += 1
                    # Jittered backoff, as client-go's RetryOnConflict: without it the writers mostly
                    # re-collide and the test measures contention rather than correctness.
                    await asyncio.sleep(random.uniform(0, min(1.0, 0.02 * 2**attempt)))

        await asyncio.gather(*(writer() for _ in range(writers)))
        status, final = await api.get(path(name))
        assert status == 200
        assert counter(final) == writers * increments
        assert final["metadata"]["generation"] == 1 + writers * increments  # every write changed spec
        # With 20 writers racing, some PUTs must have carried a stale resourceVersion; had the server
        # not compared it, the counter could still reach 1000 only by luck, so require conflicts.
        assert conflicts > 0
        status, _ = await api.delete(path(name))
        assert status == 200


# ---- 2. watch resumption across an aggapi restart ------------------------------------------------


async def test_watch_resumes_after_restart_without_missing_or_repeating_events(
    fresh_aggapi: AggapiServer, pki: LabPKI, etcd_server: EtcdServer, tmp_path: Path
) -> None:
    server = fresh_aggapi
    expected: list[tuple[str, str, int]] = []  # (type, name, counter) of every change, in order
    write_rvs: dict[int, int] = {}  # index in `expected` -> resourceVersion the write returned

    async def change(api: Api, op: str, name: str, value: int = 0) -> None:
        if op == "ADDED":
            status, body = await api.post(NP, nodepool(name, annotations={"counter": str(value)}))
            assert status == 201, body
        elif op == "MODIFIED":
            patch = {"spec": {"annotations": {"counter": str(value)}}}
            status, body = await api.patch(path(name), patch)
            assert status == 200, body
        else:
            status, body = await api.get(path(name))
            value = counter(body)
            status, body = await api.delete(path(name))
            assert status == 200, body
        if op != "DELETED":
            write_rvs[len(expected)] = rv_of(body)
        expected.append((op, name, value))

    def summary(ev: dict[str, Any]) -> tuple[str, str, int]:
        obj = ev["object"]
        return ev["type"], obj["metadata"]["name"], counter(obj)

    await start(server)
    async with api_client(server) as api:
        status, listed = await api.get(NP)
        assert status == 200
        async with api.watch(NP, {"resourceVersion": listed["metadata"]["resourceVersion"]}) as q:
            for op, name, value in [
                ("ADDED", "p1", 1),
                ("ADDED", "p2", 1),
                ("ADDED", "p3", 1),
                ("MODIFIED", "p1", 2),
                ("DELETED", "p2", 0),
            ]:
                await change(api, op, name, value)
            seen = [await next_event(q) for _ in expected]
        assert [summary(ev) for ev in seen] == expected
        last_rv = rv_of(seen[-1]["object"])
    n = len(expected)

    await stop(server)
    # While it is down, another aggapi on the same etcd prefix keeps writing.
    other = AggapiServer(pki, etcd_server.client_url, tmp_path / "other", prefix=server.prefix)
    try:
        await start(other)
        async with api_client(other) as api:
            for op, name, value in [
                ("ADDED", "p4", 1),
                ("MODIFIED", "p3", 2),
                ("DELETED", "p1", 0),
                ("MODIFIED", "p4", 2),
            ]:
                await change(api, op, name, value)
    finally:
        await stop(other)

    await start(server)
    async with api_client(server) as api:
        for op, name, value in [("ADDED", "p5", 1), ("MODIFIED", "p5", 2), ("DELETED", "p3", 0)]:
            await change(api, op, name, value)
        want = expected[n:]
        async with api.watch(NP, {"resourceVersion": str(last_rv)}) as q:
            got = [await next_event(q) for _ in want]
            # One more write after the K+M: it must be the very next event (nothing extra in between).
            status, sentinel = await api.post(NP, nodepool("sentinel", annotations={"counter": "9"}))
            assert status == 201, sentinel
            after = await next_event(q)
        assert [summary(ev) for ev in got] == want
        rvs = [rv_of(ev["object"]) for ev in got]
        assert all(a < b for a, b in zip([last_rv, *rvs], rvs, strict=False)), rvs
        for i, ev in enumerate(got, start=n):
            if i in write_rvs:
                assert rv_of(ev["object"]) == write_rvs[i]
        assert summary(after) == ("ADDED", "sentinel", 9)
        assert rv_of(after["object"]) == rv_of(sentinel)


# ---- 3. compaction ---------------------------------------------------------------------------------


async def test_watch_and_exact_list_from_compacted_revision_are_gone(pki: LabPKI, tmp_path: Path) -> None:
    # A private etcd: compacting the session member would cut history other tests may replay.
    etcd = await asyncio.to_thread(start_etcd, tmp_path / "etcd")
    server = AggapiServer(pki, etcd.client_url, tmp_path / "aggapi")
    client = EtcdClient(EtcdConfig((etcd.client_url,)))
    try:
        await start(server)
        async with api_client(server) as api:
            status, first = await api.post(NP, nodepool("c1", annotations={"counter": "0"}))
            assert status == 201
            old_rv = rv_of(first)
            for i in range(1, 4):
                status, body = await api.patch(path("c1"), {"spec": {"annotations": {"counter": str(i)}}})
                assert status == 200, body
            compact_rev = rv_of(body)
            await client.compact(compact_rev, physical=True)

        # Restarted, its watch cache starts at the current revision and no longer holds old events: a watch
        # from before that is replayed from etcd's history, which compaction has cut.
        await stop(server)
        await start(server)
        async with api_client(server) as api:
            status, latest = await api.patch(path("c1"), {"spec": {"annotations": {"counter": "4"}}})
            assert status == 200, latest

            events = await read_watch_body(api, {"resourceVersion": str(old_rv)})
            assert len(events) == 1, events
            assert events[0]["type"] == "ERROR"
            st = events[0]["object"]
            summary = (st["kind"], st["status"], st["code"], st["reason"])
            assert summary == ("Status", "Failure", 410, "Expired")

            # Control: from the revision compacted *to*, older than the cache too, the replay works.
            async with api.watch(NP, {"resourceVersion": str(compact_rev)}) as q:
                ev = await next_event(q)
            assert (ev["type"], counter(ev["object"]), rv_of(ev["object"])) == ("MODIFIED", 4, rv_of(latest))

            params = {"resourceVersion": str(old_rv), "resourceVersionMatch": "Exact"}
            status, body = await api.get(NP, params=params)
            assert status == 410, body
            assert body["kind"] == "Status" and body["reason"] == "Expired"

            # The revision compacted to is still readable: only older ones are gone.
            params = {"resourceVersion": str(compact_rev), "resourceVersionMatch": "Exact"}
            status, body = await api.get(NP, params=params)
            assert status == 200, body
            assert [counter(o) for o in body["items"]] == [3]
    finally:
        await client.close()
        await stop(server)
        await asyncio.to_thread(etcd.stop)


# ---- 4. finalizers ---------------------------------------------------------------------------------


async def test_finalizers_hold_deletion_until_removed(aggapi: AggapiServer) -> None:
    name = unique("fin")
    async with api_client(aggapi) as api:
        obj = nodepool(name)
        obj["metadata"]["finalizers"] = ["example.com/hold"]
        status, created = await api.post(NP, obj)
        assert status == 201, created

        status, body = await api.delete(path(name))
        assert status == 200, body
        assert body["kind"] == "NodePool" and body["metadata"].get("deletionTimestamp"), body
        status, held = await api.get(path(name))
        assert status == 200
        assert held["metadata"].get("deletionTimestamp")
        assert held["metadata"]["finalizers"] == ["example.com/hold"]
        assert held["metadata"]["uid"] == created["metadata"]["uid"]

        add = {"metadata": {"finalizers": ["example.com/hold", "example.com/another"]}}
        status, body = await api.patch(path(name), add)
        assert status == 422, body
        assert body["reason"] == "Invalid"

        async with api.watch(NP, {"resourceVersion": held["metadata"]["resourceVersion"]}) as q:
            status, body = await api.patch(path(name), {"metadata": {"finalizers": None}})
            assert status == 200, body
            while True:
                ev = await next_event(q)
                if ev["object"]["metadata"].get("name") == name and ev["type"] == "DELETED":
                    break
                assert ev["type"] == "MODIFIED", ev  # the finalizer removal itself, before the delete
        status, body = await api.get(path(name))
        assert status == 404, body


# ---- 5. etcd restarted under load --------------------------------------------------------------------


@dataclass
class Follower:
    """Follows a watch, re-watching from the last seen resourceVersion whenever a stream ends."""

    api: Api
    last_rv: int
    values: dict[str, int | None] = field(default_factory=dict)  # name -> last counter (None: deleted)
    rvs: list[int] = field(default_factory=list)
    errors: list[dict[str, Any]] = field(default_factory=list)  # ERROR events, non-200 answers
    broken: list[str] = field(default_factory=list)  # streams that broke instead of ending cleanly
    streams: int = 0

    async def run(self) -> None:
        while True:
            self.streams += 1
            params = {"watch": "true", "resourceVersion": str(self.last_rv), "allowWatchBookmarks": "true"}
            try:
                timeout = aiohttp.ClientTimeout(total=None)
                async with self.api.session.get(self.api.base + NP, params=params, timeout=timeout) as r:
                    if r.status != 200:
                        self.errors.append({"status": r.status, "body": await r.text()})
                    else:
                        async for line in r.content:
                            if line.strip():
                                self.handle(json.loads(line))
            except (aiohttp.ClientError, ConnectionError) as exc:
                self.broken.append(repr(exc))
            await asyncio.sleep(0.2)  # the stream ended: re-watch from the last resourceVersion seen

    def handle(self, ev: dict[str, Any]) -> None:
        if ev["type"] == "ERROR":
            self.errors.append(ev)
            return
        rv = rv_of(ev["object"])
        if ev["type"] != "BOOKMARK":
            self.rvs.append(rv)
            obj = ev["object"]
            name = obj["metadata"]["name"]
            self.values[name] = None if ev["type"] == "DELETED" else counter(obj)
        self.last_rv = max(self.last_rv, rv)


async def test_etcd_restart_under_load(pki: LabPKI, tmp_path: Path) -> None:
    etcd = await asyncio.to_thread(start_etcd, tmp_path / "etcd")
    server = AggapiServer(pki, etcd.client_url, tmp_path / "aggapi")
    clients = 4
    acked: dict[str, int] = {}  # object -> last counter value the server acknowledged
    attempted: dict[str, int] = {}  # object -> last counter value sent (may have committed unacked)
    created: set[str] = set()  # objects whose create was acknowledged
    failures: list[tuple[int, Any]] = []
    hangs: list[str] = []
    done = asyncio.Event()

    async def readyz(api: Api) -> int:
        try:
            async with api.session.get(api.base + "/readyz", timeout=aiohttp.ClientTimeout(total=20)) as r:
                return r.status
        except TimeoutError:
            return -1

    async def loader(api: Api, i: int) -> None:
        name, n, k = f"load-{i}", 0, 0
        while not done.is_set():
            try:
                k += 1
                extra = f"extra-{i}-{k}"
                status, body = await api.post(NP, nodepool(extra, annotations={"counter": "0"}))
                if status == 201:
                    created.add(extra)
                else:
                    failures.append((status, body))
                attempted[name] = n + 1
                status, body = await api.put(path(name), nodepool(name, annotations={"counter": str(n + 1)}))
                if status == 200:
                    n += 1
                    acked[name] = n
                else:
                    failures.append((status, body))
            except TimeoutError:
                hangs.append(name)
            await asyncio.sleep(0.01)

    try:
        await start(server)
        async with bounded_client(server) as api:
            for i in range(clients):
                status, body = await api.post(NP, nodepool(f"load-{i}", annotations={"counter": "0"}))
                assert status == 201, body
                acked[f"load-{i}"] = attempted[f"load-{i}"] = 0
            status, listed = await api.get(NP)
            follower = Follower(api, rv_of(listed))
            async with asyncio.TaskGroup() as tg:
                follow_task = tg.create_task(follower.run(), name="follow")
                loaders = [tg.create_task(loader(api, i), name=f"loader-{i}") for i in range(clients)]
                try:
                    await poll(lambda: all(v >= 3 for v in acked.values()), "writes before the outage")

                    await asyncio.to_thread(etcd.stop)

                    async def is_500() -> bool:
                        return (await readyz(api)) == 500

                    # Readiness, a GET and a LIST during the outage (each waits out the etcd dial timeout).
                    _, got, listed = await asyncio.gather(
                        poll(is_500, "/readyz to fail", interval=0.2), api.get(path("load-0")), api.get(NP)
                    )
                    for status, body in (got, listed):
                        assert 500 <= status < 600 and body["kind"] == "Status", (status, body)
                    await poll(lambda: failures, "a failed write during the outage")

                    await asyncio.to_thread(etcd.start)  # same data dir; aggapi is not restarted

                    async def is_200() -> bool:
                        return (await readyz(api)) == 200

                    await poll(is_200, "/readyz to recover", interval=0.2)
                    before = dict(acked)
                    await poll(
                        lambda: all(acked[k] >= before[k] + 3 for k in before), "writes after recovery"
                    )
                finally:
                    done.set()
                    await asyncio.gather(*loaders)
                # Everything written is seen by the watch (the first stream or its re-watch).
                status, sentinel = await api.post(NP, nodepool("sentinel", annotations={"counter": "1"}))
                assert status == 201, sentinel
                await poll(lambda: follower.last_rv >= rv_of(sentinel), "the watch to see the last write")
                follow_task.cancel()

            assert not hangs, f"requests hung during the outage: {hangs}"
            for status, body in failures:
                assert 500 <= status < 600, (status, body)
                assert isinstance(body, dict) and body.get("kind") == "Status", body
            # The watch opened before the outage either went on or ended cleanly and was resumed.
            assert not follower.errors, follower.errors
            assert not follower.broken, follower.broken
            assert all(a < b for a, b in zip(follower.rvs, follower.rvs[1:], strict=False))

            status, listed = await api.get(NP)
            assert status == 200
            stored = {o["metadata"]["name"]: counter(o) for o in listed["items"]}
            assert created <= stored.keys()
            for i in range(clients):
                name = f"load-{i}"
                # Acknowledged writes survived; at most the one in flight at the cut also committed.
                assert acked[name] <= stored[name] <= attempted[name], (name, acked, stored, attempted)
            # No event went missing across the outage: the watch agrees with storage on every object.
            assert {k: v for k, v in follower.values.items() if v is not None} == stored
    finally:
        await stop(server)
        await asyncio.to_thread(etcd.stop)


# ---- 6. preconditions ------------------------------------------------------------------------------


async def test_preconditions_on_delete_update_and_create(aggapi: AggapiServer) -> None:
    name = unique("pre")
    async with api_client(aggapi) as api:
        status, created = await api.post(NP, nodepool(name, labels={"v": "1"}))
        assert status == 201
        uid, rv1 = created["metadata"]["uid"], created["metadata"]["resourceVersion"]

        def opts(**pre: str) -> dict[str, Any]:
            return {"kind": "DeleteOptions", "apiVersion": "v1", "preconditions": pre}

        status, body = await api.delete(path(name), opts(uid="wrong"))
        assert status == 409, body
        assert body["reason"] == "Conflict"
        assert (await api.get(path(name)))[0] == 200

        # Update without resourceVersion: unconditional.
        status, updated = await api.put(path(name), nodepool(name, labels={"v": "2"}))
        assert status == 200, updated
        assert updated["spec"]["labels"] == {"v": "2"}
        assert rv_of(updated) > int(rv1)

        # Update carrying the stale resourceVersion: conflict, and nothing changes.
        stale = nodepool(name, labels={"v": "3"})
        stale["metadata"]["resourceVersion"] = rv1
        status, body = await api.put(path(name), stale)
        assert status == 409, body
        assert body["reason"] == "Conflict"
        status, current = await api.get(path(name))
        assert current["spec"]["labels"] == {"v": "2"}

        status, body = await api.delete(path(name), opts(uid=uid, resourceVersion=rv1))
        assert status == 409, body
        status, body = await api.delete(
            path(name), opts(uid=uid, resourceVersion=updated["metadata"]["resourceVersion"])
        )
        assert status == 200, body
        assert body["status"] == "Success" and body["details"]["uid"] == uid
        assert (await api.get(path(name)))[0] == 404

        with_rv = nodepool(unique("pre-rv"))
        with_rv["metadata"]["resourceVersion"] = "12345"
        status, body = await api.post(NP, with_rv)
        assert 400 <= status < 500, body
        assert (await api.get(path(with_rv["metadata"]["name"])))[0] == 404


# ---- 7. generation and the status subresource ------------------------------------------------------


async def test_generation_and_status_subresource(aggapi: AggapiServer) -> None:
    name = unique("gen")
    async with api_client(aggapi) as api:
        obj = nodepool(name, labels={"zone": "a"})
        obj["status"] = {"readyNodeNum": 7}
        status, created = await api.post(NP, obj)
        assert status == 201
        assert created["metadata"]["generation"] == 1
        assert "status" not in created or not created["status"].get("readyNodeNum")  # status not settable

        status, body = await api.patch(path(name), {"metadata": {"labels": {"team": "x"}}})
        assert status == 200, body
        # (the pool's type label is the server's: it comes back whatever the patch says)
        assert body["metadata"]["labels"] == {"team": "x", "nodepool.openyurt.io/type": "edge"}
        assert body["metadata"]["generation"] == 1
        assert rv_of(body) > rv_of(created)

        # PUT /status changes status only: the spec change in the same body is ignored.
        whole = body
        whole["status"] = {"readyNodeNum": 3}
        whole["spec"]["labels"] = {"zone": "changed"}
        status, body = await api.put(path(name) + "/status", whole)
        assert status == 200, body
        assert body["status"] == {"readyNodeNum": 3}
        assert body["spec"]["labels"] == {"zone": "a"}
        assert body["metadata"]["generation"] == 1

        patch = {"status": {"unreadyNodeNum": 1}, "spec": {"labels": {"zone": "b"}}}
        status, body = await api.patch(path(name) + "/status", patch)
        assert status == 200, body
        assert body["status"] == {"readyNodeNum": 3, "unreadyNodeNum": 1}
        assert body["spec"]["labels"] == {"zone": "a"}
        assert body["metadata"]["generation"] == 1

        # The main resource ignores status and bumps generation for a spec change.
        whole = body
        whole["status"] = {"readyNodeNum": 99}
        whole["spec"]["labels"] = {"zone": "c"}
        status, body = await api.put(path(name), whole)
        assert status == 200, body
        assert body["spec"]["labels"] == {"zone": "c"}
        assert body["status"] == {"readyNodeNum": 3, "unreadyNodeNum": 1}
        assert body["metadata"]["generation"] == 2

        status, body = await api.patch(path(name), {"status": {"readyNodeNum": 50}})
        assert status == 200, body
        assert body["status"]["readyNodeNum"] == 3
        assert body["metadata"]["generation"] == 2

        status, stored = await api.get(path(name))
        assert stored["spec"]["labels"] == {"zone": "c"}
        assert stored["status"] == {"readyNodeNum": 3, "unreadyNodeNum": 1}
        assert stored["metadata"]["generation"] == 2
        await api.delete(path(name))


# ---- 8. dryRun ---------------------------------------------------------------------------------------


async def test_dry_run_changes_nothing(aggapi: AggapiServer) -> None:
    dry = {"dryRun": "All"}
    async with api_client(aggapi) as api:
        ghost = unique("dry-new")
        status, body = await api.post(NP, nodepool(ghost), params=dry)
        assert status == 201, body
        assert body["metadata"]["name"] == ghost
        assert (await api.get(path(ghost)))[0] == 404

        name = unique("dry")
        status, created = await api.post(NP, nodepool(name, labels={"zone": "a"}))
        assert status == 201

        changed = json.loads(json.dumps(created))
        changed["spec"]["labels"] = {"zone": "b"}
        status, body = await api.put(path(name), changed, params=dry)
        assert status == 200, body
        assert body["spec"]["labels"] == {"zone": "b"}  # the answer shows what would have been stored
        status, body = await api.patch(path(name), {"spec": {"labels": {"zone": "c"}}}, params=dry)
        assert status == 200, body
        assert body["spec"]["labels"] == {"zone": "c"}
        status, body = await api.delete(path(name), params=dry)
        assert status == 200, body

        status, stored = await api.get(path(name))
        assert status == 200
        assert stored == created  # same spec, same resourceVersion: nothing reached etcd
        await api.delete(path(name))


# ---- 9. deletecollection -----------------------------------------------------------------------------


async def test_deletecollection_deletes_exactly_the_matching_objects(aggapi: AggapiServer) -> None:
    run = uuid.uuid4().hex[:8]
    doomed = [unique("dc-a") for _ in range(3)]
    kept = [unique("dc-b") for _ in range(2)]
    unlabelled = unique("dc-none")
    async with api_client(aggapi) as api:
        for name, group in [*((n, "a") for n in doomed), *((n, "b") for n in kept)]:
            obj = nodepool(name)
            obj["metadata"]["labels"] = {"run": run, "group": group}
            assert (await api.post(NP, obj))[0] == 201
        assert (await api.post(NP, nodepool(unlabelled)))[0] == 201

        status, body = await api.delete(NP, params={"labelSelector": f"run={run},group=a"})
        assert status == 200, body
        assert sorted(o["metadata"]["name"] for o in body["items"]) == sorted(doomed)

        status, listed = await api.get(NP, params={"labelSelector": f"run={run}"})
        assert sorted(o["metadata"]["name"] for o in listed["items"]) == sorted(kept)
        for name in doomed:
            assert (await api.get(path(name)))[0] == 404
        assert (await api.get(path(unlabelled)))[0] == 200

        status, body = await api.delete(NP, params={"labelSelector": f"run={run}"})
        assert status == 200
        assert (await api.delete(path(unlabelled)))[0] == 200
