"""Shadow behaviours that docs/shadow.md promises and no other test could catch breaking: failover across
several `--server`s in the documented order, node certificate rotation (and a half-rotated pair not
loaded), an offline write that upstream refuses on reconnect being dropped and counted, and open watches
not taking an in-flight slot."""

from __future__ import annotations

import asyncio
import logging
import shutil
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from conftest import NodeCreds
from prometheus_client.parser import text_string_to_metric_families
from shadowkit import NODE, Kube, Relay, eventually, names, pod, running, wait_mode
from support.devcluster import Devcluster

from certs.files import write_pem_atomic
from certs.pki import issue_client
from edge.shadow.config import ShadowConfig
from edge.shadow.server import Shadow

LEASE_PATH = f"/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/{NODE}"
REVIEW_PATH = "/apis/authentication.k8s.io/v1/selfsubjectreviews"
REVIEW = {"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"}
MERGE = "application/merge-patch+json"


async def metric(http: aiohttp.ClientSession, shadow: Shadow, name: str, **labels: str) -> float:
    """One sample of the shadow's /metrics (0 when absent, as a counter never incremented is)."""
    async with http.get(f"http://127.0.0.1:{shadow.ports['health']}/metrics") as r:
        assert r.status == 200
        text = await r.text()
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                return float(s.value)
    return 0.0


async def first_event(events: AsyncIterator[dict[str, Any]]) -> dict[str, Any]:
    async with asyncio.timeout(30):  # a guard against a hang, not a timing assertion
        return await anext(events)


# ---- 1. failover across several --server ----------------------------------------------------------


async def test_failover_across_servers_starts_from_the_last_one_that_answered(
    cfg: ShadowConfig, relay: Relay, admin: Kube, http: aiohttp.ClientSession, ns: str
) -> None:
    """docs/shadow.md: `--server` URLs are "tried in order from the last one that answered". Each server is
    a relay of its own, so which one a request went through is read from the relays' counters."""
    first, second = relay, Relay(relay.target_port)
    await second.start()
    cm_path = f"/api/v1/namespaces/{ns}/configmaps/failover"
    cm = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "failover", "namespace": ns}}
    assert (await admin.req("POST", f"/api/v1/namespaces/{ns}/configmaps", {**cm, "data": {"v": "0"}}))[
        0
    ] == 201

    async def upstream_value(v: str) -> None:
        assert (await admin.req("PATCH", cm_path, {"data": {"v": v}}, ctype=MERGE))[0] == 200

    try:
        await first.cut()  # the first --server refuses connections from the start
        cfg = replace(cfg, servers=(f"https://127.0.0.1:{first.port}", f"https://127.0.0.1:{second.port}"))
        async with running(cfg) as shadow:
            await wait_mode(shadow, online=True)
            kubelet = Kube(f"http://127.0.0.1:{shadow.ports['http']}", http)
            code, got = await kubelet.get(cm_path)
            assert code == 200 and got["data"] == {"v": "0"}, got
            assert second.accepted > 0

            # The first comes back; the second answered last, so it is still asked first: nothing (not
            # a request, not a probe) even connects to the first.
            await first.restore()
            accepted_first, sent_second = first.accepted, second.sent
            for v in ("1", "2", "3"):
                await upstream_value(v)
                code, got = await kubelet.get(cm_path)
                assert code == 200 and got["data"] == {"v": v}, got  # the fresh value: upstream
            assert first.accepted == accepted_first
            assert second.sent > sent_second

            # The second goes away: requests are still served online, through the first.
            await second.cut()
            await upstream_value("4")
            code, got = await kubelet.get(cm_path)
            assert code == 200 and got["data"] == {"v": "4"}, got
            assert first.accepted > accepted_first
            assert shadow.proxy.online

            # The second comes back; the first answered last and stays first.
            await second.restore()
            accepted_second, sent_first = second.accepted, first.sent
            for v in ("5", "6", "7"):
                await upstream_value(v)
                code, got = await kubelet.get(cm_path)
                assert code == 200 and got["data"] == {"v": v}, got
            assert second.accepted == accepted_second
            assert first.sent > sent_first

            for source in ("cache", "local"):  # never answered from the cache along the way
                served = await metric(
                    http,
                    shadow,
                    "aggapi_shadow_requests_total",
                    component="kubelet",
                    verb="get",
                    served_from=source,
                )
                assert served == 0, source
            remote = await metric(
                http,
                shadow,
                "aggapi_shadow_requests_total",
                component="kubelet",
                verb="get",
                served_from="remote",
            )
            assert remote == 8
    finally:
        await second.close()


# ---- 2. node certificate rotation -----------------------------------------------------------------


async def _whoami(kubelet: Kube) -> tuple[str, list[str]] | None:
    """Who kube-apiserver says the shadow's node credentials are (None while that cannot be asked)."""
    code, out = await kubelet.req("POST", REVIEW_PATH, REVIEW)
    if code != 201:
        return None
    info = out["status"]["userInfo"]
    return str(info["username"]), list(info.get("groups") or [])


async def test_rotated_node_certificate_is_loaded_and_a_half_rotated_pair_is_not(
    cfg: ShadowConfig,
    relay: Relay,
    shadow_dc: Devcluster,
    node_creds: NodeCreds,
    http: aiohttp.ClientSession,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The kubelet rotates its client certificate in place: the shadow loads the new pair
    (`cert_reloads_total`) and uses it upstream; while only the certificate has been replaced (its new
    key not yet written), the mismatched pair is not loaded and requests keep the old credentials. The
    rotated certificate is for the same node from the same CA with one more group, so kube-apiserver's
    answer tells which certificate a request was made with."""
    caplog.set_level(logging.INFO, logger="edge.shadow")
    pki = tmp_path / "node-pki"
    pki.mkdir()
    cert, key = pki / "node.crt", pki / "node.key"
    shutil.copyfile(node_creds.cert, cert)
    shutil.copyfile(node_creds.key, key)
    cfg = replace(cfg, cert_file=cert, key_file=key, cert_check_interval=0.05)
    rotated = issue_client(
        shadow_dc.pki.client_ca_pair(),
        common_name=f"system:node:{NODE}",
        organizations=["system:nodes", "shadow-rotated"],
    )
    me = f"system:node:{NODE}"
    async with running(cfg) as shadow:
        await wait_mode(shadow, online=True)
        kubelet = Kube(f"http://127.0.0.1:{shadow.ports['http']}", http)
        before = await _whoami(kubelet)
        assert before is not None and before[0] == me and "shadow-rotated" not in before[1]

        # Mid-rotation: the new certificate is in place, its key is not.
        write_pem_atomic(cert, rotated.cert_pem(), private=False)

        async def refused() -> bool | None:
            return True if "do not load yet" in caplog.text else None

        await eventually("the half-rotated pair seen and refused", refused)
        assert await metric(http, shadow, "aggapi_shadow_cert_reloads_total") == 0
        # New connections (the relay resets every open one) still present the old, whole pair.
        await relay.cut()
        await relay.restore()

        async def old_identity() -> bool | None:
            got = await _whoami(kubelet)
            return True if got is not None and got[0] == me and "shadow-rotated" not in got[1] else None

        await eventually("requests keep the old certificate after a half rotation", old_identity)

        # The key arrives: the pair is loaded, counted, and used upstream.
        write_pem_atomic(key, rotated.key_pem(), private=True)

        async def reloaded() -> bool | None:
            n = await metric(http, shadow, "aggapi_shadow_cert_reloads_total")
            return True if n == 1 else None

        await eventually("the rotated certificate loaded", reloaded)

        async def new_identity() -> bool | None:
            got = await _whoami(kubelet)
            return True if got is not None and got[0] == me and "shadow-rotated" in got[1] else None

        await eventually("requests upstream with the rotated certificate", new_identity)
        code, node = await kubelet.get(f"/api/v1/nodes/{NODE}")
        assert code == 200 and node["metadata"]["name"] == NODE
        assert await metric(http, shadow, "aggapi_shadow_cert_reloads_total") == 1
        assert "loaded the rotated node client certificate" in caplog.text


# ---- 3. an offline write refused on reconnect -----------------------------------------------------


async def test_offline_lease_renewal_refused_on_reconnect_is_dropped_not_forced(
    cfg: ShadowConfig,
    relay: Relay,
    admin: Kube,
    http: aiohttp.ClientSession,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """reconcile.py pushes a Lease renewal accepted offline onto a fresh GET of the upstream Lease; when
    upstream refuses (here the Lease was deleted while the node was offline: 404), the renewal is dropped
    with a log line and `local_writes_total{result="dropped"}`, and the Lease is not recreated."""
    caplog.set_level(logging.INFO, logger="edge.shadow")
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
    if (await admin.get(LEASE_PATH))[0] == 404:
        assert (await admin.req("POST", LEASE_PATH.rsplit("/", 1)[0], lease))[0] == 201
    try:
        async with running(cfg) as shadow:
            await wait_mode(shadow, online=True)
            kubelet = Kube(f"http://127.0.0.1:{shadow.ports['http']}", http)
            code, cached = await kubelet.get(LEASE_PATH)
            assert code == 200, cached

            await relay.cut()
            await wait_mode(shadow, online=False)
            renew = "2032-03-04T05:06:07.000000Z"
            renewed = {**cached, "spec": {**cached["spec"], "renewTime": renew}}
            code, out = await kubelet.req("PUT", LEASE_PATH, renewed)
            assert code == 200 and out["spec"]["renewTime"] == renew, out
            assert shadow.pending.lease_spec is not None
            assert (cfg.cache_dir / "_pending" / "lease.json").is_file()
            # Meanwhile, in the cloud, the Lease is deleted (the node was removed and is coming back).
            assert (await admin.req("DELETE", LEASE_PATH))[0] == 200

            await relay.restore()
            await wait_mode(shadow, online=True)

            async def dropped() -> bool | None:
                n = await metric(http, shadow, "aggapi_shadow_local_writes_total", result="dropped")
                return True if n == 1 else None

            await eventually("the refused lease renewal counted as dropped", dropped)
            assert await metric(http, shadow, "aggapi_shadow_local_writes_total", result="pushed") == 0
            lines = [r.getMessage() for r in caplog.records if r.name == "edge.shadow.reconcile"]
            assert any("lease accepted offline dropped: upstream answered 404" in m for m in lines), lines
            assert shadow.pending.lease_spec is None
            assert not (cfg.cache_dir / "_pending" / "lease.json").exists()
            # upstream: the deletion stands, the offline renewal did not recreate the Lease
            code, out = await admin.get(LEASE_PATH)
            assert code == 404, out
    finally:
        if (await admin.get(LEASE_PATH))[0] == 404:  # leave the session's node Lease as it was
            assert (await admin.req("POST", LEASE_PATH.rsplit("/", 1)[0], lease))[0] == 201


# ---- 4. watches take no in-flight slot ------------------------------------------------------------


async def test_open_watches_do_not_count_against_the_inflight_limit(
    cfg: ShadowConfig, relay: Relay, admin: Kube, http: aiohttp.ClientSession, ns: str
) -> None:
    """max_requests_inflight=1: a watch held open through the shadow (proxied online, or served from the
    cache offline) leaves the one slot free, so a GET is answered, not 429."""
    cfg = replace(cfg, max_requests_inflight=1)
    pods = f"/api/v1/namespaces/{ns}/pods"
    async with running(cfg) as shadow:
        await wait_mode(shadow, online=True)
        kubelet = Kube(f"http://127.0.0.1:{shadow.ports['http']}", http)
        code, listed = await kubelet.get(pods)
        assert code == 200
        rv = listed["metadata"]["resourceVersion"]

        online_watch = kubelet.watch(f"{pods}?watch=1&resourceVersion={rv}")
        assert (await admin.req("POST", pods, pod("w1", ns, {"app": "w"})))[0] == 201
        ev = await first_event(online_watch)  # the watch is open through the shadow
        assert ev["type"] == "ADDED" and ev["object"]["metadata"]["name"] == "w1"
        for _ in range(3):
            code, out = await kubelet.get(pods)
            assert code == 200 and names(out) == ["w1"], out  # not 429
        code, out = await kubelet.get(f"{pods}/w1")
        assert code == 200, out
        assert shadow.proxy.inflight == 0
        await online_watch.aclose()

        await relay.cut()
        await wait_mode(shadow, online=False)
        rv = (await kubelet.get(pods))[1]["metadata"]["resourceVersion"]
        offline_watch = kubelet.watch(f"{pods}?watch=1&resourceVersion={rv}&allowWatchBookmarks=true")
        ev = await first_event(offline_watch)  # held open from the cache
        assert ev["type"] == "BOOKMARK"
        for _ in range(3):
            code, out = await kubelet.get(pods)
            assert code == 200 and names(out) == ["w1"], out  # not 429
        assert shadow.proxy.inflight == 0
        await offline_watch.aclose()
        assert await metric(http, shadow, "aggapi_shadow_rejected_requests_total") == 0
