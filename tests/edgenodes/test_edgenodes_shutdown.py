"""A graceful shutdown of `aggapi serve` is not held up by open edgenodes watches or proxied streams."""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from dataclasses import replace
from pathlib import Path

import aiohttp
import pytest
from edgekit import EN, EdgeEnv, edge_args, eventually, free_port, node_labels, sim_node, unique
from support.aggapi import AggapiServer, api_client


@pytest.mark.slow
async def test_shutdown_ends_watches_and_follow_streams(edge_env: EdgeEnv, tmp_path: Path) -> None:
    sock_dir = Path(tempfile.mkdtemp(prefix="en-", dir="/tmp"))
    port = free_port()
    base = edge_env.aggapi
    kubeconfig = edge_env.devcluster.kubeconfig(tmp_path / "dc.kubeconfig")
    server = AggapiServer(
        base.pki,
        base.etcd_servers,
        tmp_path / "aggapi",
        extra_args=edge_args(edge_env.pki, kubeconfig, port, sock_dir / "egress.sock"),
    )
    await asyncio.to_thread(server.start)
    env = replace(edge_env, aggapi=server, tunnel_port=port)
    name = unique("en-stop")
    try:
        async with sim_node(env, tmp_path, name, labels=node_labels(True)) as node, api_client(server) as api:

            async def connected() -> bool:
                code, obj = await api.get(f"{EN}/{name}")
                return code == 200 and obj["status"]["tunnel"]["state"] == "Connected"

            await eventually(connected, "connected")
            node.sim.append_log("default", "sample", "app", "line\n")
            url = f"{api.base}{EN}/{name}/proxy/containerLogs/default/sample/app?follow=true"
            async with (
                api.watch(EN, {}) as events,
                api.session.get(url, timeout=aiohttp.ClientTimeout(total=60)) as logs,
            ):
                assert await asyncio.wait_for(logs.content.readline(), 10) == b"line\n"
                await asyncio.wait_for(events.get(), 10)
                await asyncio.to_thread(server.stop)  # SIGTERM; SIGKILL after 15 s
                assert server.proc is not None and server.proc.returncode == 0, "shutdown was held up"
                with pytest.raises((aiohttp.ClientError, asyncio.IncompleteReadError, ConnectionError)):
                    while await asyncio.wait_for(logs.content.readline(), 10):
                        pass
                    raise ConnectionError("stream ended")
    finally:
        await asyncio.to_thread(server.stop)
        shutil.rmtree(sock_dir, ignore_errors=True)
