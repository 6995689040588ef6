"""kubectl logs/exec/port-forward and nodes/proxy to simulated edge nodes, with the devcluster's admin
kubeconfig: kubectl → devcluster (egress selector: HTTP CONNECT on aggapi's unix socket) → aggapi's
tunnel server → the node's tunnel agent (which dialled out) → the node's kubelet-sim on 127.0.1.N.

The devcluster has no other route to a kubelet: stopping a node's agent cuts the node off (a clear
error), starting it again (or restarting aggapi, which the agents reconnect to) brings it back."""

from __future__ import annotations

import json
import os
import queue
import re
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from support.aggapi import KUBECTL, kubectl
from support.etcd import EtcdServer
from support.lab import start_lab

from aggapi.devlab import Lab

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def edge_lab(etcd_server: EtcdServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    lab = start_lab(tmp_path_factory.mktemp("edge-lab"), etcd_server.client_url, nodes=2)
    try:
        yield lab
    finally:
        lab.stop()


@pytest.fixture(scope="module")
def kc(edge_lab: Lab) -> Path:
    return edge_lab.kubeconfig


def ok(res: subprocess.CompletedProcess[str]) -> str:
    assert res.returncode == 0, f"kubectl failed ({res.returncode}): {res.stderr}"
    return res.stdout


def eventually(what: str, probe: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not probe():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout:.0f}s: {what}")
        time.sleep(0.25)


class Kubectl:
    """A long-running kubectl (logs -f, port-forward) whose output lines are read with a deadline."""

    def __init__(self, kubeconfig: Path, *args: str) -> None:
        env = {**os.environ, "KUBECONFIG": str(kubeconfig), "HOME": str(kubeconfig.parent)}
        self.proc = subprocess.Popen(
            [str(KUBECTL), *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
        )
        self._lines: queue.Queue[str] = queue.Queue()
        self._reader = threading.Thread(target=self._read, name="kubectl-stdout", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._lines.put(line)

    def line(self, timeout: float = 20.0) -> str:
        try:
            return self._lines.get(timeout=timeout)
        except queue.Empty:
            err = self.proc.stderr.read() if self.proc.poll() is not None and self.proc.stderr else ""
            raise AssertionError(f"no output from kubectl within {timeout:.0f}s {err}") from None

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
        self._reader.join(5)


def test_logs(kc: Path) -> None:
    out = ok(kubectl(kc, "logs", "sample-edge-0"))
    assert re.search(r"^sample-edge-0/app: tick \d+$", out, re.M), out


def test_logs_follow_gets_lines_appended_later(kc: Path) -> None:
    k = Kubectl(kc, "logs", "-f", "--tail=1", "sample-edge-1")
    try:
        first = k.line()
        m = re.match(r"sample-edge-1/app: tick (\d+)", first)
        assert m, first
        # The kubelet-sim's ticker appends a line every second; one written after we started follows.
        later = k.line()
        assert re.match(r"sample-edge-1/app: tick (\d+)", later) and int(later.split()[-1]) > int(m[1]), later
    finally:
        k.stop()


def test_exec_with_stdin(kc: Path) -> None:
    data = "hello through the tunnel\n" + "x" * 70_000 + "\nbye\n"
    assert ok(kubectl(kc, "exec", "-i", "sample-edge-0", "--", "cat", input=data)) == data


def test_exec_exit_code(kc: Path) -> None:
    res = kubectl(kc, "exec", "sample-edge-1", "--", "sh", "-c", "echo out; echo err >&2; exit 3")
    assert res.returncode == 3, res
    assert res.stdout == "out\n"
    assert "err" in res.stderr


def test_port_forward_round_trip(kc: Path) -> None:
    k = Kubectl(kc, "port-forward", "pod/sample-edge-1", ":8080")
    try:
        line = k.line()
        m = re.search(r"Forwarding from 127\.0\.0\.1:(\d+) -> 8080", line)
        assert m, line
        payload = os.urandom(256 * 1024)
        with socket.create_connection(("127.0.0.1", int(m[1])), timeout=20) as s:
            s.sendall(payload)
            s.shutdown(socket.SHUT_WR)
            got = bytearray()
            while chunk := s.recv(65536):
                got += chunk
        assert bytes(got) == payload
    finally:
        k.stop()


def test_node_proxy_healthz_and_pods(edge_lab: Lab, kc: Path) -> None:
    assert edge_lab.edge is not None
    for node in edge_lab.edge.nodes:
        assert ok(kubectl(kc, "get", "--raw", f"/api/v1/nodes/{node.name}/proxy/healthz")) == "ok"
        pods = json.loads(ok(kubectl(kc, "get", "--raw", f"/api/v1/nodes/{node.name}/proxy/pods")))
        assert [p["metadata"]["name"] for p in pods["items"]] == [node.pod]
        assert pods["items"][0]["spec"]["nodeName"] == node.name


def test_edgenodes_proxy(kc: Path) -> None:
    """The same kubelet through aggapi's own edgenodes/proxy subresource."""
    res = kubectl(kc, "api-resources", "--api-group=edge.aggapi.io", "-o", "name")
    assert "edgenodes.edge.aggapi.io" in res.stdout.split(), res
    path = "/apis/edge.aggapi.io/v1alpha1/edgenodes/edge-0/proxy/pods"
    pods = json.loads(ok(kubectl(kc, "get", "--raw", path)))
    assert [p["metadata"]["name"] for p in pods["items"]] == ["sample-edge-0"]


def _logs_work(kc: Path, pod: str) -> bool:
    return kubectl(kc, "logs", "--tail=1", pod, timeout=20).returncode == 0


def test_only_through_the_tunnel_agent_stopped_and_restarted(edge_lab: Lab, kc: Path) -> None:
    edge_lab.stop_agent("edge-1")
    try:
        # The server notices the agent's link closing at once; bounded in case it takes a moment.
        eventually("edge-1 unreachable", lambda: not _logs_work(kc, "sample-edge-1"), timeout=15)
        res = kubectl(kc, "logs", "sample-edge-1")
        assert res.returncode != 0
        assert "no tunnel agent is connected for node edge-1" in res.stderr, res.stderr
        res = kubectl(kc, "get", "--raw", "/api/v1/nodes/edge-1/proxy/healthz")
        assert "no tunnel agent is connected for node edge-1" in res.stderr, res.stderr
        res = kubectl(kc, "exec", "sample-edge-1", "--", "true")
        assert res.returncode != 0 and "no tunnel agent is connected" in res.stderr, res.stderr
        assert _logs_work(kc, "sample-edge-0")  # the other node is not affected
    finally:
        edge_lab.start_agent("edge-1")
    eventually("edge-1 reachable again", lambda: _logs_work(kc, "sample-edge-1"))
    assert ok(kubectl(kc, "exec", "sample-edge-1", "--", "echo", "back")) == "back\n"


def test_agents_reconnect_after_aggapi_restart(edge_lab: Lab, kc: Path) -> None:
    edge_lab.stop_aggapi()
    res = kubectl(kc, "logs", "sample-edge-0")
    assert res.returncode != 0 and "via proxy" in res.stderr, res.stderr  # the egress socket went with aggapi
    edge_lab.start_aggapi()
    eventually("logs of sample-edge-0 after aggapi restarted", lambda: _logs_work(kc, "sample-edge-0"))
    eventually("logs of sample-edge-1 after aggapi restarted", lambda: _logs_work(kc, "sample-edge-1"))
    edge_lab.wait_nodes(timeout=30)


def test_unknown_nodes_are_clear_errors(edge_lab: Lab, kc: Path) -> None:
    res = kubectl(kc, "get", "--raw", "/api/v1/nodes/ghost/proxy/healthz")
    assert res.returncode != 0 and 'nodes "ghost" not found' in res.stderr, res.stderr
    # A Node whose kubelet has no agent (and an address no agent announced).
    node = {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": "agentless"},
        "status": {
            "addresses": [{"type": "InternalIP", "address": "127.0.1.99"}],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}},
        },
    }
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "orphan", "namespace": "default"},
        "spec": {"nodeName": "nowhere", "containers": [{"name": "app", "image": "x"}]},
    }
    admin = edge_lab.admin()
    admin.apply("/api/v1/nodes", node)
    admin.apply("/api/v1/namespaces/default/pods", pod)
    res = kubectl(kc, "get", "--raw", "/api/v1/nodes/agentless/proxy/healthz")
    assert res.returncode != 0
    assert "proxy error" in res.stderr and "while dialing 127.0.1.99:10250" in res.stderr, res.stderr
    res = kubectl(kc, "logs", "orphan")
    assert res.returncode != 0 and 'nodes "nowhere" not found' in res.stderr, res.stderr
