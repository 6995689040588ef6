"""Replica discovery for the tunnel: each aggapi replica publishes the address agents can reach it at
under a lease in aggapi's etcd, and tells its agents about the others. Agents then keep a link to every
replica, so a request landing on any replica finds the node's agent (no static --tunnel-peer list to
keep in sync with a rolling Deployment)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Protocol

from aggapi.storage import errors
from aggapi.storage.etcd import EtcdClient, prefix_end

log = logging.getLogger(__name__)


class PeerSink(Protocol):
    def set_peers(self, peers: Sequence[str]) -> None: ...


class PeerDiscovery:
    def __init__(
        self,
        client: EtcdClient,
        prefix: str,
        server_id: str,
        advertise: str,
        sink: PeerSink,
        *,
        static: Sequence[str] = (),
        ttl: int = 15,
        interval: float = 5.0,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._client = client
        self._dir = f"{prefix.rstrip('/')}/aggapi.internal/tunnel-peers/".encode()
        self._key = self._dir + server_id.encode()
        self._advertise = advertise
        self._sink = sink
        self._static = tuple(static)
        self._ttl = ttl
        self._interval = interval
        self._sleep = sleep
        self.peers: tuple[str, ...] = tuple(static)

    async def sync_once(self, lease: int) -> int:
        """Publish ourselves (a new lease when the old one lapsed), adopt the others; returns the lease."""
        if lease and await self._client.lease_keepalive_once(lease) <= 0:
            lease = 0
        if not lease:
            lease = await self._client.lease_grant(self._ttl)
            await self._client.put(self._key, self._advertise.encode(), lease=lease)
        res = await self._client.range(self._dir, prefix_end(self._dir))
        found = {kv.value.decode() for kv in res.kvs if kv.key != self._key}
        peers = tuple(sorted(found.union(self._static) - {self._advertise}))
        if peers != self.peers:
            log.info("tunnel replicas: %s", ", ".join(peers) or "none besides this one")
            self.peers = peers
            self._sink.set_peers(peers)
        return lease

    async def run(self) -> None:
        lease = 0
        try:
            while True:
                try:
                    lease = await self.sync_once(lease)
                except errors.StorageError as exc:
                    log.warning("tunnel replica discovery: %s (retrying)", exc)
                    lease = 0
                await self._sleep(self._interval)
        finally:
            if lease:  # leave at once instead of lingering until the lease expires
                with contextlib.suppress(errors.StorageError, asyncio.CancelledError):
                    async with asyncio.timeout(2):
                        await self._client.lease_revoke(lease)
