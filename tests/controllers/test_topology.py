"""nodepools/{name}/topology through `kubectl get --raw`: the pool's nodes (readiness, addresses, tunnel,
autonomy) and the in-pool endpoints of Services annotated openyurt.io/topologyKeys."""

from __future__ import annotations

import json
import uuid

from npkit import POOL_LABEL, NPEnv, delete_node, eventually, make_node, pool_status, set_ready
from support.aggapi import NP, kubectl, nodepool


def test_topology_get_raw(np_env: NPEnv) -> None:
    env = np_env
    tag = uuid.uuid4().hex[:6]
    pool, a, b, out = f"np-topo-{tag}", f"n-ta-{tag}", f"n-tb-{tag}", f"n-to-{tag}"
    svc, plain = f"svc-{tag}", f"plain-{tag}"
    assert env.agg.request("POST", NP, nodepool(pool))[0] == 201
    try:
        make_node(
            env,
            a,
            "127.0.3.31",
            {POOL_LABEL: pool},
            metadata={"annotations": {"node.openyurt.io/autonomy-duration": "0"}},
        )
        make_node(env, b, "127.0.3.32", {POOL_LABEL: pool})
        make_node(env, out, "127.0.3.33", {})
        set_ready(env, b, False)
        for name, annotations in ((svc, {"openyurt.io/topologyKeys": "openyurt.io/nodepool"}), (plain, {})):
            body = {
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": {"name": name, "namespace": "default", "annotations": annotations},
                "spec": {"ports": [{"port": 80}]},
            }
            env.dc.apply("/api/v1/namespaces/default/services", body)
            eps = {
                "apiVersion": "discovery.k8s.io/v1",
                "kind": "EndpointSlice",
                "metadata": {
                    "name": f"{name}-1",
                    "namespace": "default",
                    "labels": {"kubernetes.io/service-name": name},
                },
                "addressType": "IPv4",
                "endpoints": [
                    {"addresses": ["10.0.0.1"], "nodeName": a, "conditions": {"ready": True}},
                    {"addresses": ["10.0.0.2"], "nodeName": out, "conditions": {"ready": True}},
                    {"addresses": ["10.0.0.3"], "nodeName": b, "conditions": {"ready": False}},
                ],
            }
            env.dc.apply("/apis/discovery.k8s.io/v1/namespaces/default/endpointslices", eps)
        eventually(lambda: pool_status(env, pool).get("unreadyNodeNum") == 1, "pool sees both nodes")

        res = kubectl(env.kubeconfig, "get", "--raw", f"{NP}/{pool}/topology")
        assert res.returncode == 0, res.stderr
        topo = json.loads(res.stdout)
        assert topo["kind"] == "NodePoolTopology" and topo["metadata"]["name"] == pool
        assert topo["pool"]["type"] == "Edge"
        nodes = {n["name"]: n for n in topo["nodes"]}
        assert set(nodes) == {a, b}
        assert nodes[a]["ready"] == "True" and nodes[b]["ready"] == "False"
        assert {"type": "InternalIP", "address": "127.0.3.31"} in nodes[a]["addresses"]
        assert nodes[a]["tunnel"] == "Disconnected"  # no agents in this test
        assert nodes[a]["autonomyDuration"] == "0" and "autonomyDuration" not in nodes[b]
        services = {(s["namespace"], s["name"]): s for s in topo["services"]}
        assert (("default", plain)) not in services  # not annotated
        mine = services[("default", svc)]
        assert mine["topologyKeys"] == "openyurt.io/nodepool"
        assert sorted((e["nodeName"], e["addresses"], e["ready"]) for e in mine["endpoints"]) == sorted(
            [(a, ["10.0.0.1"], True), (b, ["10.0.0.3"], False)]
        )

        # Read-only; unknown pools are 404.
        assert env.agg.request("PUT", f"{NP}/{pool}/topology", {})[0] == 405
        assert env.agg.get(f"{NP}/no-such-{tag}/topology")[0] == 404
    finally:
        for name in (a, b, out):
            delete_node(env, name)
        for name in (svc, plain):
            env.dc.request("DELETE", f"/api/v1/namespaces/default/services/{name}")
            env.dc.request("DELETE", f"/apis/discovery.k8s.io/v1/namespaces/default/endpointslices/{name}-1")
        env.agg.request("DELETE", f"{NP}/{pool}")
