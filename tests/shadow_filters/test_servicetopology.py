"""servicetopology on realistic objects: which endpoints kube-proxy/coredns on edge-a1 get to see."""

from __future__ import annotations

import copy
import logging
from typing import Any

import pytest
from filterkit import (
    ALL_IPS,
    ME,
    cluster_node,
    endpoints,
    endpointslice,
    full_index,
    node,
    nodepool,
    request,
    service,
    slice_ips,
    subset_ips,
)

from edge.shadow.filters import FilterRequest, FiltersConfig, ServiceTopologyFilter, TopologyIndex

HANGZHOU = {"10.0.1.1", "10.0.1.2"}
ZONE_1 = {"10.0.1.1", "10.0.2.1", "10.0.9.1"}


def run(index: TopologyIndex, obj: dict[str, Any], **kw: Any) -> dict[str, Any]:
    f = ServiceTopologyFilter(ME, index, **kw)
    before = copy.deepcopy(obj)
    out = f.apply(request(), obj)
    assert obj == before, "the cached object must not be mutated"
    assert out is not None
    return out


@pytest.mark.parametrize(
    ("keys", "expected"),
    [
        ("kubernetes.io/hostname", {"10.0.1.1"}),
        ("openyurt.io/nodepool", HANGZHOU),
        ("kubernetes.io/zone", HANGZHOU),  # OpenYurt's meaning: the NodePool
        ("topology.kubernetes.io/zone", ZONE_1),
        (" openyurt.io/nodepool ", HANGZHOU),
    ],
)
def test_endpointslice_cut_to_host_pool_zone(keys: str, expected: set[str]) -> None:
    out = run(full_index(topology_keys=keys), endpointslice())
    assert slice_ips(out) == expected
    assert out["ports"] == endpointslice()["ports"] and out["metadata"] == endpointslice()["metadata"]


def test_zone_key_as_real_zone_when_configured() -> None:
    out = run(full_index(topology_keys="kubernetes.io/zone"), endpointslice(), zone_key_is_nodepool=False)
    assert slice_ips(out) == ZONE_1


def test_zone_falls_back_to_node_label_when_endpoint_has_no_zone() -> None:
    out = run(full_index(topology_keys="topology.kubernetes.io/zone"), endpointslice(with_zone=False))
    assert slice_ips(out) == ZONE_1
    # Only the own Node cached: the other endpoints' zones are unknown, so only the local one stays.
    index = full_index(all_nodes=False, topology_keys="topology.kubernetes.io/zone")
    assert slice_ips(run(index, endpointslice(with_zone=False))) == {"10.0.1.1"}


def test_endpoint_zone_field_wins_over_node_label() -> None:
    es = endpointslice()
    es["endpoints"][3]["zone"] = "zone-1"  # edge-b2's endpoint says zone-1, its Node says zone-2
    out = run(full_index(topology_keys="topology.kubernetes.io/zone"), es)
    assert slice_ips(out) == ZONE_1 | {"10.0.2.2"}


def test_pool_members_from_status_nodes_when_only_own_node_is_cached() -> None:
    out = run(full_index(all_nodes=False), endpointslice())
    assert slice_ips(out) == HANGZHOU


def test_own_pool_from_nodepool_status_when_own_node_not_cached() -> None:
    index = full_index(all_nodes=False)
    index.delete("Node", cluster_node(ME))
    assert slice_ips(run(index, endpointslice())) == HANGZHOU


def test_node_label_is_the_truth_over_stale_status_nodes() -> None:
    index = full_index()
    # edge-a2 moved to beijing; the pool's status.nodes has not caught up yet.
    index.upsert("Node", node("edge-a2", "beijing", "zone-2"))
    # edge-b1 joined hangzhou; status.nodes not updated either.
    index.upsert("Node", node("edge-b1", "hangzhou", "zone-1"))
    assert slice_ips(run(index, endpointslice())) == {"10.0.1.1", "10.0.2.1"}


def test_pool_without_status_nodes_uses_node_labels() -> None:
    index = full_index()
    index.upsert("NodePool", nodepool("hangzhou", None))  # just created; controller not there yet
    assert slice_ips(run(index, endpointslice())) == HANGZHOU
    # ...and with only the own Node known, nothing else can be placed in the pool.
    index2 = full_index(all_nodes=False)
    index2.upsert("NodePool", nodepool("hangzhou", None))
    assert slice_ips(run(index2, endpointslice())) == {"10.0.1.1"}


def test_no_annotation_or_unknown_service_passes_the_same_object() -> None:
    es = endpointslice()
    assert (
        ServiceTopologyFilter(ME, full_index(topology_keys=None), zone_key_is_nodepool=True).apply(
            request(), es
        )
        is es
    )
    index = full_index()
    index.delete("Service", service("web", None))
    assert ServiceTopologyFilter(ME, index).apply(request(), es) is es
    other = endpointslice("api")  # its Service "api" is not known either
    assert ServiceTopologyFilter(ME, full_index()).apply(request(), other) is other


def test_slice_without_service_label_passes() -> None:
    es = endpointslice()
    del es["metadata"]["labels"]["kubernetes.io/service-name"]
    assert ServiceTopologyFilter(ME, full_index()).apply(request(), es) is es


def test_nothing_left_gives_an_empty_list() -> None:
    es = endpointslice()
    es["endpoints"] = [ep for ep in es["endpoints"] if ep.get("nodeName") != ME]
    out = run(full_index(topology_keys="kubernetes.io/hostname"), es)
    assert out["endpoints"] == []
    assert out["metadata"]["name"] == es["metadata"]["name"]


def test_preference_list_falls_through_to_next_key() -> None:
    keys = "kubernetes.io/hostname, openyurt.io/nodepool"
    es = endpointslice()
    assert slice_ips(run(full_index(topology_keys=keys), es)) == {"10.0.1.1"}  # local endpoint exists
    es["endpoints"] = [ep for ep in es["endpoints"] if ep.get("nodeName") != ME]
    assert slice_ips(run(full_index(topology_keys=keys), es)) == {"10.0.1.2"}  # none local: the pool
    es["endpoints"] = [ep for ep in es["endpoints"] if ep.get("nodeName") != "edge-a2"]
    assert run(full_index(topology_keys=keys), es)["endpoints"] == []  # none in the pool: empty
    assert slice_ips(run(full_index(topology_keys=keys + ",*"), es)) == ALL_IPS - HANGZHOU  # "*": all


def test_unknown_keys_are_ignored_and_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    f = ServiceTopologyFilter(ME, full_index(topology_keys="openyurt.io/nodpool"))  # a typo
    es = endpointslice()
    with caplog.at_level(logging.WARNING):
        assert f.apply(request(), es) is es
        assert f.apply(request(), es) is es
    assert [r.getMessage() for r in caplog.records].count(
        "servicetopology: service shop/web: unknown topology key 'openyurt.io/nodpool' ignored"
    ) == 1
    f2 = ServiceTopologyFilter(ME, full_index(topology_keys="openyurt.io/nodpool,kubernetes.io/hostname"))
    assert slice_ips(f2.apply(request(), es) or {}) == {"10.0.1.1"}


def test_fail_open_when_own_pool_unknown(caplog: pytest.LogCaptureFixture) -> None:
    es = endpointslice()
    # Own Node unknown and no pool lists it.
    index = full_index(all_nodes=False)
    index.delete("Node", cluster_node(ME))
    index.upsert("NodePool", nodepool("hangzhou", ["edge-a2"]))
    f = ServiceTopologyFilter(ME, index)
    with caplog.at_level(logging.WARNING):
        for _ in range(3):
            assert f.apply(request(), es) is es
    assert len([r for r in caplog.records if "pool of node edge-a1 unknown" in r.getMessage()]) == 1
    # Own Node labelled into a pool whose NodePool is not cached (aggapi unreachable at start).
    assert ServiceTopologyFilter(ME, full_index(with_pools=False)).apply(request(), es) is es
    # Own Node in no pool at all.
    index3 = full_index()
    index3.upsert("Node", node(ME, None, "zone-1"))
    index3.upsert("NodePool", nodepool("hangzhou", ["edge-a2"]))
    assert ServiceTopologyFilter(ME, index3).apply(request(), es) is es
    # The host key needs nothing cached: still filtered.
    index4 = TopologyIndex()
    index4.upsert("Service", service("web", "kubernetes.io/hostname"))
    assert slice_ips(ServiceTopologyFilter(ME, index4).apply(request(), es) or {}) == {"10.0.1.1"}


def test_fail_open_when_own_zone_unknown() -> None:
    index = full_index(topology_keys="topology.kubernetes.io/zone")
    index.upsert("Node", node(ME, "hangzhou", None))
    es = endpointslice()
    assert ServiceTopologyFilter(ME, index).apply(request(), es) is es


def test_endpoints_subsets_filtered_the_same_way() -> None:
    f = ServiceTopologyFilter(ME, full_index())
    ep = endpoints()
    before = copy.deepcopy(ep)
    out = f.apply(request("endpoints"), ep)
    assert ep == before
    assert out is not None
    # Subset 1 keeps a1 (ready) and a2 (not ready); subset 2 had only edge-b2: removed.
    assert subset_ips(out) == [({"10.0.1.1"}, {"10.0.1.2"})]
    assert out["subsets"][0]["ports"] == ep["subsets"][0]["ports"]
    host = ServiceTopologyFilter(ME, full_index(topology_keys="kubernetes.io/hostname"))
    out2 = host.apply(request("endpoints"), ep)
    assert out2 is not None and subset_ips(out2) == [({"10.0.1.1"}, set())]
    assert "notReadyAddresses" not in out2["subsets"][0]
    remote = endpoints()
    remote["subsets"][0]["addresses"] = remote["subsets"][0]["addresses"][1:]
    out3 = host.apply(request("endpoints"), remote)
    assert out3 is not None and out3["subsets"] == []


def test_works_for_watch_events_and_get() -> None:
    f = ServiceTopologyFilter(ME, full_index())
    for verb in ("get", "watch"):
        req = request(verb=verb)
        assert f.wants(req)
        assert slice_ips(f.apply(req, endpointslice()) or {}) == HANGZHOU
    status = {"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": 410}
    assert f.apply(request(verb="watch"), status) is status


def test_namespace_taken_from_request_when_object_lacks_it() -> None:
    es = endpointslice()
    del es["metadata"]["namespace"]
    req = FilterRequest("coredns", "get", "discovery.k8s.io", "v1", "endpointslices", "shop", "web-x7k2p")
    assert slice_ips(ServiceTopologyFilter(ME, full_index()).apply(req, es) or {}) == HANGZHOU


@pytest.mark.parametrize(
    ("req", "wanted"),
    [
        (FilterRequest("kube-proxy", "list", "discovery.k8s.io", "v1", "endpointslices", None, None), True),
        (FilterRequest("coredns", "watch", "discovery.k8s.io", "v1", "endpointslices", None, None), True),
        (FilterRequest("coredns", "get", "", "v1", "endpoints", "shop", "web"), True),
        (FilterRequest("kubelet", "list", "discovery.k8s.io", "v1", "endpointslices", None, None), False),
        (FilterRequest("kube-proxy", "update", "discovery.k8s.io", "v1", "endpointslices", "a", "b"), False),
        (
            FilterRequest("kube-proxy", "list", "discovery.k8s.io", "v1beta1", "endpointslices", None, None),
            False,
        ),
        (FilterRequest("kube-proxy", "list", "", "v1", "services", None, None), False),
    ],
)
def test_wants(req: FilterRequest, wanted: bool) -> None:
    assert ServiceTopologyFilter(ME, TopologyIndex()).wants(req) is wanted


def test_components_configurable_and_star() -> None:
    req = FilterRequest("flanneld", "list", "discovery.k8s.io", "v1", "endpointslices", None, None)
    assert ServiceTopologyFilter(ME, TopologyIndex(), components=frozenset({"flanneld"})).wants(req)
    assert ServiceTopologyFilter(ME, TopologyIndex(), components=frozenset({"*"})).wants(req)


def test_config_defaults_match_docs() -> None:
    cfg = FiltersConfig(node_name=ME)
    assert cfg.servicetopology_components == {"kube-proxy", "coredns"}
    assert cfg.validate() == []
