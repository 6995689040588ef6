"""edgenodes/{name}/proxy/...: the kubelet sim reached through a real tunnel agent, by kubectl and by a
plain client (streaming logs, an exec WebSocket), and nothing reached once the agent is gone."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import aiohttp
from edgekit import EN, EdgeEnv, SimNode, eventually, node_labels, sim_node, unique
from support.aggapi import Api, kubectl

STDIN, STDOUT, STDERR, ERROR, CLOSE = 0, 1, 2, 3, 255


async def _connected(api: Api, node: SimNode) -> None:
    async def ok() -> bool:
        code, obj = await api.get(f"{EN}/{node.name}")
        return code == 200 and obj["status"]["tunnel"]["state"] == "Connected"

    await eventually(ok, f"{node.name} connected")


def _tunnelled(node: SimNode) -> int:
    assert node.agent is not None
    return node.agent.metrics.connections_total


async def test_get_raw_pods_and_healthz_go_through_the_tunnel(
    edge_env: EdgeEnv, api: Api, tmp_path: Path
) -> None:
    name = unique("en-proxy")
    async with sim_node(edge_env, tmp_path, name, labels=node_labels(True)) as node:
        await _connected(api, node)
        before = _tunnelled(node)
        res = await asyncio.to_thread(kubectl, edge_env.kubeconfig, "get", "--raw", f"{EN}/{name}/proxy/pods")
        assert res.returncode == 0, res.stderr
        pods = json.loads(res.stdout)
        assert pods["kind"] == "PodList"
        assert [p["metadata"]["name"] for p in pods["items"]] == ["sample"]
        res = await asyncio.to_thread(
            kubectl, edge_env.kubeconfig, "get", "--raw", f"{EN}/{name}/proxy/healthz"
        )
        assert res.returncode == 0 and res.stdout.strip() == "ok", res.stderr
        assert _tunnelled(node) >= before + 2  # both went through this node's agent

        # Without the agent the kubelet (still listening) is not reachable: there is no other route.
        await node.stop_agent()

        async def disconnected() -> bool:
            _, obj = await api.get(f"{EN}/{name}")
            return obj["status"]["tunnel"]["state"] == "Disconnected"

        await eventually(disconnected, "disconnected")
        code, status = await api.get(f"{EN}/{name}/proxy/healthz")
        assert code == 503, status
        assert status["reason"] == "ServiceUnavailable"
        assert "no tunnel agent is connected" in status["message"]


async def test_kubelet_certificate_is_verified_for_the_internal_ip(
    edge_env: EdgeEnv, api: Api, tmp_path: Path
) -> None:
    name = unique("en-badcert")
    async with sim_node(
        edge_env, tmp_path, name, labels=node_labels(True), kubelet_cert_ips=["10.1.2.3"]
    ) as node:
        await _connected(api, node)
        code, status = await api.get(f"{EN}/{name}/proxy/healthz")
        assert code == 503, status
        assert f"TLS with edge node {name}'s kubelet ({node.address}:10250) failed" in status["message"]


async def test_proxy_of_unknown_or_non_edge_node_is_not_found(
    edge_env: EdgeEnv, api: Api, tmp_path: Path
) -> None:
    code, status = await api.get(f"{EN}/no-such-node/proxy/healthz")
    assert code == 404 and status["details"] == {
        "name": "no-such-node",
        "group": "edge.aggapi.io",
        "kind": "edgenodes",
    }
    cloud = unique("en-cloud")
    async with sim_node(edge_env, tmp_path, cloud, labels=node_labels(False), agent=False):
        code, _ = await api.get(f"{EN}/{cloud}/proxy/healthz")
        assert code == 404


async def test_follow_logs_stream_a_line_appended_later(edge_env: EdgeEnv, api: Api, tmp_path: Path) -> None:
    name = unique("en-logs")
    async with sim_node(edge_env, tmp_path, name, labels=node_labels(True)) as node:
        await _connected(api, node)
        node.sim.append_log("default", "sample", "app", "before\n")
        url = f"{api.base}{EN}/{name}/proxy/containerLogs/default/sample/app?follow=true"
        async with api.session.get(url, timeout=aiohttp.ClientTimeout(total=60)) as resp:
            assert resp.status == 200
            assert resp.headers.get("Transfer-Encoding") == "chunked"
            assert await asyncio.wait_for(resp.content.readline(), 10) == b"before\n"
            node.sim.append_log("default", "sample", "app", "after\n")
            assert await asyncio.wait_for(resp.content.readline(), 10) == b"after\n"
        # The query string reaches the kubelet as sent.
        node.sim.append_log("default", "sample", "app", "third\n")
        async with api.session.get(
            f"{api.base}{EN}/{name}/proxy/containerLogs/default/sample/app?tailLines=1"
        ) as resp:
            assert resp.status == 200 and await resp.text() == "third\n"


async def test_exec_websocket_upgrade_through_the_proxy(edge_env: EdgeEnv, api: Api, tmp_path: Path) -> None:
    name = unique("en-exec")
    async with sim_node(edge_env, tmp_path, name, labels=node_labels(True)) as node:
        await _connected(api, node)
        params = [("command", "sh"), ("command", "-c"), ("command", "cat; echo err >&2; exit 3")]
        params += [("input", "1"), ("output", "1"), ("error", "1")]
        url = f"{api.base}{EN}/{name}/proxy/exec/default/sample/app?{urlencode(params)}"
        async with api.session.ws_connect(url, protocols=("v5.channel.k8s.io",)) as ws:
            assert ws.protocol == "v5.channel.k8s.io"
            await ws.send_bytes(bytes([STDIN]) + b"hello through the tunnel\n")
            await ws.send_bytes(bytes([CLOSE, STDIN]))
            out, err, status = await asyncio.wait_for(_collect(ws), 20)
        assert out == b"hello through the tunnel\n" and err == b"err\n"
        assert status is not None and status["reason"] == "NonZeroExitCode"
        assert status["details"]["causes"] == [{"reason": "ExitCode", "message": "3"}]


async def _collect(ws: aiohttp.ClientWebSocketResponse) -> tuple[bytes, bytes, dict[str, Any] | None]:
    out, err, status = b"", b"", None
    async for msg in ws:
        assert msg.type == aiohttp.WSMsgType.BINARY, msg
        channel, data = msg.data[0], msg.data[1:]
        if channel == STDOUT:
            out += data
        elif channel == STDERR:
            err += data
        elif channel == ERROR and data:
            status = json.loads(data)
    return out, err, status
