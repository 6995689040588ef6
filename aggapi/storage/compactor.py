"""Periodic etcd compaction, as kube-apiserver does for its own etcd: every interval, compact to the
revision seen one interval ago, so history stays at least one interval deep. Several aggapi replicas
coordinate through a compare on the version of one key, so each interval compacts once."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from aggapi.storage import errors
from aggapi.storage.etcd import Compare, EtcdClient, KeyValue, OpGet, OpPut, RangeResult

log = logging.getLogger(__name__)

# The same key kube-apiserver uses, so an etcd shared with it is compacted by one of them per interval.
COMPACT_KEY = b"compact_rev_key"


async def compact_once(client: EtcdClient, seen_version: int, last_rev: int) -> tuple[int, int]:
    """One round. Returns (version of the coordination key we now know, current revision)."""
    res = await client.txn(
        [Compare(COMPACT_KEY, "version", "==", seen_version)],
        [OpPut(COMPACT_KEY, str(last_rev).encode())],
        [OpGet(COMPACT_KEY)],
    )
    if not res.succeeded:  # another replica compacted this round; follow its count
        got = res.responses[0]
        kv: KeyValue | None = got.kvs[0] if isinstance(got, RangeResult) and got.kvs else None
        return (kv.version if kv else 0), res.revision
    if last_rev > 0:
        try:
            await client.compact(last_rev)
            log.info("compacted etcd to revision %d", last_rev)
        except errors.Compacted:
            pass  # already compacted past it (by hand, or by etcd's own auto-compaction)
    return seen_version + 1, res.revision


async def run_compactor(
    client: EtcdClient, interval: float, sleep: Callable[[float], Awaitable[None]] = asyncio.sleep
) -> None:
    version, rev = 0, 0
    while True:
        await sleep(interval)
        try:
            version, rev = await compact_once(client, version, rev)
        except errors.StorageError as exc:
            log.warning("etcd compaction failed (will retry next interval): %s", exc)
