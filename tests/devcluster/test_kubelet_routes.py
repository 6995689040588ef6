"""The devcluster's kubelet subresources over HTTP: discovery, authorization, a 503 without an egress
selector, and with one that every kubelet connection is an HTTP CONNECT through it (never a direct
dial). End to end with real nodes: tests/edge_e2e."""

from __future__ import annotations

import shutil
import socket
import socketserver
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support.devcluster import Devcluster
from support.etcd import EtcdServer
from support.lab import free_node_addresses

DAVE = "dave-token-0123456789"


def node(name: str, address: str, port: int = 10250) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": name},
        "status": {
            "addresses": [{"type": "InternalIP", "address": address}],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": port}},
        },
    }


def pod(name: str, namespace: str, node_name: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"nodeName": node_name, "containers": [{"name": "app", "image": "x"}]},
    }


def test_discovery_lists_kubelet_subresources_with_kube_verbs(devcluster: Devcluster) -> None:
    code, doc = devcluster.admin().get("/api/v1")
    assert code == 200
    res = {r["name"]: r for r in doc["resources"]}
    assert sorted(res["pods/exec"]["verbs"]) == ["create", "get"]
    assert res["pods/exec"]["kind"] == "PodExecOptions"
    assert sorted(res["pods/attach"]["verbs"]) == ["create", "get"]
    assert sorted(res["pods/portforward"]["verbs"]) == ["create", "get"]
    assert res["pods/portforward"]["kind"] == "PodPortForwardOptions"
    assert res["pods/log"]["verbs"] == ["get"] and res["pods/log"]["kind"] == "Pod"
    assert sorted(res["nodes/proxy"]["verbs"]) == ["create", "delete", "get", "patch", "update"]
    assert res["nodes/proxy"]["kind"] == "NodeProxyOptions"


def test_without_egress_selector_kubelet_requests_are_503(devcluster: Devcluster) -> None:
    admin = devcluster.admin()
    admin.apply("/api/v1/nodes", node("no-egress", "127.0.1.250"))
    admin.apply("/api/v1/namespaces/team/pods", pod("no-egress", "team", "no-egress"))
    for path in ("/api/v1/nodes/no-egress/proxy/healthz", "/api/v1/namespaces/team/pods/no-egress/log"):
        code, status = admin.get(path)
        assert code == 503, (path, status)
        assert status["reason"] == "ServiceUnavailable"
        assert "no route to the kubelet of node no-egress" in status["message"]
        assert "--egress-selector-config-file" in status["message"]
    # exec needs an upgrade before anything is dialled (kube's "Upgrade request required")
    code, status = admin.request("POST", "/api/v1/namespaces/team/pods/no-egress/exec?command=ls&stdout=true")
    assert code == 400 and status["message"] == "Upgrade request required"
    code, status = admin.get("/api/v1/namespaces/team/pods/nobody/log")
    assert code == 404 and status["message"] == 'pods "nobody" not found'


def test_subresources_are_authorized_as_such(devcluster: Devcluster) -> None:
    devcluster.admin().apply("/api/v1/namespaces/team/pods", pod("authz", "team", "no-egress"))
    dave = devcluster.client(token=DAVE)  # may get pods and pods/log in "team", nothing else
    assert dave.get("/api/v1/namespaces/team/pods/authz/log")[0] == 503  # allowed, then no route
    code, status = dave.request("POST", "/api/v1/namespaces/team/pods/authz/exec?command=ls&stdout=true")
    assert code == 403 and 'cannot create resource "pods/exec"' in status["message"], status
    code, status = dave.get("/api/v1/nodes/no-egress/proxy/healthz")
    assert code == 403 and 'resource "nodes/proxy"' in status["message"], status


class _Recorder(socketserver.StreamRequestHandler):
    def handle(self) -> None:
        head = b""
        while not head.endswith(b"\r\n\r\n"):
            line = self.rfile.readline()
            if not line:
                return
            head += line
        self.server.requests.append(head.split(b"\r\n", 1)[0].decode())  # type: ignore[attr-defined]
        body = b"node edge-x is not allowed here\n"
        self.wfile.write(b"HTTP/1.1 403 Forbidden\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))


@pytest.fixture(scope="module")
def egress_dc(
    etcd_server: EtcdServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Devcluster, Any]]:
    short = Path(tempfile.mkdtemp(prefix="dc-egress-", dir="/tmp"))
    uds = short / "egress.sock"
    proxy = socketserver.ThreadingUnixStreamServer(str(uds), _Recorder)
    proxy.requests = []  # type: ignore[attr-defined]
    thread = threading.Thread(target=proxy.serve_forever, name="fake-egress", daemon=True)
    thread.start()
    work = tmp_path_factory.mktemp("dc-egress")
    (work / "egress.yaml").write_text(
        "apiVersion: apiserver.k8s.io/v1beta1\nkind: EgressSelectorConfiguration\negressSelections:\n"
        f"- name: cluster\n  connection:\n    proxyProtocol: HTTPConnect\n    transport:\n"
        f"      uds: {{udsName: {uds}}}\n"
    )
    dc = Devcluster(
        work, etcd_server.client_url, extra_args=(f"--egress-selector-config-file={work / 'egress.yaml'}",)
    )
    dc.start()
    try:
        yield dc, proxy
    finally:
        dc.stop()
        proxy.shutdown()
        proxy.server_close()
        shutil.rmtree(short, ignore_errors=True)


def test_kubelet_connections_go_through_the_egress_only(egress_dc: tuple[Devcluster, Any]) -> None:
    dc, proxy = egress_dc
    (address,) = free_node_addresses(1)
    with socket.socket() as kubelet:  # a "kubelet" on the node's address: it must never be dialled
        kubelet.bind((address, 0))
        kubelet.listen()
        kubelet.setblocking(False)
        port = kubelet.getsockname()[1]
        admin = dc.admin()
        admin.apply("/api/v1/nodes", node("edge-x", address, port))
        code, status = admin.get("/api/v1/nodes/edge-x/proxy/healthz")
        assert code == 500, status
        assert status["message"] == (
            f'Get "https://{address}:{port}/healthz": proxy error from {proxy.server_address} while dialing '
            f"{address}:{port}, code 403: 403 Forbidden: node edge-x is not allowed here"
        )
        assert proxy.requests == [f"CONNECT {address}:{port} HTTP/1.1"]
        with pytest.raises(BlockingIOError):
            kubelet.accept()  # nothing came directly
