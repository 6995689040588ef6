"""Offline serving: get/list/watch from the disk cache with namespaces, label and field selectors; two
selected lists of one component both kept; writes refused or accepted as docs/shadow.md says."""

from __future__ import annotations

import aiohttp
from conftest import POD_TOKEN
from shadowkit import NODE, Kube, Relay, eventually, names, pod, running, wait_mode

from edge.shadow.config import ShadowConfig


async def test_offline_get_list_watch_with_selectors(
    cfg: ShadowConfig, relay: Relay, admin: Kube, http: aiohttp.ClientSession, ns: str
) -> None:
    pods = f"/api/v1/namespaces/{ns}/pods"
    for p in (
        pod("p1", ns, {"app": "a", "tier": "web"}),
        pod("p2", ns, {"app": "b"}, node="edge-2"),
        pod("p3", ns, {"app": "a", "tier": "db"}),
    ):
        assert (await admin.req("POST", pods, p))[0] == 201
    async with running(cfg) as shadow:
        await wait_mode(shadow, online=True)
        kubelet = Kube(f"http://127.0.0.1:{shadow.ports['http']}", http)
        code, online = await kubelet.get(pods)
        assert code == 200 and names(online) == ["p1", "p2", "p3"]
        assert (await kubelet.get(f"{pods}/p1"))[0] == 200
        await shadow.store.flush()  # reads are written in the background (docs/shadow.md, durability)
        assert (cfg.cache_dir / "kubelet" / "pods" / ns / "p1.json").is_file()

        await relay.cut()
        await wait_mode(shadow, online=False)

        code, out = await kubelet.get(pods)
        assert code == 200, out
        assert out["kind"] == "PodList" and out["apiVersion"] == "v1"
        assert names(out) == ["p1", "p2", "p3"]
        assert int(out["metadata"]["resourceVersion"]) >= max(
            int(i["metadata"]["resourceVersion"]) for i in out["items"]
        )
        assert out["items"][0]["kind"] == "Pod"
        selections = {
            "labelSelector=app%3Da": ["p1", "p3"],
            "labelSelector=app%20in%20(a,b),tier!%3Ddb": ["p1", "p2"],
            "labelSelector=!tier": ["p2"],
            "labelSelector=tier": ["p1", "p3"],
            "labelSelector=app%20notin%20(a)": ["p2"],
            "fieldSelector=spec.nodeName%3Dedge-1": ["p1", "p3"],
            "fieldSelector=metadata.name%3Dp2": ["p2"],
            "fieldSelector=metadata.name!%3Dp2,metadata.namespace%3D" + ns: ["p1", "p3"],
            "labelSelector=app%3Da&fieldSelector=metadata.name%3Dp3": ["p3"],
        }
        for query, want in selections.items():
            code, out = await kubelet.get(f"{pods}?{query}")
            assert code == 200, (query, out)
            assert names(out) == want, query

        code, got = await kubelet.get(f"{pods}/p1")
        assert (
            code == 200 and got["kind"] == "Pod" and got["metadata"]["labels"] == {"app": "a", "tier": "web"}
        )
        code, missing = await kubelet.get(f"{pods}/nope")
        assert code == 404 and missing["kind"] == "Status" and missing["reason"] == "NotFound"
        # never cached: another resource, another namespace, another component, all namespaces
        assert (await kubelet.get(f"/api/v1/namespaces/{ns}/configmaps"))[0] == 404
        assert (await kubelet.get("/api/v1/namespaces/elsewhere/pods"))[0] == 404
        assert (await kubelet.get("/api/v1/pods"))[0] == 404
        proxy = Kube(kubelet.base, http, ua="kube-proxy/v1.37.0")
        assert (await proxy.get(pods))[0] == 404

        # writes: delete refused, events echoed, other writes refused
        code, out = await kubelet.req("DELETE", f"{pods}/p1")
        assert code == 503 and "cloud unreachable" in out["message"]
        event = {"metadata": {"generateName": "p1."}, "reason": "Started", "involvedObject": {"name": "p1"}}
        code, out = await kubelet.req("POST", f"/api/v1/namespaces/{ns}/events", event)
        assert code == 201 and out["metadata"]["name"].startswith("p1.") and out["reason"] == "Started"
        code, out = await kubelet.req("POST", pods, pod("p9", ns, {}))
        assert code == 503

        # watch: held open with bookmarks at the cached resourceVersion
        rv = (await kubelet.get(pods))[1]["metadata"]["resourceVersion"]
        seen = []
        async for ev in kubelet.watch(f"{pods}?watch=true&resourceVersion={rv}&allowWatchBookmarks=true"):
            seen.append(ev)
            if len(seen) == 2:
                break
        assert [e["type"] for e in seen] == ["BOOKMARK", "BOOKMARK"]
        assert seen[0]["object"]["kind"] == "Pod" and seen[0]["object"]["metadata"]["resourceVersion"] == rv
        # a watch of something never cached is a 404 like its list
        async with http.get(kubelet.base + "/api/v1/namespaces/elsewhere/pods?watch=1") as r:
            assert r.status == 404


async def test_two_label_selected_lists_of_one_component_both_served_offline(
    cfg: ShadowConfig, relay: Relay, admin: Kube, http: aiohttp.ClientSession, ns: str
) -> None:
    pods = f"/api/v1/namespaces/{ns}/pods"
    for name, app in (("a1", "a"), ("a2", "a"), ("b1", "b")):
        assert (await admin.req("POST", pods, pod(name, ns, {"app": app})))[0] == 201
    async with running(cfg) as shadow:
        await wait_mode(shadow, online=True)
        kubelet = Kube(f"http://127.0.0.1:{shadow.ports['http']}", http)
        assert names((await kubelet.get(f"{pods}?labelSelector=app%3Da"))[1]) == ["a1", "a2"]
        assert names((await kubelet.get(f"{pods}?labelSelector=app%3Db"))[1]) == ["b1"]
        # the same selection written differently shares the view (normalized key)
        assert names((await kubelet.get(f"{pods}?labelSelector=app%3D%3Da"))[1]) == ["a1", "a2"]
        await shadow.store.flush()
        views = list((cfg.cache_dir / "kubelet" / "pods" / "_views").glob("*.json"))
        assert len(views) == 2

        await relay.cut()
        await wait_mode(shadow, online=False)
        assert names((await kubelet.get(f"{pods}?labelSelector=app%3Da"))[1]) == ["a1", "a2"]
        assert names((await kubelet.get(f"{pods}?labelSelector=app%3Db"))[1]) == ["b1"]
        # no unselected list was ever made: answering it from the selected views would be incomplete
        assert (await kubelet.get(pods))[0] == 404
        assert (await kubelet.get(f"{pods}?labelSelector=app%3Dc"))[0] == 404


async def test_watch_events_keep_the_selected_view_current(
    cfg: ShadowConfig, relay: Relay, admin: Kube, http: aiohttp.ClientSession, ns: str
) -> None:
    """A selected watch adds and removes only in its own view; an object leaving one selection stays
    served by another view that still holds it."""
    pods = f"/api/v1/namespaces/{ns}/pods"
    assert (await admin.req("POST", pods, pod("x1", ns, {"app": "a"})))[0] == 201
    async with running(cfg) as shadow:
        await wait_mode(shadow, online=True)
        kubelet = Kube(f"http://127.0.0.1:{shadow.ports['http']}", http)
        _, sel = await kubelet.get(f"{pods}?labelSelector=app%3Da")
        assert names(sel) == ["x1"]
        assert names((await kubelet.get(pods))[1]) == ["x1"]
        rv = sel["metadata"]["resourceVersion"]
        watch = kubelet.watch(f"{pods}?watch=1&labelSelector=app%3Da&resourceVersion={rv}")
        assert (await admin.req("POST", pods, pod("x2", ns, {"app": "a"})))[0] == 201
        patch = {"metadata": {"labels": {"app": "z"}}}
        ctype = "application/merge-patch+json"
        assert (await admin.req("PATCH", f"{pods}/x1", patch, ctype=ctype))[0] == 200
        seen = []
        async for ev in watch:
            seen.append((ev["type"], ev["object"]["metadata"]["name"]))
            if len(seen) == 2:
                break
        assert seen == [("ADDED", "x2"), ("DELETED", "x1")]
        await watch.aclose()

        await relay.cut()
        await wait_mode(shadow, online=False)
        assert names((await kubelet.get(f"{pods}?labelSelector=app%3Da"))[1]) == ["x2"]
        # the unselected view still names x1 (its object file was kept): served, with the old labels
        assert names((await kubelet.get(pods))[1]) == ["x1"]
        assert (await kubelet.get(f"{pods}/x1"))[0] == 200


async def test_pods_keep_their_own_token_and_node_writes_are_local_offline(
    cfg: ShadowConfig, relay: Relay, admin: Kube, http: aiohttp.ClientSession, ns: str
) -> None:
    async with running(cfg) as shadow:
        await wait_mode(shadow, online=True)
        base = f"http://127.0.0.1:{shadow.ports['http']}"
        kubelet = Kube(base, http)
        review = {"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"}
        path = "/apis/authentication.k8s.io/v1/selfsubjectreviews"
        code, me = await kubelet.req("POST", path, review)
        assert code == 201 and me["status"]["userInfo"]["username"] == f"system:node:{NODE}"
        app = Kube(base, http, ua="myapp/1.0", token=POD_TOKEN)
        code, me = await app.req("POST", path, review)
        assert code == 201 and me["status"]["userInfo"]["username"] == "pod-reader"
        assert (await app.get("/api/v1/nodes"))[0] == 403  # no node rights through the shadow

        node_path, lease_path = (
            f"/api/v1/nodes/{NODE}",
            f"/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/{NODE}",
        )
        lease = {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {"name": NODE, "namespace": "kube-node-lease"},
            "spec": {
                "holderIdentity": NODE,
                "leaseDurationSeconds": 40,
                "renewTime": "2026-01-01T00:00:00.000000Z",
            },
        }
        code, _ = await admin.get(lease_path)
        if code == 404:
            assert (await admin.req("POST", lease_path.rsplit("/", 1)[0], lease))[0] == 201
        assert (await kubelet.get(node_path))[0] == 200
        code, cached_lease = await kubelet.get(lease_path)
        assert code == 200

        await relay.cut()
        await wait_mode(shadow, online=False)
        beat = "2031-02-03T04:05:06Z"
        cond = {"type": "Ready", "status": "True", "reason": "KubeletReady", "lastHeartbeatTime": beat}
        smp = "application/strategic-merge-patch+json"
        code, node = await kubelet.req(
            "PATCH", f"{node_path}/status", {"status": {"conditions": [cond]}}, ctype=smp
        )
        assert code == 200, node
        ready = [c for c in node["status"]["conditions"] if c["type"] == "Ready"]
        assert len(ready) == 1 and ready[0]["lastHeartbeatTime"] == beat
        assert node["status"]["addresses"]  # merged, not replaced
        assert (await kubelet.get(node_path))[1]["status"]["conditions"] == node["status"]["conditions"]
        renewed = {
            **cached_lease,
            "spec": {**cached_lease["spec"], "renewTime": "2031-02-03T04:05:06.000000Z"},
        }
        code, out = await kubelet.req("PUT", lease_path, renewed)
        assert code == 200 and out["spec"]["renewTime"] == "2031-02-03T04:05:06.000000Z"
        code, out = await kubelet.req("PATCH", "/api/v1/nodes/edge-2/status", {"status": {}}, ctype=smp)
        assert code == 503  # only the node itself is updated locally

        await relay.restore()
        await wait_mode(shadow, online=True)

        async def pushed() -> bool | None:
            _, upstream_node = await admin.get(node_path)
            _, upstream_lease = await admin.get(lease_path)
            beats = [c.get("lastHeartbeatTime") for c in upstream_node["status"]["conditions"]]
            return (beat in beats and upstream_lease["spec"]["renewTime"].startswith("2031")) or None

        await eventually("offline node status and lease pushed upstream", pushed)
        assert not (cfg.cache_dir / "_pending" / "node-status.json").exists()
