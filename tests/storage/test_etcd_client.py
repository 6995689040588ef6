"""aggapi.storage.etcd against real etcd: KV, txn, watch, compaction, leases, failover, TLS."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from support.etcd import EtcdServer, EtcdTLS, free_port, start_etcd, start_etcd_cluster
from support.tls import make_pki

from aggapi.storage.errors import Compacted, Unavailable
from aggapi.storage.etcd import (
    Compare,
    DeleteResult,
    EtcdClient,
    EtcdConfig,
    EtcdWatch,
    OpDelete,
    OpGet,
    OpPut,
    PutResult,
    RangeResult,
    WatchEvent,
    prefix_end,
)

pytestmark = pytest.mark.timeout(60)

WAIT = 10.0  # hang guard for awaiting watch output; never a timing assertion


def config(
    *endpoints: str, cafile: str | None = None, certfile: str | None = None, keyfile: str | None = None
) -> EtcdConfig:
    return EtcdConfig(endpoints, cafile, certfile, keyfile, dial_timeout=2.0, request_timeout=5.0)


@pytest.fixture
async def client(etcd_server: EtcdServer) -> AsyncIterator[EtcdClient]:
    c = EtcdClient(config(etcd_server.client_url))
    try:
        yield c
    finally:
        await c.close()


@pytest.fixture
def prefix() -> bytes:
    return f"/test/{uuid.uuid4().hex}/".encode()


@pytest.fixture(scope="module")
def scratch_etcd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EtcdServer]:
    """A private member for compaction, which would otherwise cut history shared by the session."""
    server = start_etcd(tmp_path_factory.mktemp("etcd-scratch"))
    try:
        yield server
    finally:
        server.stop()


async def collect(watch: EtcdWatch, until_revision: int) -> list[WatchEvent]:
    events: list[WatchEvent] = []
    async with asyncio.timeout(WAIT):
        async for batch in watch:
            events += batch.events
            if batch.revision >= until_revision:
                return events
    raise AssertionError("watch ended early")


def test_prefix_end() -> None:
    assert prefix_end(b"/a/") == b"/a0"
    assert prefix_end(b"a\xff") == b"b"
    assert prefix_end(b"\xff\xff") == b"\x00"


async def test_put_and_range_by_prefix_limit_and_revision(client: EtcdClient, prefix: bytes) -> None:
    r1 = await client.put(prefix + b"a", b"1")
    await client.put(prefix + b"b", b"2")
    r3 = await client.put(prefix + b"c", b"3")
    assert await client.current_revision() == r3

    page = await client.range(prefix, prefix_end(prefix), limit=2)
    assert [kv.key for kv in page.kvs] == [prefix + b"a", prefix + b"b"]
    assert page.more is True
    assert page.count == 3
    assert page.revision == r3

    r4 = await client.put(prefix + b"a", b"1b")
    (now,) = (await client.range(prefix + b"a")).kvs
    assert (now.value, now.create_revision, now.mod_revision, now.version) == (b"1b", r1, r4, 2)
    (old,) = (await client.range(prefix + b"a", revision=r1)).kvs
    assert (old.value, old.mod_revision, old.version) == (b"1", r1, 1)

    keys = await client.range(prefix, prefix_end(prefix), keys_only=True, serializable=True)
    assert [kv.value for kv in keys.kvs] == [b"", b"", b""]
    counted = await client.range(prefix, prefix_end(prefix), count_only=True)
    assert (counted.kvs, counted.count) == ([], 3)
    assert (await client.range(prefix + b"missing")).kvs == []


async def test_txn_compares_mod_and_create_revision(client: EtcdClient, prefix: bytes) -> None:
    key = prefix + b"obj"
    # create-if-absent
    created = await client.txn([Compare(key, "create", "==", 0)], [OpPut(key, b"v1")], [OpGet(key)])
    assert created.succeeded
    assert created.responses == [PutResult(created.revision, None)]

    again = await client.txn([Compare(key, "create", "==", 0)], [OpPut(key, b"other")], [OpGet(key)])
    assert not again.succeeded
    (current,) = again.responses
    assert isinstance(current, RangeResult)
    assert [(kv.value, kv.mod_revision) for kv in current.kvs] == [(b"v1", created.revision)]

    updated = await client.txn(
        [Compare(key, "mod", "==", created.revision)], [OpPut(key, b"v2", prev_kv=True)], [OpGet(key)]
    )
    assert updated.succeeded
    (put,) = updated.responses
    assert isinstance(put, PutResult) and put.prev_kv is not None
    assert (put.revision, put.prev_kv.value) == (updated.revision, b"v1")

    stale = await client.txn(
        [Compare(key, "mod", "==", created.revision)], [OpPut(key, b"lost")], [OpGet(key)]
    )
    assert not stale.succeeded
    (current,) = stale.responses
    assert isinstance(current, RangeResult)
    assert [(kv.value, kv.mod_revision, kv.version) for kv in current.kvs] == [(b"v2", updated.revision, 2)]

    by_value = await client.txn([Compare(key, "value", "==", b"v2"), Compare(key, "version", ">", 1)], [])
    assert by_value.succeeded
    with pytest.raises(TypeError):
        await client.txn([Compare(key, "mod", "==", b"v2")], [])


async def test_delete_returns_prev_kvs(client: EtcdClient, prefix: bytes) -> None:
    await client.put(prefix + b"a", b"1")
    await client.put(prefix + b"b", b"2")
    await client.put(prefix + b"c", b"3")
    result = await client.txn([], [OpDelete(prefix + b"a", prefix + b"c", prev_kv=True)])
    (deleted,) = result.responses
    assert isinstance(deleted, DeleteResult)
    assert deleted.deleted == 2
    assert [(kv.key, kv.value) for kv in deleted.prev_kvs] == [(prefix + b"a", b"1"), (prefix + b"b", b"2")]
    assert await client.delete_range(prefix, prefix_end(prefix)) == 1
    assert await client.delete_range(prefix + b"a") == 0


async def test_watch_from_past_revision_delivers_exact_events(client: EtcdClient, prefix: bytes) -> None:
    a, b = prefix + b"a", prefix + b"b"
    await client.put(a, b"v1")
    r2 = await client.put(a, b"v2")
    r3 = await client.put(b, b"v1")
    assert await client.delete_range(a) == 1
    r4 = await client.current_revision()
    await client.put(prefix[:-1] + b"-outside", b"x")  # sorts just before the prefix range

    async with client.watch(prefix, prefix_end(prefix), start_revision=r2) as watch:
        events = await collect(watch, r4)

    assert [(e.type, e.kv.key, e.kv.value, e.kv.mod_revision) for e in events] == [
        ("PUT", a, b"v2", r2),
        ("PUT", b, b"v1", r3),
        ("DELETE", a, b"", r4),
    ]
    assert [e.prev_kv.value if e.prev_kv else None for e in events] == [b"v1", None, b"v2"]


async def test_watch_live_events_and_progress_request(client: EtcdClient, prefix: bytes) -> None:
    start = await client.current_revision() + 1
    async with client.watch(prefix, prefix_end(prefix), start_revision=start) as watch:
        rev = await client.put(prefix + b"x", b"1")
        assert [(e.type, e.kv.mod_revision) for e in await collect(watch, rev)] == [("PUT", rev)]

        await client.put(b"/elsewhere/" + prefix, b"moves the store revision")
        current = await client.current_revision()
        await watch.request_progress()
        async with asyncio.timeout(WAIT):
            batch = await anext(aiter(watch))
        assert batch.events == []
        assert batch.revision == current


async def test_compacted_revision_range_and_watch(scratch_etcd: EtcdServer, prefix: bytes) -> None:
    async with asyncio.timeout(WAIT):
        client = EtcdClient(config(scratch_etcd.client_url))
        try:
            key = prefix + b"k"
            r1 = await client.put(key, b"1")
            await client.put(key, b"2")
            r3 = await client.put(key, b"3")
            await client.compact(r3, physical=True)

            with pytest.raises(Compacted):
                await client.range(key, revision=r1)
            assert [kv.value for kv in (await client.range(key, revision=r3)).kvs] == [b"3"]
            with pytest.raises(Compacted):
                await client.compact(r1)

            with pytest.raises(Compacted) as info:
                async with client.watch(key, start_revision=r1) as watch:
                    await anext(aiter(watch))
            assert info.value.compact_revision == r3

            async with client.watch(key, start_revision=r3) as watch:  # the compact revision itself stays
                (event,) = (await anext(aiter(watch))).events
            assert event.kv.value == b"3"
        finally:
            await client.close()


async def test_lease_put_revoke_and_keepalive(client: EtcdClient, prefix: bytes) -> None:
    lease = await client.lease_grant(30)
    await client.put(prefix + b"leased", b"x", lease=lease)
    (kv,) = (await client.range(prefix + b"leased")).kvs
    assert kv.lease == lease

    assert 0 < await client.lease_keepalive_once(lease) <= 30
    await client.lease_revoke(lease)
    assert (await client.range(prefix + b"leased")).kvs == []
    await client.lease_revoke(lease)  # already gone: still fine
    assert await client.lease_keepalive_once(lease) == 0


async def test_cluster_failover_when_connected_member_dies(tmp_path: Path, prefix: bytes) -> None:
    members = start_etcd_cluster(tmp_path)
    client = EtcdClient(config(*(m.client_url for m in members)))
    try:
        rev = await client.put(prefix + b"a", b"1")  # the client starts on the first endpoint
        async with client.watch(prefix, prefix_end(prefix), start_revision=rev) as watch:
            await collect(watch, rev)
            members[0].kill()
            with pytest.raises(Unavailable):
                async with asyncio.timeout(WAIT):
                    async for _ in watch:
                        pass
        for m in members[1:]:
            m.wait_ready()  # a new leader, if the dead member led

        rev2 = await client.put(prefix + b"b", b"2")
        assert [kv.key for kv in (await client.range(prefix, prefix_end(prefix))).kvs] == [
            prefix + b"a",
            prefix + b"b",
        ]
        guarded = await client.txn([Compare(prefix + b"b", "mod", "==", rev2)], [OpDelete(prefix + b"b")])
        assert guarded.succeeded

        async with client.watch(prefix, prefix_end(prefix), start_revision=rev + 1) as watch:
            events = await collect(watch, guarded.revision)
        assert [(e.type, e.kv.key) for e in events] == [("PUT", prefix + b"b"), ("DELETE", prefix + b"b")]
    finally:
        await client.close()
        for m in members:
            m.stop()


async def test_tls_with_client_certificate(tmp_path: Path, prefix: bytes) -> None:
    pki = make_pki(tmp_path / "pki")
    server = start_etcd(tmp_path / "etcd", tls=EtcdTLS(pki.cafile, pki.server_certfile, pki.server_keyfile))
    try:
        assert server.client_url.startswith("https://")
        client = EtcdClient(
            config(
                server.client_url, cafile=pki.cafile, certfile=pki.client_certfile, keyfile=pki.client_keyfile
            )
        )
        try:
            rev = await client.put(prefix + b"k", b"secret")
            assert (await client.range(prefix + b"k")).kvs[0].mod_revision == rev
        finally:
            await client.close()

        untrusted = EtcdClient(config(server.client_url))  # no CA, no client cert: handshake fails
        try:
            with pytest.raises(Unavailable):
                await untrusted.range(prefix)
        finally:
            await untrusted.close()
    finally:
        server.stop()


async def test_unreachable_endpoints_raise_unavailable() -> None:
    client = EtcdClient(
        EtcdConfig(
            endpoints=(f"127.0.0.1:{free_port()}", f"http://127.0.0.1:{free_port()}"),
            dial_timeout=0.5,
            request_timeout=1.0,
        )
    )
    try:
        async with asyncio.timeout(WAIT):  # hang guard: the client gives up within its own timeouts
            with pytest.raises(Unavailable):
                await client.range(b"/x")
            with pytest.raises(Unavailable):
                await client.put(b"/x", b"y")
            with pytest.raises(Unavailable):
                async with client.watch(b"/x", start_revision=1):
                    pass
    finally:
        await client.close()
    with pytest.raises(Unavailable):
        await client.range(b"/x")  # closed
