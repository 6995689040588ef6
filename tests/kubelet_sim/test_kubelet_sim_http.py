"""The sim's plain HTTPS endpoints, driven directly with the kubelet-client certificate."""

from __future__ import annotations

import asyncio
import re
import ssl

import aiohttp
import pytest
from kubelet_sim_support import Node, SimPKI

from edge.kubelet_sim import NodeIdentity, node_object

TS = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z"


async def test_healthz(node: Node, client: aiohttp.ClientSession) -> None:
    async with client.get(f"{node.url}/healthz") as resp:
        assert resp.status == 200
        assert await resp.text() == "ok"


async def test_client_certificate_required(node: Node, sim_pki: SimPKI) -> None:
    anonymous = ssl.create_default_context(cafile=str(sim_pki.ca_file))  # trusts the sim, has no cert
    async with aiohttp.ClientSession() as s:
        with pytest.raises(aiohttp.ClientError):
            async with s.get(f"{node.url}/healthz", ssl=anonymous) as resp:
                await resp.read()


async def test_serving_cert_is_for_the_node_address(node: Node, sim_pki: SimPKI) -> None:
    # Verification against the CA with the IP as hostname: what kube-apiserver does when dialling.
    _, writer = await asyncio.open_connection(node.identity.address, 10250, ssl=sim_pki.client_context())
    cert = writer.get_extra_info("peercert")
    writer.close()
    assert ("IP Address", node.identity.address) in cert["subjectAltName"]


async def test_pods_lists_the_pods_it_runs(node: Node, client: aiohttp.ClientSession) -> None:
    async with client.get(f"{node.url}/pods") as resp:
        assert resp.status == 200
        body = await resp.json()
    assert body["kind"] == "PodList" and body["apiVersion"] == "v1"
    [pod] = body["items"]
    assert pod["metadata"]["name"] == "sample"
    assert pod["status"]["phase"] == "Running"

    node.sim.set_pods([])
    async with client.get(f"{node.url}/pods") as resp:
        assert (await resp.json())["items"] == []


async def test_unknown_path_is_404(node: Node, client: aiohttp.ClientSession) -> None:
    async with client.get(f"{node.url}/nope") as resp:
        assert resp.status == 404


async def _logs(
    client: aiohttp.ClientSession, node: Node, query: str, container: str = "app"
) -> tuple[int, str]:
    async with client.get(f"{node.url}/containerLogs/default/sample/{container}?{query}") as resp:
        return resp.status, await resp.text()


async def test_container_logs_options(node: Node, client: aiohttp.ClientSession) -> None:
    for line in ("one", "two", "three"):
        node.sim.append_log("default", "sample", "app", line + "\n")
    node.sim.append_log("default", "sample", "app", "oops\n", stream="stderr")

    assert await _logs(client, node, "") == (200, "one\ntwo\nthree\noops\n")
    assert await _logs(client, node, "tailLines=2") == (200, "three\noops\n")
    assert await _logs(client, node, "tailLines=0") == (200, "")
    assert await _logs(client, node, "limitBytes=6") == (200, "one\ntw")
    assert await _logs(client, node, "stream=Stderr") == (200, "oops\n")
    assert await _logs(client, node, "sinceSeconds=3600") == (200, "one\ntwo\nthree\noops\n")
    assert await _logs(client, node, "sinceTime=2999-01-01T00:00:00Z") == (200, "")

    status, text = await _logs(client, node, "timestamps=true&tailLines=1")
    assert status == 200 and re.fullmatch(rf"{TS} oops\n", text), text

    status, text = await _logs(client, node, "previous=true")
    assert status == 400 and "previous terminated container" in text
    assert (await _logs(client, node, "tailLines=-1"))[0] == 400
    assert await _logs(client, node, "", container="sidecar") == (200, "")
    assert (await _logs(client, node, "", container="ghost"))[0] == 404
    async with client.get(f"{node.url}/containerLogs/default/ghost/app") as resp:
        assert resp.status == 404


async def test_partial_lines_are_joined(node: Node, client: aiohttp.ClientSession) -> None:
    node.sim.append_log("default", "sample", "app", "no newline yet")
    node.sim.append_log("default", "sample", "app", ", done\n")
    assert await _logs(client, node, "") == (200, "no newline yet, done\n")


async def test_follow_streams_lines_appended_later(node: Node, client: aiohttp.ClientSession) -> None:
    node.sim.append_log("default", "sample", "app", "before\n")
    async with client.get(f"{node.url}/containerLogs/default/sample/app?follow=true") as resp:
        assert resp.status == 200
        assert await asyncio.wait_for(resp.content.readline(), 10) == b"before\n"
        node.sim.append_log("default", "sample", "app", "after\n")
        assert await asyncio.wait_for(resp.content.readline(), 10) == b"after\n"
        # A writer that is not the sim (a test, another process) is followed just the same.
        node.sim.append_log("default", "sample", "app", "third\n")
        assert await asyncio.wait_for(resp.content.readline(), 10) == b"third\n"


async def test_follow_ends_when_the_client_leaves(node: Node, client: aiohttp.ClientSession) -> None:
    resp = await client.get(f"{node.url}/containerLogs/default/sample/app?follow=true")
    assert resp.status == 200
    resp.close()  # drops the connection
    for _ in range(200):
        if not node.sim._sessions:
            break
        await asyncio.sleep(0.02)
    assert not node.sim._sessions


def test_node_object() -> None:
    obj = node_object(NodeIdentity("edge-1", "127.0.1.9"), labels={"openyurt.io/is-edge-worker": "true"})
    assert obj["kind"] == "Node" and obj["metadata"]["name"] == "edge-1"
    assert {"type": "InternalIP", "address": "127.0.1.9"} in obj["status"]["addresses"]
    assert obj["status"]["daemonEndpoints"] == {"kubeletEndpoint": {"Port": 10250}}
    [ready] = obj["status"]["conditions"]
    assert (ready["type"], ready["status"]) == ("Ready", "True")
    assert obj["metadata"]["labels"]["openyurt.io/is-edge-worker"] == "true"
