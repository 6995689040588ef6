"""edgenodes through a real `aggapi serve`: Node objects in the devcluster, real tunnel agents and kubelet
sims on 127.0.1.N, seen with kubectl and with a plain client."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

import pytest
from edgekit import EN, EdgeEnv, eventually, node_labels, sim_node, unique
from support.aggapi import KUBECTL, Api, kubectl


async def _kubectl(env: EdgeEnv, *args: str) -> str:
    res = await asyncio.to_thread(kubectl, env.kubeconfig, *args)
    assert res.returncode == 0, f"kubectl {' '.join(args)}: {res.stderr}"
    return res.stdout


async def _tunnel_state(api: Api, name: str) -> str | None:
    code, obj = await api.get(f"{EN}/{name}")
    return obj["status"]["tunnel"]["state"] if code == 200 else None


async def test_kubectl_get_shows_columns_and_connected(edge_env: EdgeEnv, api: Api, tmp_path: Path) -> None:
    edge, cloud = unique("en-edge"), unique("en-cloud")
    async with (
        sim_node(edge_env, tmp_path, edge, labels=node_labels(True, pool="hangzhou")) as node,
        sim_node(edge_env, tmp_path, cloud, labels=node_labels(False), agent=False),
    ):

        async def connected() -> bool:
            return await _tunnel_state(api, edge) == "Connected"

        await eventually(connected, "edge node shows its tunnel Connected")
        out = await _kubectl(edge_env, "get", "edgenodes", edge)
        header, row = out.splitlines()
        assert header.split() == ["NAME", "POOL", "TUNNEL", "READY", "HEALTH", "AUTONOMY", "AGE"]
        assert row.split()[:4] == [edge, "hangzhou", "Connected", "True"]

        names = (await _kubectl(edge_env, "get", "en", "-o", "name")).split()
        assert f"edgenode.edge.aggapi.io/{edge}" in names
        assert f"edgenode.edge.aggapi.io/{cloud}" not in names  # not an edge node
        code, status = await api.get(f"{EN}/{cloud}")
        assert code == 404 and status["reason"] == "NotFound"

        code, obj = await api.get(f"{EN}/{edge}")
        assert code == 200
        assert obj["kind"] == "EdgeNode" and obj["apiVersion"] == "edge.aggapi.io/v1alpha1"
        assert obj["spec"] == {"nodeName": edge, "pool": "hangzhou"}
        st = obj["status"]
        assert st["ready"] == "True" and st["kubeletPort"] == 10250
        assert {"type": "InternalIP", "address": node.address} in st["addresses"]
        assert st["tunnel"]["connected"] is True
        assert st["tunnel"]["addresses"] == [node.address]
        assert st["tunnel"]["agentVersion"]
        assert st["tunnel"]["connectedSince"].endswith("Z")
        assert obj["metadata"]["labels"]["apps.openyurt.io/nodepool"] == "hangzhou"

        # Label selectors work on the Node's labels; the short name and the category too.
        sel = await _kubectl(edge_env, "get", "en", "-l", "apps.openyurt.io/nodepool=hangzhou", "-o", "name")
        assert sel.split() == [f"edgenode.edge.aggapi.io/{edge}"]
        assert (
            f"edgenode.edge.aggapi.io/{edge}"
            in (await _kubectl(edge_env, "get", "edge", "-o", "name")).split()
        )


async def test_agent_stop_flips_tunnel_and_watch_sees_modified(
    edge_env: EdgeEnv, api: Api, tmp_path: Path
) -> None:
    name = unique("en-watch")
    async with sim_node(edge_env, tmp_path, name, labels=node_labels(True)) as node:
        await eventually(lambda: _is(api, name, "Connected"), "connected")
        code, listed = await api.get(EN, params={"fieldSelector": f"metadata.name={name}"})
        assert code == 200 and [i["metadata"]["name"] for i in listed["items"]] == [name]
        rv = listed["metadata"]["resourceVersion"]
        params = {"fieldSelector": f"metadata.name={name}", "resourceVersion": rv}
        async with api.watch(EN, params) as events:
            await node.stop_agent()
            ev = await _next(events)
            assert ev["type"] == "MODIFIED"
            assert ev["object"]["status"]["tunnel"] == {"connected": False, "state": "Disconnected"}
            assert int(ev["object"]["metadata"]["resourceVersion"]) > int(rv)
            node.start_agent()
            ev = await _next(events)
            assert ev["type"] == "MODIFIED" and ev["object"]["status"]["tunnel"]["state"] == "Connected"
            # A change of the Node (here: it leaves the edge) is an event too.
            edge_env.devcluster.admin().request(
                "PATCH",
                f"/api/v1/nodes/{name}",
                {"metadata": {"labels": {"openyurt.io/is-edge-worker": None}}},
                headers={"Content-Type": "application/merge-patch+json"},
            )
            ev = await _next(events)
            assert ev["type"] == "DELETED" and ev["object"]["metadata"]["name"] == name
        out = await _kubectl(edge_env, "get", "en", name, "--ignore-not-found", "-o", "name")
        assert out.strip() == ""


async def test_kubectl_get_watch_shows_the_tunnel_flip(edge_env: EdgeEnv, api: Api, tmp_path: Path) -> None:
    name = unique("en-kw")
    async with sim_node(edge_env, tmp_path, name, labels=node_labels(True, pool="w1")) as node:
        await eventually(lambda: _is(api, name, "Connected"), "connected")
        proc = await asyncio.create_subprocess_exec(
            str(KUBECTL),
            "get",
            "edgenodes",
            name,
            "--watch",
            "--output-watch-events",
            "--no-headers",
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env={**os.environ, "KUBECONFIG": str(edge_env.kubeconfig), "HOME": str(tmp_path)},
        )
        assert proc.stdout is not None
        try:
            first = (await asyncio.wait_for(proc.stdout.readline(), 20)).decode().split()
            assert first[:4] == ["ADDED", name, "w1", "Connected"]
            await node.stop_agent()
            line = (await asyncio.wait_for(proc.stdout.readline(), 20)).decode().split()
            assert line[:4] == ["MODIFIED", name, "w1", "Disconnected"]
        finally:
            proc.kill()
            await proc.wait()


async def test_table_and_partial_object_metadata(edge_env: EdgeEnv, api: Api, tmp_path: Path) -> None:
    name = unique("en-tbl")
    async with sim_node(edge_env, tmp_path, name, labels=node_labels(True, pool="p1"), agent=False):
        await eventually(lambda: _exists(api, name), "listed")
        table_accept = "application/json;as=Table;v=v1;g=meta.k8s.io"
        code, table = await api.get(f"{EN}/{name}", headers={"Accept": table_accept})
        assert code == 200 and table["kind"] == "Table"
        columns = ["Name", "Pool", "Tunnel", "Ready", "Health", "Autonomy", "Age"]
        assert [c["name"] for c in table["columnDefinitions"]] == columns
        assert table["rows"][0]["cells"][:4] == [name, "p1", "Disconnected", "True"]
        partial = "application/json;as=PartialObjectMetadataList;v=v1;g=meta.k8s.io"
        code, plist = await api.get(
            EN, headers={"Accept": partial}, params={"labelSelector": "apps.openyurt.io/nodepool=p1"}
        )
        assert code == 200 and plist["kind"] == "PartialObjectMetadataList"
        assert [i["metadata"]["name"] for i in plist["items"]] == [name]
        assert "spec" not in plist["items"][0]


async def test_watch_from_a_foreign_resource_version_is_gone(edge_env: EdgeEnv, api: Api) -> None:
    async with api.watch(EN, {"resourceVersion": "123456789"}) as events:
        ev = await _next(events)
    assert ev["type"] == "ERROR" and ev["object"]["code"] == 410
    assert "not issued by this aggapi" in ev["object"]["message"]


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        (
            "POST",
            EN,
            {"apiVersion": "edge.aggapi.io/v1alpha1", "kind": "EdgeNode", "metadata": {"name": "x"}},
        ),
        (
            "PUT",
            f"{EN}/x",
            {"apiVersion": "edge.aggapi.io/v1alpha1", "kind": "EdgeNode", "metadata": {"name": "x"}},
        ),
        ("PATCH", f"{EN}/x", {"metadata": {"labels": {"a": "b"}}}),
        ("DELETE", f"{EN}/x", None),
        ("DELETE", EN, None),
    ],
)
async def test_writes_are_method_not_allowed(api: Api, method: str, path: str, body: Any) -> None:
    ctype = "application/merge-patch+json" if method == "PATCH" else "application/json"
    code, status = await api.request(method, path, body, content_type=ctype)
    assert code == 405, status
    assert status["kind"] == "Status" and status["reason"] == "MethodNotAllowed"


async def test_discovery_and_openapi_show_edgenodes(api: Api) -> None:
    code, arl = await api.get("/apis/edge.aggapi.io/v1alpha1")
    assert code == 200
    by_name = {r["name"]: r for r in arl["resources"]}
    en = by_name["edgenodes"]
    assert en["kind"] == "EdgeNode" and en["shortNames"] == ["en"] and en["categories"] == ["edge"]
    assert sorted(en["verbs"]) == ["get", "list", "watch"]
    assert sorted(by_name["edgenodes/proxy"]["verbs"]) == ["create", "delete", "get", "patch", "update"]
    code, v3 = await api.get("/openapi/v3/apis/edge.aggapi.io/v1alpha1")
    assert code == 200
    paths = v3["paths"]
    assert "/apis/edge.aggapi.io/v1alpha1/edgenodes/{name}/proxy/{path}" in paths
    assert "post" not in paths["/apis/edge.aggapi.io/v1alpha1/edgenodes"]


async def test_announced_address_not_on_the_node_is_rejected(
    edge_env: EdgeEnv, api: Api, tmp_path: Path
) -> None:
    name = unique("en-addr")
    async with sim_node(edge_env, tmp_path, name, labels=node_labels(True), agent=False) as node:
        node.start_agent(addresses=(node.address, "10.99.0.7"))

        async def shown() -> bool:
            code, obj = await api.get(f"{EN}/{name}")
            return code == 200 and obj["status"]["tunnel"]["state"] == "Connected"

        await eventually(shown, "connected")
        _, obj = await api.get(f"{EN}/{name}")
        assert obj["status"]["tunnel"]["addresses"] == [node.address]
        assert obj["status"]["tunnel"]["rejectedAddresses"] == ["10.99.0.7"]


async def _exists(api: Api, name: str) -> bool:
    return (await api.get(f"{EN}/{name}"))[0] == 200


async def _is(api: Api, name: str, state: str) -> bool:
    return await _tunnel_state(api, name) == state


async def _next(events: asyncio.Queue[dict[str, Any]], timeout: float = 20) -> dict[str, Any]:
    while True:
        ev = await asyncio.wait_for(events.get(), timeout)
        if ev["type"] != "BOOKMARK":
            return ev
