"""Replay of etcd's MVCC history for a key range: lets a watch resume from a revision the watch cache
no longer holds (e.g. right after aggapi restarted), instead of forcing every client to relist."""

from __future__ import annotations

import asyncio
import contextlib

from aggapi.storage import errors
from aggapi.storage.etcd import EtcdClient, WatchBatch, WatchEvent, prefix_end

# etcd answers a progress request only once the watcher has caught up, so ask again while idle.
_IDLE_PROBE = 0.1


async def fetch_history(
    client: EtcdClient, prefix: str, after: int, until: int, *, timeout: float = 10.0
) -> list[WatchEvent]:
    """All events under `prefix` with after < revision <= until. Raises Compacted if etcd dropped them."""
    if until <= after:
        return []
    pkey = prefix.encode()
    out: list[WatchEvent] = []
    queue: asyncio.Queue[WatchBatch] = asyncio.Queue()
    async with asyncio.timeout(timeout), client.watch(pkey, prefix_end(pkey), start_revision=after + 1) as w:

        async def pump() -> None:
            async for batch in w:
                await queue.put(batch)

        # Structured: the reader is cancelled and awaited before we leave, whatever happens.
        reader = asyncio.create_task(pump(), name=f"history:{prefix}")
        try:
            while True:
                try:
                    batch = await asyncio.wait_for(queue.get(), _IDLE_PROBE)
                except TimeoutError:
                    if reader.done():
                        reader.result()  # re-raises Compacted / Unavailable
                        raise errors.Unavailable("etcd history watch ended early") from None
                    await w.request_progress()
                    continue
                if not batch.events:
                    if batch.revision >= until:
                        break
                    continue
                out.extend(ev for ev in batch.events if ev.kv.mod_revision <= until)
                if batch.events[-1].kv.mod_revision >= until:
                    break
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader
    return out
