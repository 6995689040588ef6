"""Reconnect (cached lists replaced by fresh upstream lists; watchers get the DELETED events), reboot
while offline, the in-flight limit, and recovery of corrupt or half-written cache files."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp
from shadowkit import Kube, Relay, eventually, names, pod, running, wait_mode

from edge.shadow.cache import View
from edge.shadow.config import ShadowConfig


async def test_reconnect_removes_objects_deleted_meanwhile_and_watchers_see_deleted(
    cfg: ShadowConfig, relay: Relay, admin: Kube, http: aiohttp.ClientSession, ns: str
) -> None:
    pods = f"/api/v1/namespaces/{ns}/pods"
    for name in ("keep", "gone", "changed"):
        assert (await admin.req("POST", pods, pod(name, ns, {"app": "a"})))[0] == 201
    async with running(cfg) as shadow:
        await wait_mode(shadow, online=True)
        kubelet = Kube(f"http://127.0.0.1:{shadow.ports['http']}", http)
        assert names((await kubelet.get(pods))[1]) == ["changed", "gone", "keep"]

        await relay.cut()
        await wait_mode(shadow, online=False)
        # a client (reflector-style) relists offline and watches from that resourceVersion
        code, listed = await kubelet.get(pods)
        assert code == 200
        rv = listed["metadata"]["resourceVersion"]
        events: list[dict[str, Any]] = []

        async def watch() -> None:
            async for ev in kubelet.watch(f"{pods}?watch=true&allowWatchBookmarks=true&resourceVersion={rv}"):
                events.append(ev)

        watcher = asyncio.create_task(watch())
        try:
            await eventually("an offline bookmark", lambda: _ready(events))
            # meanwhile in the cloud
            assert (await admin.req("DELETE", f"{pods}/gone"))[0] == 200
            assert (await admin.req("POST", pods, pod("new", ns, {"app": "a"})))[0] == 201
            patch = {"metadata": {"labels": {"app": "a", "v": "2"}}}
            code, _ = await admin.req("PATCH", f"{pods}/changed", patch, ctype="application/merge-patch+json")
            assert code == 200
            await shadow.store.flush()
            assert (cfg.cache_dir / "kubelet" / "pods" / ns / "gone.json").exists()

            await relay.restore()
            await _until_done(watcher)
        finally:
            watcher.cancel()
        changes = [(e["type"], e["object"]["metadata"]["name"]) for e in events if e["type"] != "BOOKMARK"]
        assert sorted(changes) == [("ADDED", "new"), ("DELETED", "gone"), ("MODIFIED", "changed")]
        assert events[-1]["type"] == "BOOKMARK"  # the stream ends at the fresh list's resourceVersion
        final_rv = events[-1]["object"]["metadata"]["resourceVersion"]
        deleted = next(e for e in events if e["type"] == "DELETED")
        assert deleted["object"]["metadata"]["resourceVersion"] == final_rv

        await wait_mode(shadow, online=True)
        assert not (cfg.cache_dir / "kubelet" / "pods" / ns / "gone.json").exists()
        # the client re-watches upstream from where the shadow's stream ended: nothing lost, nothing stale
        code, out = await kubelet.get(pods)
        assert names(out) == ["changed", "keep", "new"]
        # and offline again, the refreshed view is what is served
        await relay.cut()
        await wait_mode(shadow, online=False)
        code, out = await kubelet.get(pods)
        assert names(out) == ["changed", "keep", "new"]
        assert (
            next(i for i in out["items"] if i["metadata"]["name"] == "changed")["metadata"]["labels"]["v"]
            == "2"
        )


async def _ready(events: list[dict[str, Any]]) -> bool | None:
    return True if events else None


async def _until_done(task: asyncio.Task[None]) -> None:
    async def done() -> bool | None:
        return True if task.done() else None

    await eventually("the offline watch closed after reconnect", done)
    task.result()


async def test_reboot_while_offline_serves_pods_services_endpoints(
    cfg: ShadowConfig, relay: Relay, admin: Kube, http: aiohttp.ClientSession, ns: str
) -> None:
    svc = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web", "namespace": ns}}
    svc["spec"] = {"ports": [{"port": 80}], "selector": {"app": "web"}}
    ep = {"apiVersion": "v1", "kind": "Endpoints", "metadata": {"name": "web", "namespace": ns}}
    ep["subsets"] = [{"addresses": [{"ip": "10.0.0.5"}], "ports": [{"port": 80}]}]
    cm = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "conf", "namespace": ns},
        "data": {"k": "v"},
    }
    assert (await admin.req("POST", f"/api/v1/namespaces/{ns}/pods", pod("web-0", ns, {"app": "web"})))[
        0
    ] == 201
    assert (await admin.req("POST", f"/api/v1/namespaces/{ns}/services", svc))[0] == 201
    assert (await admin.req("POST", f"/api/v1/namespaces/{ns}/endpoints", ep))[0] == 201
    assert (await admin.req("POST", f"/api/v1/namespaces/{ns}/configmaps", cm))[0] == 201
    paths = [
        f"/api/v1/namespaces/{ns}/pods",
        f"/api/v1/namespaces/{ns}/services",
        f"/api/v1/namespaces/{ns}/endpoints",
    ]
    async with running(cfg) as shadow:
        await wait_mode(shadow, online=True)
        kubelet = Kube(f"http://127.0.0.1:{shadow.ports['http']}", http)
        before = {p: names((await kubelet.get(p))[1]) for p in paths}
        assert (await kubelet.get(f"/api/v1/namespaces/{ns}/configmaps/conf"))[0] == 200

    await relay.cut()  # the node reboots while the cloud is gone
    async with running(cfg) as shadow:
        await wait_mode(shadow, online=False)
        kubelet = Kube(f"http://127.0.0.1:{shadow.ports['http']}", http)
        after = {p: names((await kubelet.get(p))[1]) for p in paths}
        assert after == before == {paths[0]: ["web-0"], paths[1]: ["web"], paths[2]: ["web"]}
        code, conf = await kubelet.get(f"/api/v1/namespaces/{ns}/configmaps/conf")
        assert code == 200 and conf["data"] == {"k": "v"}
        code, eps = await kubelet.get(paths[2])
        assert eps["items"][0]["subsets"][0]["addresses"][0]["ip"] == "10.0.0.5"


async def test_requests_beyond_the_inflight_limit_get_429(
    cfg: ShadowConfig, relay: Relay, http: aiohttp.ClientSession, ns: str
) -> None:
    cfg = ShadowConfig(
        **{**_fields(cfg), "max_requests_inflight": 2, "probe_period": 3600.0, "connect_timeout": 60.0}
    )
    async with running(cfg) as shadow:
        await wait_mode(shadow, online=True)
        kubelet = Kube(f"http://127.0.0.1:{shadow.ports['http']}", http)
        await relay.cut()  # no pooled connection survives; new ones are accepted and never answered
        relay.stall(True)
        await relay.start()
        hung = [asyncio.create_task(kubelet.get(f"/api/v1/namespaces/{ns}/pods/p{i}")) for i in range(2)]

        async def full() -> bool | None:
            return True if shadow.proxy.inflight == 2 else None

        await eventually("two requests in flight", full)
        async with http.get(
            f"{kubelet.base}/api/v1/namespaces/{ns}/pods", headers={"User-Agent": "kubelet/1"}
        ) as r:
            assert r.status == 429
            assert r.headers["Retry-After"] == "1"
            body = json.loads(await r.read())
            assert body["kind"] == "Status" and body["reason"] == "TooManyRequests" and body["code"] == 429
        # health endpoints and watches are not limited
        relay.stall(False)
        results = await asyncio.gather(*hung)
        assert [code for code, _ in results] == [404, 404]
        async with http.get(f"http://127.0.0.1:{shadow.ports['health']}/metrics") as r:
            text = await r.text()
        assert "aggapi_shadow_rejected_requests_total 1.0" in text


def _fields(cfg: ShadowConfig) -> dict[str, Any]:
    return {f: getattr(cfg, f) for f in cfg.__dataclass_fields__}


async def test_corrupt_and_half_written_cache_files_are_recovered_not_served(
    cfg: ShadowConfig, relay: Relay, http: aiohttp.ClientSession, ns: str
) -> None:
    d = cfg.cache_dir / "kubelet" / "pods" / ns
    d.mkdir(parents=True)
    good = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "good", "namespace": ns, "resourceVersion": "5"},
    }
    (d / "good.json").write_text(json.dumps(good))
    (d / "torn.json").write_text(json.dumps({**good, "metadata": {"name": "torn", "namespace": ns}})[:40])
    (d / "list.json").write_text("[1, 2]")
    (d / "next.json.1a2b3c4d.tmp").write_text('{"apiVersion": "v1", "kind": "Po')
    view = {
        "component": "kubelet",
        "resource": "pods",
        "namespace": ns,
        "labelSelector": "",
        "fieldSelector": "",
        "kind": "PodList",
        "apiVersion": "v1",
        "resourceVersion": "5",
        "generation": 1,
        "items": [f"kubelet/pods/{ns}/{n}.json" for n in ("good", "torn", "list")],
    }
    base = View("kubelet", "pods", ns, "", "").base
    (cfg.cache_dir / (base + ".json")).parent.mkdir(parents=True, exist_ok=True)
    (cfg.cache_dir / (base + ".json")).write_text(json.dumps(view))
    (cfg.cache_dir / (base + ".log")).write_text(f"1 -kubelet/pods/{ns}/list.json\n1 +kubelet/pods/{ns}/gh")

    await relay.cut()
    async with running(cfg) as shadow:
        await wait_mode(shadow, online=False)
        kubelet = Kube(f"http://127.0.0.1:{shadow.ports['http']}", http)
        code, out = await kubelet.get(f"/api/v1/namespaces/{ns}/pods")
        assert code == 200 and names(out) == ["good"]
        assert (await kubelet.get(f"/api/v1/namespaces/{ns}/pods/torn"))[0] == 404
        assert (await kubelet.get(f"/api/v1/namespaces/{ns}/pods/good"))[0] == 200
    assert not list(d.glob("*.tmp"))
    assert sorted(p.name for p in d.iterdir()) == ["good.json"]
    quarantined = sorted(p.name for p in (cfg.cache_dir / ".quarantine").iterdir())
    assert len(quarantined) == 2 and all(ns in q for q in quarantined)
