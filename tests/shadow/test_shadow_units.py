"""Request parsing, selectors, patches, hysteresis — and the filter hook end to end (online and offline,
the cache keeping the unfiltered object)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest
from shadowkit import Kube, Relay, names, pod, running, wait_mode

from edge.shadow.config import ShadowConfig
from edge.shadow.filters import FilterRequest
from edge.shadow.health import CloudHealth
from edge.shadow.merge import strategic_merge
from edge.shadow.requestinfo import component_of, parse
from edge.shadow.selectors import Selection, SelectorError, canonical, parse_labels


def test_request_info() -> None:
    i = parse("GET", "/api/v1/namespaces/ns/pods", {"watch": "True"}, "kubelet/v1.30 (linux/amd64)")
    assert (i.component, i.verb, i.resource, i.namespace, i.group_resource) == (
        "kubelet",
        "watch",
        "pods",
        "ns",
        "pods",
    )
    i = parse("GET", "/apis/apps/v1/namespaces/ns/deployments/d", {}, "kube-proxy/1")
    assert (i.verb, i.group_resource, i.name, i.api_version) == ("get", "deployments.apps", "d", "apps/v1")
    i = parse("PATCH", "/api/v1/nodes/n1/status", {}, "kubelet")
    assert (i.verb, i.resource, i.name, i.subresource, i.namespace) == (
        "patch",
        "nodes",
        "n1",
        "status",
        None,
    )
    i = parse("GET", "/api/v1/namespaces/kube-system", {}, "")
    assert (i.resource, i.name, i.component) == ("namespaces", "kube-system", "unknown")
    i = parse("GET", "/api/v1/watch/namespaces/ns/pods/p", {}, "x")
    assert (i.verb, i.name, i.field_selector) == ("watch", None, "metadata.name=p")
    assert not parse("GET", "/version", {}, "x").is_resource
    assert component_of("../../etc/passwd") == "unknown"
    assert component_of("weird name*/1") == "weird"


def test_selectors() -> None:
    obj = {
        "metadata": {"name": "a", "namespace": "n", "labels": {"app": "x", "v": "3"}},
        "spec": {"nodeName": "e"},
    }
    cases = {
        ("app=x", ""): True,
        ("app==x,v!=3", ""): False,
        ("app in (x, y)", "spec.nodeName=e"): True,
        ("app notin (x)", ""): False,
        ("!missing,app", ""): True,
        ("v>2", ""): True,
        ("", "spec.nodeName!=e"): False,
        ("", "status.phase="): True,  # absent reads as ""
        ("", "metadata.namespace=n,metadata.name=a"): True,
    }
    for (labels, fields), want in cases.items():
        assert Selection.parse("n", labels, fields).matches(obj) is want, (labels, fields)
    assert Selection.parse("other", "", "").matches(obj) is False
    with pytest.raises(SelectorError):
        parse_labels("app in x")
    assert canonical("b=1, a in (z,y)", "") == canonical("a in (y,z),b==1", "")
    assert canonical("a=1", "") != canonical("a=2", "")


def test_strategic_merge_of_node_status() -> None:
    node = {"status": {"conditions": [{"type": "Ready", "status": "False"}, {"type": "DiskPressure"}]}}
    patch = {
        "status": {"conditions": [{"type": "Ready", "status": "True"}], "$setElementOrder/conditions": []}
    }
    out = strategic_merge(node, patch)
    assert out["status"]["conditions"] == [{"type": "Ready", "status": "True"}, {"type": "DiskPressure"}]
    assert node["status"]["conditions"][0]["status"] == "False"  # not mutated


async def test_hysteresis() -> None:
    h = CloudHealth(_never, period=1.0, unhealthy_after=3, healthy_after=2)
    assert h.record(False) is False  # the first probe decides at once
    assert h.record(True) is None
    assert h.record(True) is True
    assert [h.record(False) for _ in range(3)] == [None, None, False]


async def _never() -> bool:
    return False


@dataclass
class HideFilter:
    """Drops pods labelled hide=yes, marks the rest (a stand-in for edge.shadow.filters' filters)."""

    name: str = "hide"

    def wants(self, req: FilterRequest) -> bool:
        return req.resource == "pods"

    def apply(self, req: FilterRequest, obj: dict[str, Any]) -> dict[str, Any] | None:
        if (obj.get("metadata") or {}).get("labels", {}).get("hide") == "yes":
            return None
        return {**obj, "metadata": {**obj["metadata"], "annotations": {"filtered-by": self.name}}}


async def test_filters_apply_online_and_offline_and_the_cache_keeps_unfiltered_objects(
    cfg: ShadowConfig, relay: Relay, admin: Kube, http: aiohttp.ClientSession, ns: str
) -> None:
    pods = f"/api/v1/namespaces/{ns}/pods"
    assert (await admin.req("POST", pods, pod("shown", ns, {"hide": "no"})))[0] == 201
    assert (await admin.req("POST", pods, pod("hidden", ns, {"hide": "yes"})))[0] == 201
    async with running(cfg, filters=[HideFilter()]) as shadow:
        await wait_mode(shadow, online=True)
        kubelet = Kube(f"http://127.0.0.1:{shadow.ports['http']}", http)
        _, out = await kubelet.get(pods)
        assert names(out) == ["shown"] and out["items"][0]["metadata"]["annotations"] == {
            "filtered-by": "hide"
        }
        assert (await kubelet.get(f"{pods}/hidden"))[0] == 404
        await shadow.store.flush()  # reads are written in the background
        assert (cfg.cache_dir / "kubelet" / "pods" / ns / "hidden.json").exists()  # cached unfiltered

        await relay.cut()
        await wait_mode(shadow, online=False)
        _, out = await kubelet.get(pods)
        assert names(out) == ["shown"] and out["items"][0]["metadata"]["annotations"] == {
            "filtered-by": "hide"
        }
        assert (await kubelet.get(f"{pods}/hidden"))[0] == 404
        # with no filter, the very same cache serves everything
    async with running(cfg) as plain:
        await wait_mode(plain, online=False)
        kubelet = Kube(f"http://127.0.0.1:{plain.ports['http']}", http)
        assert names((await kubelet.get(pods))[1]) == ["hidden", "shown"]
