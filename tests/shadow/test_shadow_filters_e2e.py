"""The shadow's filters end to end (docs/shadow-filters.md): configured from the CLI's flags, topology fed
by list+watch through the shadow's own cache (component aggapi-edge), answers filtered per client online,
offline, and after a restart while offline (topology from the disk cache). Real devcluster and etcd; the
cloud link is the cuttable relay."""

from __future__ import annotations

import argparse
import asyncio
import json
from dataclasses import replace
from typing import Any

import aiohttp
import pytest
from shadowkit import Kube, Relay, eventually, running, unique, wait_mode

from edge.shadow import cli
from edge.shadow.config import ShadowConfig
from edge.shadow.filters import FiltersConfig
from edge.shadow.filters.topology import NODEPOOLS_PATH
from edge.shadow.reader import USER_AGENT, ReadError, ShadowReader
from edge.shadow.requestinfo import parse
from edge.shadow.server import Shadow

KUBE_PROXY_UA = "kube-proxy/v1.30.0 (linux/amd64) kubernetes/abcdef"
KUBECTL_UA = "kubectl/v1.30.0 (linux/amd64) kubernetes/abcdef"
KUBELET_UA = "kubelet/v1.30.0 (linux/amd64) kubernetes/abcdef"
ZONE = "topology.kubernetes.io/zone"
TOPOLOGY = "openyurt.io/topologyKeys"


def parse_flags(*flags: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    cli.add_parser(parser.add_subparsers())
    base = ["shadow", "--node-name=edge-x", "--server=https://10.0.0.1:6443"]
    base += ["--server-ca-file=/ca.crt", "--node-cert-file=/node.pem", "--secure-port=0"]
    return parser.parse_args([*base, *flags])


def test_filter_flags() -> None:
    cfg = cli.config_from(parse_flags())
    assert cfg.filters == FiltersConfig(
        node_name="edge-x",
        enabled=frozenset({"servicetopology", "masterservice"}),
        servicetopology_components=frozenset({"kube-proxy", "coredns"}),
        masterservice_components=frozenset({"kubelet"}),
        master_host="169.254.2.1",
        master_port=10268,  # --secure-port=0: the default secure port
        zone_key_is_nodepool=True,
    )
    assert cfg.validate() == []
    cfg = cli.config_from(parse_flags("--filters=", "--secure-port=0"))
    assert cfg.filters is not None and cfg.filters.enabled == frozenset()
    f = cli.config_from(
        parse_flags(
            "--filters=masterservice",
            "--secure-port=10443",
            "--master-service-host=fd00::1",
            "--servicetopology-agents=*",
            "--masterservice-agents=kubelet,my-agent",
            "--topology-zone-is-nodepool=false",
        )
    ).filters
    assert f is not None and f.enabled == frozenset({"masterservice"})
    assert (f.master_host, f.master_port, f.zone_key_is_nodepool) == ("fd00::1", 10443, False)
    assert f.servicetopology_components == frozenset({"*"})
    assert f.masterservice_components == frozenset({"kubelet", "my-agent"})
    assert cli.config_from(parse_flags("--master-service-port=443")).filters.master_port == 443  # type: ignore[union-attr]
    bad = cli.config_from(parse_flags("--filters=masterservice,nope", "--master-service-host=shadow.local"))
    errors = bad.validate()
    assert any("unknown filters ['nope']" in e for e in errors), errors
    assert any("not an IP address" in e for e in errors), errors


# ---- end to end -----------------------------------------------------------------------------------


def node(name: str, zone: str) -> dict[str, Any]:
    labels = {"kubernetes.io/hostname": name, ZONE: zone}
    return {"apiVersion": "v1", "kind": "Node", "metadata": {"name": name, "labels": labels}}


def service(name: str, ns: str, keys: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": ns, "annotations": {TOPOLOGY: keys}},
        "spec": {"selector": {"app": name}, "ports": [{"name": "http", "port": 80, "targetPort": 8080}]},
    }


def endpointslice(svc: str, ns: str, endpoints: list[tuple[str, str, str]]) -> dict[str, Any]:
    """(ip, nodeName, zone) per endpoint, as the EndpointSlice controller writes them."""
    return {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {"name": f"{svc}-abcde", "namespace": ns, "labels": {"kubernetes.io/service-name": svc}},
        "addressType": "IPv4",
        "endpoints": [
            {"addresses": [ip], "nodeName": n, "zone": z, "conditions": {"ready": True}}
            for ip, n, z in endpoints
        ],
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
    }


def ips(listobj: dict[str, Any]) -> dict[str, set[str]]:
    """Service name → the endpoint IPs of its slice."""
    return {
        i["metadata"]["labels"]["kubernetes.io/service-name"]: {
            a for ep in i["endpoints"] for a in ep["addresses"]
        }
        for i in listobj["items"]
    }


def filtered_config(cfg: ShadowConfig, me: str, **kw: Any) -> ShadowConfig:
    return replace(cfg, node_name=me, filters=FiltersConfig(node_name=me, **kw))


async def ok(kube: Kube, method: str, path: str, body: Any = None) -> Any:
    code, out = await kube.req(method, path, body)
    assert code in (200, 201), out
    return out


async def test_servicetopology_online_offline_and_after_a_restart_offline(
    cfg: ShadowConfig, relay: Relay, admin: Kube, http: aiohttp.ClientSession, ns: str
) -> None:
    me, peer, far = unique("edge-me"), unique("edge-peer"), unique("edge-far")
    for name, zone in ((me, "z1"), (peer, "z1"), (far, "z2")):
        await ok(admin, "POST", "/api/v1/nodes", node(name, zone))
    eps = [("10.1.0.1", me, "z1"), ("10.1.0.2", peer, "z1"), ("10.1.0.3", far, "z2")]
    slices = f"/apis/discovery.k8s.io/v1/namespaces/{ns}/endpointslices"
    for svc, keys in (("web", "kubernetes.io/hostname"), ("zoned", ZONE), ("plain", "")):
        await ok(admin, "POST", f"/api/v1/namespaces/{ns}/services", service(svc, ns, keys))
        await ok(admin, "POST", slices, endpointslice(svc, ns, eps))
    everything = {a for a, _, _ in eps}
    want = {"web": {"10.1.0.1"}, "zoned": {"10.1.0.1", "10.1.0.2"}, "plain": everything}
    unfiltered = {"web": everything, "zoned": everything, "plain": everything}
    fcfg = filtered_config(cfg, me)

    async def as_kube_proxy(kube_proxy: Kube) -> dict[str, set[str]] | None:
        code, out = await kube_proxy.get(slices)
        assert code == 200, out
        got = ips(out)
        return got if got == want else None

    async with running(fcfg) as shadow:
        await wait_mode(shadow, online=True)
        base = f"http://127.0.0.1:{shadow.ports['http']}"
        kube_proxy, kubectl = Kube(base, http, ua=KUBE_PROXY_UA), Kube(base, http, ua=KUBECTL_UA)
        # Filtering fails open until the feeder knows the Services and this Node: poll.
        await eventually("kube-proxy's slices filtered online", lambda: as_kube_proxy(kube_proxy))
        code, out = await kubectl.get(slices)
        assert code == 200 and ips(out) == unfiltered
        code, one = await kube_proxy.get(f"{slices}/web-abcde")
        assert code == 200 and {a for ep in one["endpoints"] for a in ep["addresses"]} == {"10.1.0.1"}

        # A watch: a change of the slice arrives filtered for kube-proxy, whole for kubectl.
        rv = (await kube_proxy.get(slices))[1]["metadata"]["resourceVersion"]
        web = await ok(admin, "GET", f"{slices}/web-abcde")
        web["endpoints"].append({"addresses": ["10.1.0.4"], "nodeName": me, "zone": "z1"})
        await ok(admin, "PUT", f"{slices}/web-abcde", web)
        watch = f"{slices}?watch=1&resourceVersion={rv}"
        for kube, expect in ((kube_proxy, {"10.1.0.1", "10.1.0.4"}), (kubectl, everything | {"10.1.0.4"})):
            async with asyncio.timeout(20):
                async for ev in kube.watch(watch):
                    if ev["object"]["metadata"]["name"] == "web-abcde":
                        assert ev["type"] == "MODIFIED"
                        assert {a for ep in ev["object"]["endpoints"] for a in ep["addresses"]} == expect
                        break
        want["web"] = {"10.1.0.1", "10.1.0.4"}
        await eventually("the change listed", lambda: as_kube_proxy(kube_proxy))

        # The topology's own reads are cached like any component's (on disk under aggapi-edge).
        cached = cfg.cache_dir / "aggapi-edge"
        await shadow.store.flush()  # lists are written in the background
        assert (cached / "services" / ns / "web.json").is_file()
        assert (cached / "nodes" / "_cluster" / f"{me}.json").is_file()
        assert not (cached / "nodes" / "_cluster" / f"{peer}.json").exists()  # only this node is watched

        await relay.cut()
        await wait_mode(shadow, online=False)
        code, out = await kube_proxy.get(slices)
        assert code == 200 and ips(out) == want
        code, out = await kubectl.get(slices)
        assert code == 404  # kubectl is not a cached component

    # Reboot while offline: the topology comes back from the disk cache, so the answer is the same.
    async with running(fcfg) as shadow:
        await wait_mode(shadow, online=False)
        base = f"http://127.0.0.1:{shadow.ports['http']}"
        kube_proxy = Kube(base, http, ua=KUBE_PROXY_UA)
        await eventually(
            "kube-proxy's slices filtered after a restart offline", lambda: as_kube_proxy(kube_proxy)
        )
        assert shadow.topology is not None and shadow.topology.node(me) is not None

        # An offline watch, then the cloud comes back with a change made meanwhile: the reconnect's
        # MODIFIED reaches kube-proxy filtered.
        rv = (await kube_proxy.get(slices))[1]["metadata"]["resourceVersion"]
        web = await ok(admin, "GET", f"{slices}/web-abcde")
        web["endpoints"].append({"addresses": ["10.1.0.5"], "nodeName": far, "zone": "z2"})
        web["endpoints"].append({"addresses": ["10.1.0.6"], "nodeName": me, "zone": "z1"})
        await ok(admin, "PUT", f"{slices}/web-abcde", web)
        seen: list[dict[str, Any]] = []

        async def read_watch() -> None:
            async for ev in kube_proxy.watch(f"{slices}?watch=1&resourceVersion={rv}"):
                seen.append(ev)

        async with asyncio.timeout(30), asyncio.TaskGroup() as tg:
            task = tg.create_task(read_watch(), name="test-offline-watch")
            await eventually("kube-proxy's offline watch open", lambda: kube_proxy_watching(shadow))
            await relay.restore()
            await task  # the reconnect closes it after sending what changed
        mods = [e for e in seen if e["type"] == "MODIFIED" and e["object"]["metadata"]["name"] == "web-abcde"]
        assert mods, seen
        assert {a for ep in mods[-1]["object"]["endpoints"] for a in ep["addresses"]} == {
            "10.1.0.1",
            "10.1.0.4",
            "10.1.0.6",
        }


async def kube_proxy_watching(shadow: Shadow) -> bool | None:
    return True if any(w.info.component == "kube-proxy" for w in shadow.local.watches) else None


async def test_masterservice_rewrites_the_kubernetes_service_for_kubelet_only(
    cfg: ShadowConfig, relay: Relay, admin: Kube, http: aiohttp.ClientSession
) -> None:
    path = "/api/v1/namespaces/default/services/kubernetes"
    real = await ok(admin, "GET", path)
    https = [p for p in real["spec"]["ports"] if p.get("name") == "https"]
    assert https, real["spec"]
    fcfg = filtered_config(cfg, unique("edge-ms"), master_host="169.254.2.1", master_port=10268)
    async with running(fcfg) as shadow:
        await wait_mode(shadow, online=True)
        base = f"http://127.0.0.1:{shadow.ports['http']}"
        kubelet, kubectl = Kube(base, http, ua=KUBELET_UA), Kube(base, http, ua=KUBECTL_UA)

        def rewritten(svc: dict[str, Any]) -> None:
            assert svc["spec"]["clusterIP"] == "169.254.2.1" and svc["spec"]["clusterIPs"] == ["169.254.2.1"]
            assert [p["port"] for p in svc["spec"]["ports"] if p.get("name") == "https"] == [10268]

        code, svc = await kubelet.get(path)
        assert code == 200, svc
        rewritten(svc)
        code, svc = await kubectl.get(path)
        assert code == 200 and svc["spec"] == real["spec"]
        code, lst = await kubelet.get("/api/v1/namespaces/default/services")
        assert code == 200
        rewritten(next(s for s in lst["items"] if s["metadata"]["name"] == "kubernetes"))
        # The cache keeps the real object; offline the kubelet still gets the rewritten one.
        cached = cfg.cache_dir / "kubelet" / "services" / "default" / "kubernetes.json"
        await shadow.store.flush()  # reads are written in the background
        assert cached.is_file() and "169.254.2.1" not in cached.read_text()
        await relay.cut()
        await wait_mode(shadow, online=False)
        code, svc = await kubelet.get(path)
        assert code == 200, svc
        rewritten(svc)


def test_which_filters_run_which_feeder(cfg: ShadowConfig) -> None:
    def built(**kw: Any) -> Shadow:
        shadow = Shadow(filtered_config(cfg, "edge-1", **kw))
        shadow.store.close()
        return shadow

    shadow = built(enabled=frozenset())
    assert shadow.feeder is None and shadow.proxy.filters == ()
    shadow = built(enabled=frozenset({"masterservice"}))
    assert shadow.feeder is None and [f.name for f in shadow.proxy.filters] == ["masterservice"]
    shadow = built()
    assert [f.name for f in shadow.proxy.filters] == ["servicetopology", "masterservice"]
    assert shadow.feeder is not None and shadow.feeder.paths["Node"].endswith("metadata.name%3Dedge-1")
    plain = Shadow(cfg)  # no cfg.filters: as before, only the filters passed in
    plain.store.close()
    assert plain.feeder is None and plain.topology is None


class FakeResponse:
    def __init__(self, status: int) -> None:
        self.status = status

    async def read(self) -> bytes:
        return json.dumps(
            {"kind": "Status", "code": self.status, "message": f"answer {self.status}"}
        ).encode()

    def release(self) -> None:
        pass


async def test_reader_keeps_the_cached_list_while_an_aggregated_api_is_down(
    cfg: ShadowConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Restarted online while aggapi is down (kube-apiserver answers 503 for NodePools): the NodePools
    cached before still place this node; a refusal (403) is an answer, not an outage."""
    shadow = Shadow(filtered_config(cfg, "edge-1"))
    try:
        await shadow.cache.load()
        pool = {"metadata": {"name": "hangzhou", "resourceVersion": "7"}, "status": {"nodes": ["edge-1"]}}
        listed = {"kind": "NodePoolList", "apiVersion": "edge.aggapi.io/v1alpha1", "items": [pool]}
        listed["metadata"] = {"resourceVersion": "7"}
        await shadow.cache.record_list(parse("GET", NODEPOOLS_PATH, {}, USER_AGENT), listed, "")
        answers = iter([503, 403])

        async def request(*args: Any, **kw: Any) -> FakeResponse:
            return FakeResponse(next(answers))

        monkeypatch.setattr(shadow.upstream, "request", request)
        shadow.proxy.set_online(True)
        shadow.health.decided.set()
        reader = ShadowReader(shadow.proxy)
        items, rv = await reader.list(NODEPOOLS_PATH)
        assert [i["metadata"]["name"] for i in items] == ["hangzhou"] and rv == "7"
        with pytest.raises(ReadError, match="403"):
            await reader.list(NODEPOOLS_PATH)
    finally:
        shadow.store.close()
