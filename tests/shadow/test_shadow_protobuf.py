"""Protobuf (docs/shadow.md, "Protobuf", "Configuring the clients"): the kubelet's default Accept,
`application/vnd.kubernetes.protobuf,application/json`, is asked upstream as JSON and cached; a client
that accepts only protobuf is passed through uncached and counted."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import aiohttp
import pytest
from shadowkit import KUBELET_UA, Kube, Relay, pod, running, wait_mode

from edge.shadow.config import ShadowConfig

PROTOBUF = "application/vnd.kubernetes.protobuf"


async def _get(http: aiohttp.ClientSession, url: str, accept: str) -> tuple[int, str, bytes]:
    async with http.get(url, headers={"User-Agent": KUBELET_UA, "Accept": accept}) as r:
        return r.status, r.headers.get("Content-Type", ""), await r.read()


async def test_kubelet_default_accept_is_cached_as_json_and_protobuf_only_passes_through(
    cfg: ShadowConfig,
    relay: Relay,
    admin: Kube,
    http: aiohttp.ClientSession,
    ns: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    pods = f"/api/v1/namespaces/{ns}/pods"
    for name in ("a", "b"):
        assert (await admin.req("POST", pods, pod(name, ns, {"app": name})))[0] == 201
    async with running(cfg) as shadow:
        await wait_mode(shadow, online=True)
        base = f"http://127.0.0.1:{shadow.ports['http']}"
        sent: dict[str, str] = {}  # path → the Accept the shadow sent upstream
        upstream_request = shadow.upstream.request

        async def recording(
            method: str, path_qs: str, headers: Mapping[str, str], body: bytes | None, **kw: Any
        ) -> aiohttp.ClientResponse:
            sent[path_qs] = headers.get("Accept", "")
            return await upstream_request(method, path_qs, headers, body, **kw)

        monkeypatch.setattr(shadow.upstream, "request", recording)

        def passthrough() -> float:
            labels = {"component": "kubelet"}
            return (
                shadow.metrics.registry.get_sample_value("aggapi_shadow_protobuf_passthrough_total", labels)
                or 0.0
            )

        code, ctype, body = await _get(http, f"{base}{pods}/a", f"{PROTOBUF},application/json")
        assert code == 200 and ctype.startswith("application/json") and b'"name":"a"' in body
        assert sent[f"{pods}/a"] == "application/json"
        code, ctype, body = await _get(http, f"{base}{pods}/b", PROTOBUF)
        assert sent[f"{pods}/b"] == PROTOBUF  # passed through as the client asked
        if code == 200:  # a real kube-apiserver; the devcluster speaks JSON only and answers 406
            assert ctype.startswith(PROTOBUF) and body[:4] == b"k8s\x00"
        else:
            assert code == 406
        assert passthrough() == 1.0

        await shadow.store.flush()
        assert (cfg.cache_dir / "kubelet" / "pods" / ns / "a.json").is_file()
        assert not (cfg.cache_dir / "kubelet" / "pods" / ns / "b.json").exists()

        await relay.cut()
        await wait_mode(shadow, online=False)
        code, _, _ = await _get(http, f"{base}{pods}/a", f"{PROTOBUF},application/json")
        assert code == 200
        assert (await _get(http, f"{base}{pods}/b", f"{PROTOBUF},application/json"))[0] == 404
