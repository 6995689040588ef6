"""Whose rights a request gets, and which cache it may read (docs/shadow.md, "Credentials"), and where
the HTTPS port listens (docs/shadow.md, "Addresses"): the node's credentials only for requests without a
token on the loopback HTTP port; on the HTTPS port a request without a token is anonymous upstream and
refused offline; a token's reads are cached apart from the node's and never read the node's cache."""

from __future__ import annotations

import argparse
import errno
import ssl
from dataclasses import replace
from pathlib import Path

import aiohttp
import pytest
from conftest import POD_TOKEN
from shadowkit import NODE, Kube, Relay, running, wait_mode

from aggapi.devcluster.labkit import free_port
from certs.files import write_pair
from certs.pki import issue_serving, new_ca
from edge.shadow import cli
from edge.shadow.config import ShadowConfig
from edge.shadow.filters import FiltersConfig
from edge.shadow.server import Shadow

COREDNS_UA = "coredns/1.11.1 (linux/amd64)"


def serving(tmp_path: Path, *ips: str) -> tuple[Path, Path, ssl.SSLContext]:
    ca = new_ca("shadow-serving-ca")
    cert, key = tmp_path / "serving.crt", tmp_path / "serving.key"
    write_pair(issue_serving(ca, common_name="shadow", dns_names=["localhost"], ips=list(ips)), cert, key)
    (tmp_path / "ca.crt").write_bytes(ca.cert_pem())
    return cert, key, ssl.create_default_context(cafile=str(tmp_path / "ca.crt"))


async def test_the_https_port_never_lends_the_node_its_credentials_nor_its_cache(
    cfg: ShadowConfig, relay: Relay, admin: Kube, http: aiohttp.ClientSession, ns: str, tmp_path: Path
) -> None:
    cert, key, ctx = serving(tmp_path, "127.0.0.1")
    cfg = replace(cfg, secure_port=free_port(), tls_cert_file=cert, tls_private_key_file=key)
    cm = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c", "namespace": ns}}
    assert (await admin.req("POST", f"/api/v1/namespaces/{ns}/configmaps", cm))[0] == 201
    node_path, cm_path = f"/api/v1/nodes/{NODE}", f"/api/v1/namespaces/{ns}/configmaps/c"
    async with running(cfg) as shadow, aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=ctx)) as s:
        await wait_mode(shadow, online=True)
        https = f"https://127.0.0.1:{shadow.ports['https']}"
        node = Kube(f"http://127.0.0.1:{shadow.ports['http']}", http)  # the kubelet, on the host
        no_token = Kube(https, s)  # a pod claiming to be the kubelet, without a token
        pod_token = Kube(https, s, ua=COREDNS_UA, token=POD_TOKEN)
        kubelet_token = Kube(https, s, token=POD_TOKEN)  # a pod with its token and the kubelet's UA

        assert (await node.get(node_path))[0] == 200  # cached for the kubelet, node credentials
        assert (await node.get(cm_path))[0] == 200
        code, _ = await no_token.get(node_path)
        assert code in (401, 403)  # anonymous upstream, not system:node:edge-1
        assert (await kubelet_token.get(node_path))[0] == 403  # the pod's own rights
        assert (await pod_token.get(cm_path))[0] == 200  # the pod's own read: cached as coredns@token
        await shadow.store.flush()
        assert (cfg.cache_dir / "coredns@token" / "configmaps" / ns / "c.json").is_file()
        assert not (cfg.cache_dir / "kubelet@anonymous").exists()

        await relay.cut()
        await wait_mode(shadow, online=False)
        assert (await node.get(node_path))[0] == 200  # the kubelet keeps its cache
        code, out = await no_token.get(node_path)
        assert code == 401 and out["kind"] == "Status"  # no token: nothing cached is served
        assert (await no_token.get(cm_path))[0] == 401
        assert (await kubelet_token.get(node_path))[0] == 404  # a token never reads the node's cache
        assert (await kubelet_token.get(cm_path))[0] == 404
        assert (await Kube(node.base, http, token=POD_TOKEN).get(cm_path))[0] == 404  # nor over HTTP
        assert (await pod_token.get(cm_path))[0] == 200  # what a token read online, by component
        smp = "application/strategic-merge-patch+json"
        patch = {"status": {"conditions": [{"type": "Ready", "status": "False"}]}}
        code, _ = await kubelet_token.req("PATCH", f"{node_path}/status", patch, ctype=smp)
        assert code == 503 and shadow.pending.node_status is None  # never pushed later as the node


def flags(*more: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    cli.add_parser(parser.add_subparsers())
    base = ["shadow", "--node-name=edge-x", "--server=https://10.0.0.1:6443", "--server-ca-file=/ca.crt"]
    return parser.parse_args([*base, "--node-cert-file=/n.pem", "--tls-cert-file=/s.crt", *more])


def test_the_https_port_listens_where_the_masterservice_filter_sends_pods() -> None:
    def config(*more: str) -> ShadowConfig:
        return cli.config_from(flags("--tls-private-key-file=/s.key", *more))

    default = config()
    assert (default.bind_address, default.secure_address) == ("127.0.0.1", "169.254.2.1")
    assert default.validate() == [] and default.advertised_unserved() == ""
    moved = config("--master-service-host=10.9.0.1")
    assert moved.secure_address == "10.9.0.1" and moved.bind_address == "127.0.0.1"
    assert config("--filters=servicetopology").secure_address == "127.0.0.1"
    for ok in ("169.254.2.1", "0.0.0.0"):
        assert config(f"--secure-bind-address={ok}").validate() == []
    # chosen explicitly and not where the filter sends pods: refused, naming the flags
    errors = config("--secure-bind-address=10.1.0.5").validate()
    assert len(errors) == 1 and "--secure-bind-address=169.254.2.1" in errors[0], errors
    assert config("--secure-bind-address=10.1.0.5", "--master-service-host=10.1.0.5").validate() == []
    # --bind-address moved (where both ports listened before the split): HTTPS stays there, and the
    # mismatch is logged at start rather than refused (the lab runs like that)
    legacy = config("--bind-address=127.0.1.10")
    assert legacy.secure_address == "127.0.1.10" and legacy.validate() == []
    assert "169.254.2.1:10268" in legacy.advertised_unserved()


async def test_https_serves_the_masterservice_address_and_http_stays_on_loopback(
    cfg: ShadowConfig, tmp_path: Path
) -> None:
    cert, key, ctx = serving(tmp_path, "127.0.0.2")
    port = free_port()
    filters = FiltersConfig(NODE, frozenset({"masterservice"}), master_host="127.0.0.2", master_port=port)
    cfg = replace(cfg, secure_port=port, tls_cert_file=cert, tls_private_key_file=key, filters=filters)
    async with running(cfg) as shadow, aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=ctx)) as s:
        await wait_mode(shadow, online=True)
        async with s.get(f"https://127.0.0.2:{port}/version") as r:
            assert r.status in (200, 401, 403)  # served (what kube-apiserver says to anonymous)
        with pytest.raises(aiohttp.ClientConnectorError):
            async with s.get(f"https://127.0.0.2:{shadow.ports['http']}/version"):
                pass


async def test_an_advertised_address_that_does_not_exist_stops_the_shadow_with_what_to_do(
    cfg: ShadowConfig, tmp_path: Path
) -> None:
    cert, key, _ = serving(tmp_path, "192.0.2.77")
    filters = FiltersConfig(NODE, frozenset({"masterservice"}), master_host="192.0.2.77", master_port=10268)
    cfg = replace(cfg, secure_port=free_port(), tls_cert_file=cert, tls_private_key_file=key, filters=filters)
    shadow = Shadow(cfg)
    with pytest.raises(OSError) as e:
        await shadow.start()
    if e.value.errno != errno.EADDRNOTAVAIL:
        pytest.skip(f"192.0.2.77 is bindable here: {e.value}")
    assert "192.0.2.77" in str(e.value) and "ip link add" in str(e.value)
    assert "--secure-bind-address" in str(e.value)
