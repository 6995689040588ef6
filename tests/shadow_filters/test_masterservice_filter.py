"""masterservice: kubelet sees `default/kubernetes` pointing at the shadow; everything else unchanged.
Also build_filters/FiltersConfig and the proxy-side helpers."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from filterkit import ME, endpointslice, full_index, request, service, slice_ips

from edge.shadow.filters import (
    FilterRequest,
    FiltersConfig,
    MasterServiceFilter,
    ServiceTopologyFilter,
    apply_all,
    build_filters,
    selected,
)


def kubernetes_service(dual_stack: bool = False) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "type": "ClusterIP",
        "clusterIP": "10.96.0.1",
        "clusterIPs": ["10.96.0.1"],
        "ipFamilies": ["IPv4"],
        "ipFamilyPolicy": "SingleStack",
        "sessionAffinity": "None",
        "ports": [{"name": "https", "port": 443, "protocol": "TCP", "targetPort": 6443}],
    }
    if dual_stack:
        spec.update(clusterIPs=["10.96.0.1", "fd00::1"], ipFamilies=["IPv4", "IPv6"])
        spec["ipFamilyPolicy"] = "PreferDualStack"
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "kubernetes", "namespace": "default", "labels": {"component": "apiserver"}},
        "spec": spec,
    }


def test_rewrites_kubernetes_service_like_yurthub() -> None:
    f = MasterServiceFilter("169.254.2.1", 10268)
    svc = kubernetes_service()
    before = copy.deepcopy(svc)
    out = f.apply(request("services", component="kubelet"), svc)
    assert svc == before, "the cached object must not be mutated"
    assert out is not None
    assert out["spec"]["clusterIP"] == "169.254.2.1"
    assert out["spec"]["clusterIPs"] == ["169.254.2.1"]
    assert out["spec"]["ports"] == [{"name": "https", "port": 10268, "protocol": "TCP", "targetPort": 6443}]
    assert out["metadata"] == svc["metadata"]
    assert out["spec"]["sessionAffinity"] == "None"


def test_dual_stack_becomes_single_stack_of_the_shadow_address() -> None:
    out = MasterServiceFilter("fd00:2::1", 10268).apply(request("services"), kubernetes_service(True))
    assert out is not None
    spec = out["spec"]
    assert (spec["clusterIP"], spec["clusterIPs"], spec["ipFamilies"], spec["ipFamilyPolicy"]) == (
        "fd00:2::1",
        ["fd00:2::1"],
        ["IPv6"],
        "SingleStack",
    )


def test_other_services_and_status_unchanged() -> None:
    f = MasterServiceFilter("169.254.2.1", 10268)
    req = request("services", component="kubelet")
    for obj in (
        service("web", None),
        {**kubernetes_service(), "metadata": {"name": "kubernetes", "namespace": "shop"}},
        {"kind": "Status", "code": 410},
    ):
        assert f.apply(req, obj) is obj


@pytest.mark.parametrize(
    ("req", "wanted"),
    [
        (FilterRequest("kubelet", "list", "", "v1", "services", None, None), True),
        (FilterRequest("kubelet", "watch", "", "v1", "services", "default", None), True),
        (FilterRequest("kubelet", "get", "", "v1", "services", "default", "kubernetes"), True),
        (FilterRequest("kubelet", "get", "", "v1", "services", "default", "web"), False),
        (FilterRequest("kubelet", "list", "", "v1", "services", "shop", None), False),
        (FilterRequest("kube-proxy", "list", "", "v1", "services", None, None), False),
        (FilterRequest("kubelet", "list", "", "v1", "endpoints", None, None), False),
        (FilterRequest("kubelet", "patch", "", "v1", "services", "default", "kubernetes"), False),
    ],
)
def test_wants(req: FilterRequest, wanted: bool) -> None:
    assert MasterServiceFilter("169.254.2.1", 10268).wants(req) is wanted


def test_build_filters_defaults_and_chain() -> None:
    filters = build_filters(FiltersConfig(node_name=ME), full_index())
    assert [f.name for f in filters] == ["servicetopology", "masterservice"]
    assert isinstance(filters[0], ServiceTopologyFilter) and isinstance(filters[1], MasterServiceFilter)
    req = request("endpointslices", component="kube-proxy")
    chosen = selected(filters, req)
    assert [f.name for f in chosen] == ["servicetopology"]
    assert slice_ips(apply_all(chosen, req, endpointslice()) or {}) == {"10.0.1.1", "10.0.1.2"}
    kreq = request("services", component="kubelet")
    assert [f.name for f in selected(filters, kreq)] == ["masterservice"]
    out = apply_all(selected(filters, kreq), kreq, kubernetes_service())
    assert out is not None and out["spec"]["clusterIP"] == "169.254.2.1"
    assert selected(filters, request("services", component="kube-proxy")) == []


def test_build_filters_respects_enabled_and_config() -> None:
    cfg = FiltersConfig(
        node_name=ME,
        enabled=frozenset({"masterservice"}),
        masterservice_components=frozenset({"*"}),
        master_host="10.1.2.3",
        master_port=10443,
    )
    (only,) = build_filters(cfg, full_index())
    assert only.name == "masterservice"
    req = request("services", component="my-operator")
    assert only.wants(req)
    out = only.apply(req, kubernetes_service())
    assert out is not None and out["spec"]["clusterIP"] == "10.1.2.3"
    assert out["spec"]["ports"][0]["port"] == 10443
    assert build_filters(FiltersConfig(node_name=ME, enabled=frozenset()), full_index()) == []


def test_invalid_config_refused() -> None:
    cfg = FiltersConfig(node_name="", enabled=frozenset({"servicetopology", "discardcloudservice"}))
    assert cfg.validate() == [
        "unknown filters ['discardcloudservice']; known: ['masterservice', 'servicetopology']",
        "servicetopology needs the node name",
    ]
    with pytest.raises(ValueError, match="is not an IP address"):
        build_filters(FiltersConfig(node_name=ME, master_host="shadow.local"), full_index())
    assert FiltersConfig(node_name=ME, master_port=0).validate() == ["master port 0 out of range"]
