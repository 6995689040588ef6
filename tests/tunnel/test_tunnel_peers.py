"""Replica discovery through aggapi's etcd: replicas find each other, agents link to every replica."""

from __future__ import annotations

import asyncio
import uuid

from support.etcd import EtcdServer
from test_tunnel_ha import _dial_eventually
from tunnelkit import (
    PKI,
    StaticNodes,
    TunnelAgent,
    TunnelServer,
    agent_config,
    eventually,
    running,
    server_config,
    target_server,
)

from aggapi.storage.etcd import EtcdClient, EtcdConfig
from aggapi.tunnel.peers import PeerDiscovery


async def _fast(_: float) -> None:
    await asyncio.sleep(0.05)


async def test_replicas_discover_each_other_and_the_agent_links_to_both(
    tunnel_pki: PKI, node_ip: str, etcd_server: EtcdServer
) -> None:
    prefix = f"/t-peers-{uuid.uuid4().hex[:8]}"
    etcd = EtcdClient(EtcdConfig((etcd_server.client_url,)))
    try:
        async with target_server(node_ip) as (_, port):
            nodes = StaticNodes({"edge-1": {node_ip}})
            a = TunnelServer(server_config(tunnel_pki, allowed_ports=frozenset({port})), nodes)
            b = TunnelServer(server_config(tunnel_pki, allowed_ports=frozenset({port})), nodes)
            async with running(a.run(), "a"), running(b.run(), "b"):
                await a.wait_started()
                await b.wait_started()
                da = PeerDiscovery(etcd, prefix, a.server_id, f"127.0.0.1:{a.port}", a, sleep=_fast, ttl=5)
                db = PeerDiscovery(etcd, prefix, b.server_id, f"127.0.0.1:{b.port}", b, sleep=_fast, ttl=5)
                cfg = agent_config(
                    tunnel_pki, "edge-1", node_ip, [f"127.0.0.1:{a.port}"], allow=((node_ip, port),)
                )
                agent = TunnelAgent(cfg)
                async with (
                    running(da.run(), "disc-a"),
                    running(db.run(), "disc-b"),
                    running(agent.run(), "agent"),
                ):
                    # The agent was only told about A; A learns B from etcd and tells the agent.
                    await _dial_eventually(a, node_ip, port)
                    await _dial_eventually(b, node_ip, port)
                    await eventually(lambda: da.peers == (f"127.0.0.1:{b.port}",), "A knows B")
                    await eventually(lambda: db.peers == (f"127.0.0.1:{a.port}",), "B knows A")
                # Both discoveries stopped and revoked their leases: a fresh sync finds no other replica.
                lease = await da.sync_once(0)
                assert da.peers == ()
                await etcd.lease_revoke(lease)
    finally:
        await etcd.close()
