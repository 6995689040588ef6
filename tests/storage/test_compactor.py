"""etcd compaction as kube-apiserver runs it: one compaction per interval across replicas."""

from __future__ import annotations

from pathlib import Path

import pytest
from support.etcd import start_etcd

from aggapi.storage import errors
from aggapi.storage.compactor import compact_once
from aggapi.storage.etcd import EtcdClient, EtcdConfig


async def test_replicas_compact_once_per_round_to_the_previous_rounds_revision(tmp_path: Path) -> None:
    server = start_etcd(tmp_path / "etcd")  # private: compaction would cut the shared etcd's history
    client = EtcdClient(EtcdConfig((server.client_url,)))
    try:
        first = await client.put(b"/c/a", b"1")
        # Round 1: replica A wins and records the current revision; nothing is compacted yet.
        va, rev_a = await compact_once(client, 0, 0)
        assert va == 1
        # Replica B lost the same round: it learns the count and compacts nothing.
        vb, _ = await compact_once(client, 0, 0)
        assert vb == 1
        assert (await client.range(b"/c/a", revision=first)).kvs[0].value == b"1"
        await client.put(b"/c/a", b"2")
        # Round 2: whoever runs it compacts to the revision recorded one round earlier.
        vb, _ = await compact_once(client, vb, rev_a)
        assert vb == 2
        with pytest.raises(errors.Compacted):
            await client.range(b"/c/a", revision=first)
        assert (await client.range(b"/c/a")).kvs[0].value == b"2"
        # A's next attempt with its stale count loses and compacts nothing more.
        va, _ = await compact_once(client, va, rev_a)
        assert va == 2
    finally:
        await client.close()
        server.stop()
