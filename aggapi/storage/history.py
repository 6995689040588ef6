"""Replay of etcd's MVCC history for a key range: lets a watch resume from a revision the watch cache
no longer holds (e.g. right after aggapi restarted), instead of forcing every client to relist."""

from __future__ import annotations

import asyncio

from aggapi.storage import errors
from aggapi.storage.etcd import EtcdClient, WatchEvent, prefix_end


async def fetch_history(
    client: EtcdClient, prefix: str, after: int, until: int, *, timeout: float = 10.0
) -> list[WatchEvent]:
    """All events under `prefix` with after < revision <= until. Raises Compacted if etcd dropped them.

    `until` must be the revision of an event under `prefix`: the replay is complete when that event
    arrives (a watch delivers its events in revision order). A progress notification cannot end it:
    etcd before 3.5.13/3.4.31 answers a progress request at once with its current revision, even while a
    new watch is still catching up on history (etcd-io/etcd#15220, #17557), which would end the replay
    early and silently drop events.
    """
    if until <= after:
        return []
    pkey = prefix.encode()
    out: list[WatchEvent] = []
    try:
        async with (
            asyncio.timeout(timeout),
            client.watch(pkey, prefix_end(pkey), start_revision=after + 1) as w,
        ):
            async for batch in w:
                out.extend(ev for ev in batch.events if ev.kv.mod_revision <= until)
                if batch.events and batch.events[-1].kv.mod_revision >= until:
                    return out
    except TimeoutError:
        raise errors.Unavailable(f"etcd history replay up to revision {until} timed out") from None
    raise errors.Unavailable("etcd history watch ended early")
