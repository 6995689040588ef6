"""The devcluster's kubelet routing without processes: the EgressSelectorConfiguration it accepts, and
the kubelet paths and queries it maps pod and node subresources to (kube-apiserver's)."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest

from aggapi.devcluster.egress import parse_egress_selector
from aggapi.devcluster.kubeletpaths import node_endpoint, node_proxy_target, pod_location, split_node_id
from aggapi.machinery.apierrors import StatusError

UDS = """\
apiVersion: apiserver.k8s.io/v1beta1
kind: EgressSelectorConfiguration
egressSelections:
- name: controlplane
  connection: {proxyProtocol: Direct}
- name: cluster
  connection:
    proxyProtocol: HTTPConnect
    transport:
      uds: {udsName: /run/aggapi/egress.sock}
"""

TCP = """\
apiVersion: apiserver.k8s.io/v1beta1
kind: EgressSelectorConfiguration
egressSelections:
- name: cluster
  connection:
    proxyProtocol: HTTPConnect
    transport:
      tcp:
        url: https://aggapi.aggapi-system.svc:8090
        tlsConfig: {caBundle: /etc/ca.crt, clientKey: /etc/kas.key, clientCert: /etc/kas.crt}
"""


def test_egress_selector_uds_and_tcp() -> None:
    uds = parse_egress_selector(UDS)
    assert uds is not None and uds.uds_name == "/run/aggapi/egress.sock" and uds.where == uds.uds_name
    tcp = parse_egress_selector(TCP)
    assert tcp is not None and tcp.url == "https://aggapi.aggapi-system.svc:8090"
    assert (tcp.ca_bundle, tcp.client_cert, tcp.client_key) == ("/etc/ca.crt", "/etc/kas.crt", "/etc/kas.key")
    assert tcp.where == "aggapi.aggapi-system.svc:8090"


def test_egress_selector_without_cluster_selects_nothing() -> None:
    doc = "apiVersion: apiserver.k8s.io/v1beta1\nkind: EgressSelectorConfiguration\negressSelections: []\n"
    assert parse_egress_selector(doc) is None


@pytest.mark.parametrize(
    ("text", "error"),
    [
        (UDS.replace("HTTPConnect", "Direct"), "only through an HTTPConnect egress"),
        (UDS.replace("HTTPConnect", "GRPC"), "'GRPC' is not supported"),
        (UDS.replace("v1beta1", "v2"), "want apiVersion apiserver.k8s.io/v1beta1"),
        (UDS.replace("udsName: /run/aggapi/egress.sock", "udsName: ''"), "udsName is required"),
        (TCP.replace("caBundle: /etc/ca.crt, ", ""), "caBundle is required"),
        (TCP.replace("https://aggapi.aggapi-system.svc:8090", "aggapi:8090"), "want http(s)://host:port"),
    ],
)
def test_egress_selector_refused(text: str, error: str) -> None:
    with pytest.raises(ValueError) as exc:
        parse_egress_selector(text)
    assert error in str(exc.value)


POD: dict[str, Any] = {
    "metadata": {"name": "web", "namespace": "team"},
    "spec": {"nodeName": "edge-1", "containers": [{"name": "app"}]},
}
TWO = {**POD, "spec": {"containers": [{"name": "app"}, {"name": "sidecar"}]}}


def _split(location: str) -> tuple[str, list[tuple[str, str]]]:
    u = urlsplit(location)
    return u.path, parse_qsl(u.query, keep_blank_values=True)


def test_exec_and_attach_map_to_kubelet_flags() -> None:
    q = "command=sh&command=-c&command=echo+hi&stdin=true&stdout=true&stderr=false&tty=1&container=app"
    path, query = _split(pod_location(POD, "exec", q))
    assert path == "/exec/team/web/app"
    assert query == [("input", "1"), ("output", "1"), ("tty", "1"), ("command", "sh"), ("command", "-c"),
                     ("command", "echo hi")]  # fmt: skip
    path, query = _split(pod_location(POD, "attach", "stdout=true&stderr=true"))
    assert (path, query) == ("/attach/team/web/app", [("output", "1"), ("error", "1")])


def test_log_and_portforward_queries() -> None:
    q = "follow=true&tailLines=5&timestamps=false&sinceSeconds=60&limitBytes=100&previous=0&container=app"
    path, query = _split(pod_location(POD, "log", q))
    assert path == "/containerLogs/team/web/app"
    assert query == [("follow", "true"), ("sinceSeconds", "60"), ("tailLines", "5"), ("limitBytes", "100")]
    assert (
        pod_location(POD, "portforward", "ports=8080&ports=9090")
        == "/portForward/team/web?port=8080&port=9090"
    )
    assert pod_location(POD, "portforward", "") == "/portForward/team/web"


@pytest.mark.parametrize(
    ("pod", "sub", "query", "message"),
    [
        (TWO, "log", "", "a container name must be specified for pod web, choose one of: [app sidecar]"),
        (POD, "log", "container=nope", "container nope is not valid for pod web"),
        (POD, "exec", "command=ls", "you must specify at least 1 of stdin, stdout, stderr"),
        (POD, "exec", "stdout=true", "you must specify a command"),
        (POD, "log", "tailLines=x", "tailLines: invalid value"),
        (POD, "portforward", "ports=0", "must be between 1 and 65535"),
    ],
)
def test_bad_options_are_400(pod: dict[str, Any], sub: str, query: str, message: str) -> None:
    with pytest.raises(StatusError) as exc:
        pod_location(pod, sub, query)
    assert exc.value.code == 400 and message in exc.value.message


def test_node_endpoint_prefers_internal_ip_and_kubelet_port() -> None:
    node = {
        "metadata": {"name": "edge-1"},
        "status": {
            "addresses": [
                {"type": "Hostname", "address": "edge-1"},
                {"type": "InternalIP", "address": "10.1.2.3"},
            ],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": 10350}},
        },
    }
    assert node_endpoint(node) == ("10.1.2.3", 10350)
    assert node_endpoint(node, ("Hostname",)) == ("edge-1", 10350)
    del node["status"]["daemonEndpoints"]
    assert node_endpoint(node) == ("10.1.2.3", 10250)
    with pytest.raises(StatusError, match="no preferred addresses found"):
        node_endpoint({"metadata": {"name": "x"}, "status": {}})


def test_node_proxy_paths() -> None:
    assert node_proxy_target("/api/v1/nodes/edge-1/proxy") == "/"
    assert node_proxy_target("/api/v1/nodes/edge-1/proxy/") == "/"
    assert node_proxy_target("/api/v1/nodes/edge-1/proxy/stats/summary?only_cpu_and_memory=true") == (
        "/stats/summary?only_cpu_and_memory=true"
    )
    assert node_proxy_target("/api/v1/nodes/edge-1/proxy/pods/") == "/pods/"
    assert split_node_id("edge-1") == ("edge-1", None)
    assert split_node_id("edge-1:10255") == ("edge-1", 10255)
    assert split_node_id("https:edge-1:10250") == ("edge-1", 10250)
    with pytest.raises(StatusError, match="over https"):
        split_node_id("http:edge-1:10255")
