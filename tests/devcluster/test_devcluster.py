"""The devcluster on its own, as kubectl and aggapi see it: built-in kinds stored schemaless, status
subresources, watch, token and client-certificate authentication, the policy, TokenReview,
SubjectAccessReview, and the published extension-apiserver-authentication ConfigMap."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest
from support.aggapi import KUBECTL, kubectl
from support.devcluster import CM, Devcluster

DAVE = "dave-token-0123456789"


def ok(res: subprocess.CompletedProcess[str]) -> str:
    assert res.returncode == 0, f"kubectl failed ({res.returncode}): {res.stderr}"
    return res.stdout


@pytest.fixture(scope="module")
def kc(devcluster: Devcluster, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return devcluster.kubeconfig(tmp_path_factory.mktemp("kube") / "kubeconfig")


NODE = {
    "apiVersion": "v1",
    "kind": "Node",
    "metadata": {"name": "edge-1", "labels": {"openyurt.io/is-edge-worker": "true"}},
    "spec": {"podCIDR": "10.244.1.0/24", "someFutureField": {"kept": [1, 2, 3]}},
    "status": {
        "conditions": [{"type": "Ready", "status": "True"}],
        "nodeInfo": {"kubeletVersion": "v1.37.1"},
        "addresses": [{"type": "InternalIP", "address": "127.0.1.1"}],
    },
}


def test_kubectl_namespace_node_pod(kc: Path, tmp_path: Path) -> None:
    ok(kubectl(kc, "create", "namespace", "team"))
    assert "team" in ok(kubectl(kc, "get", "ns", "team", "--no-headers"))
    node = tmp_path / "node.json"
    node.write_text(json.dumps(NODE))
    assert "created" in ok(kubectl(kc, "apply", "-f", str(node)))
    got = json.loads(ok(kubectl(kc, "get", "node", "edge-1", "-o", "json")))
    assert got["spec"]["someFutureField"] == {"kept": [1, 2, 3]}  # schemaless: unknown fields survive
    assert got["status"]["nodeInfo"]["kubeletVersion"] == "v1.37.1"  # nodes register with status
    header, row = ok(kubectl(kc, "get", "no", "edge-1")).splitlines()
    assert header.split() == ["NAME", "AGE", "VERSION"] and row.split()[2] == "v1.37.1"
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "web", "namespace": "team"},
        "spec": {"nodeName": "edge-1", "containers": [{"name": "c", "image": "nginx"}]},
        "status": {"phase": "Running"},
    }
    (tmp_path / "pod.json").write_text(json.dumps(pod))
    assert "created" in ok(kubectl(kc, "apply", "-f", str(tmp_path / "pod.json")))
    header, row = ok(kubectl(kc, "get", "po", "-n", "team")).splitlines()
    assert header.split() == ["NAME", "STATUS", "AGE"]
    assert row.split()[:2] == ["web", "Pending"]  # status is the kubelet's to set, as in kube
    wide = ok(kubectl(kc, "get", "pods", "-A", "-o", "wide")).splitlines()
    assert wide[0].split()[:2] == ["NAMESPACE", "NAME"] and any("edge-1" in line for line in wide[1:])


def test_status_subresource(devcluster: Devcluster) -> None:
    admin = devcluster.admin()
    base = "/apis/apps/v1/namespaces/default/deployments"
    dep = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d1"}, "spec": {"replicas": 1}}
    code, created = admin.request("POST", base, {**dep, "status": {"readyReplicas": 9}})
    assert code == 201 and "status" not in created  # create clears status, as kube's strategy does
    code, st = admin.request(
        "PUT", f"{base}/d1/status", {**created, "spec": {"replicas": 5}, "status": {"readyReplicas": 1}}
    )
    assert code == 200 and st["status"] == {"readyReplicas": 1} and st["spec"] == {"replicas": 1}
    code, main = admin.request(
        "PUT", f"{base}/d1", {**st, "spec": {"replicas": 2}, "status": {"readyReplicas": 7}}
    )
    assert code == 200 and main["spec"] == {"replicas": 2} and main["status"] == {"readyReplicas": 1}
    assert main["metadata"]["generation"] == 2


def test_watch_streams_events(kc: Path, devcluster: Devcluster) -> None:
    admin = devcluster.admin()
    cm = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "w1"}, "data": {"a": "1"}}
    assert admin.request("POST", "/api/v1/namespaces/default/configmaps", cm)[0] == 201
    proc = subprocess.Popen(
        [
            str(KUBECTL),
            "get",
            "cm",
            "w1",
            "-n",
            "default",
            "-w",
            "--output-watch-events",
            "-o",
            'jsonpath={.type} {.object.data.a}{"\\n"}',
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={"KUBECONFIG": str(kc), "HOME": str(kc.parent)},
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().split() == ["ADDED", "1"]
        code, _ = admin.request("PUT", "/api/v1/namespaces/default/configmaps/w1", {**cm, "data": {"a": "2"}})
        assert code == 200
        assert proc.stdout.readline().split() == ["MODIFIED", "2"]
    finally:
        proc.kill()
        proc.wait(5)


def test_authentication(devcluster: Devcluster) -> None:
    assert devcluster.client().get("/api/v1/namespaces")[0] == 401  # no credentials
    assert devcluster.client(token="nope").get("/api/v1/namespaces")[0] == 401
    dave = devcluster.client(token=DAVE)
    assert dave.get("/api/v1/namespaces/team/pods")[0] == 200
    code, status = dave.get("/api/v1/namespaces/default/pods")
    assert code == 403
    # (kube says `pods is forbidden`; aggapi/http's message says `pods. is forbidden` for the core group)
    assert status["message"].endswith(
        'is forbidden: User "dave" cannot list resource "pods" in API group "" in the namespace "default"'
    )
    assert dave.get("/apis")[0] == 200  # discovery for every authenticated user
    assert devcluster.client().get("/readyz")[0] == 200


def test_token_review(devcluster: Devcluster) -> None:
    admin = devcluster.admin()
    review = {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview", "spec": {"token": DAVE}}
    code, out = admin.request("POST", "/apis/authentication.k8s.io/v1/tokenreviews", review)
    assert code == 201
    assert out["status"]["authenticated"] is True
    assert out["status"]["user"] == {
        "username": "dave",
        "uid": "uid-dave",
        "groups": ["devs", "testers", "system:authenticated"],
    }
    code, out = admin.request(
        "POST", "/apis/authentication.k8s.io/v1/tokenreviews", {**review, "spec": {"token": "x"}}
    )
    assert code == 201 and not out["status"].get("authenticated")
    # Creating reviews is itself authorized: dave may not.
    code, _ = devcluster.client(token=DAVE).request(
        "POST", "/apis/authentication.k8s.io/v1/tokenreviews", review
    )
    assert code == 403


def _sar(devcluster: Devcluster, spec: dict[str, object]) -> dict[str, object]:
    body = {"apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview", "spec": spec}
    code, out = devcluster.admin().request("POST", "/apis/authorization.k8s.io/v1/subjectaccessreviews", body)
    assert code == 201, out
    status: dict[str, object] = out["status"]
    return status


def test_subject_access_review(devcluster: Devcluster) -> None:
    def pods(ns: str, verb: str = "list", user: str = "dave", groups: tuple[str, ...] = ()) -> object:
        ra = {"namespace": ns, "verb": verb, "group": "", "version": "v1", "resource": "pods"}
        return _sar(devcluster, {"user": user, "groups": list(groups), "resourceAttributes": ra})["allowed"]

    assert pods("team") is True
    assert pods("default") is False
    assert pods("team", verb="delete") is False
    assert pods("default", user="root", groups=("system:masters",)) is True
    st = _sar(
        devcluster,
        {
            "user": "x",
            "groups": ["testers"],
            "resourceAttributes": {
                "verb": "get",
                "group": "apps",
                "resource": "deployments",
                "subresource": "status",
                "namespace": "a",
            },
        },
    )
    assert st["allowed"] is True
    st = _sar(
        devcluster,
        {
            "user": "x",
            "groups": ["system:authenticated"],
            "nonResourceAttributes": {"path": "/apis/edge.aggapi.io/v1alpha1", "verb": "get"},
        },
    )
    assert st["allowed"] is True
    body = {"apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview", "spec": {"user": "x"}}
    code, out = devcluster.admin().request("POST", "/apis/authorization.k8s.io/v1/subjectaccessreviews", body)
    assert code == 422 and out["reason"] == "Invalid"


def test_extension_apiserver_authentication_published(devcluster: Devcluster) -> None:
    code, cm = devcluster.admin().get(CM)
    assert code == 200
    data = cm["data"]
    assert data["client-ca-file"] == devcluster.pki.client_ca.read_text()
    assert data["requestheader-client-ca-file"] == devcluster.pki.front_proxy_ca.read_text()
    assert json.loads(data["requestheader-allowed-names"]) == ["front-proxy-client"]
    assert json.loads(data["requestheader-username-headers"]) == ["X-Remote-User"]
    assert json.loads(data["requestheader-group-headers"]) == ["X-Remote-Group"]
    assert json.loads(data["requestheader-extra-headers-prefix"]) == ["X-Remote-Extra-"]
    # Deleted, it comes back (kube-apiserver keeps it in place).
    assert devcluster.admin().request("DELETE", CM)[0] == 200
    deadline = time.monotonic() + 45
    while devcluster.admin().get(CM)[0] != 200:
        assert time.monotonic() < deadline
        time.sleep(0.5)


def test_discovery_lists_kinds_and_reviews(kc: Path) -> None:
    rows = {
        line.split()[0]: line.split()
        for line in ok(kubectl(kc, "api-resources", "--no-headers")).splitlines()
    }
    for resource, short in (
        ("namespaces", "ns"),
        ("pods", "po"),
        ("deployments", "deploy"),
        ("certificatesigningrequests", "csr"),
    ):
        assert rows[resource][1] == short
    assert rows["tokenreviews"][1:] == ["authentication.k8s.io/v1", "false", "TokenReview"]
    assert rows["subjectaccessreviews"][1:] == ["authorization.k8s.io/v1", "false", "SubjectAccessReview"]
    assert rows["leases"][1:] == ["coordination.k8s.io/v1", "true", "Lease"]


def test_kubectl_typed_clients_send_protobuf(kc: Path, devcluster: Devcluster, tmp_path: Path) -> None:
    ok(kubectl(kc, "create", "configmap", "pb-cm", "--from-literal=k=v", "-n", "default"))
    ok(kubectl(kc, "create", "secret", "generic", "pb-s", "--from-literal=k=v", "-n", "default"))
    cm = json.loads(ok(kubectl(kc, "get", "cm", "pb-cm", "-n", "default", "-o", "json")))
    assert cm["data"] == {"k": "v"} and cm["metadata"]["uid"]
    secret = json.loads(ok(kubectl(kc, "get", "secret", "pb-s", "-n", "default", "-o", "json")))
    assert secret["data"] == {"k": "dg=="} and secret["type"] == "Opaque"
    assert "system:masters" in ok(kubectl(kc, "auth", "whoami"))
    assert ok(kubectl(kc, "auth", "can-i", "list", "pods", "-n", "team")).strip() == "yes"
    dave = devcluster.kubeconfig(tmp_path / "dave" / "kubeconfig", token=DAVE)
    assert ok(kubectl(dave, "auth", "can-i", "list", "pods", "-n", "team")).strip() == "yes"
    res = kubectl(dave, "auth", "can-i", "delete", "pods", "-n", "team")
    assert res.stdout.strip() == "no" and res.returncode == 1


def test_reapply_and_strategic_merge_patch(kc: Path, tmp_path: Path) -> None:
    """Re-applying a changed built-in object and `kubectl patch` send strategic merge patches."""
    pod: dict[str, object] = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "smp", "namespace": "default", "labels": {"v": "1"}},
        "spec": {"containers": [{"name": "a", "image": "img:1"}, {"name": "b", "image": "img:1"}]},
    }
    path = tmp_path / "pod.json"
    path.write_text(json.dumps(pod))
    ok(kubectl(kc, "apply", "-f", str(path)))
    pod["metadata"] = {"name": "smp", "namespace": "default", "labels": {"v": "2"}}
    pod["spec"] = {"containers": [{"name": "a", "image": "img:1"}, {"name": "b", "image": "img:2"}]}
    path.write_text(json.dumps(pod))
    assert "configured" in ok(kubectl(kc, "apply", "-f", str(path)))
    got = json.loads(ok(kubectl(kc, "get", "pod", "smp", "-n", "default", "-o", "json")))
    assert got["metadata"]["labels"] == {"v": "2"}
    assert [(c["name"], c["image"]) for c in got["spec"]["containers"]] == [("a", "img:1"), ("b", "img:2")]
    ok(
        kubectl(
            kc,
            "patch",
            "pod",
            "smp",
            "-n",
            "default",
            "-p",
            '{"spec":{"containers":[{"name":"a","image":"img:3"}]}}',
        )
    )
    got = json.loads(ok(kubectl(kc, "get", "pod", "smp", "-n", "default", "-o", "json")))
    assert [(c["name"], c["image"]) for c in got["spec"]["containers"]] == [("a", "img:3"), ("b", "img:2")]


def test_pods_are_selectable_by_node_as_kubelets_do(kc: Path, tmp_path: Path) -> None:
    """kube's pod field selectors (spec.nodeName, status.phase, ...): a kubelet lists only its pods."""
    ok(kubectl(kc, "create", "namespace", "fields"))
    for name, node in (("on-a", "node-a"), ("on-b", "node-b"), ("nowhere", "")):
        pod = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name, "namespace": "fields"},
            "spec": {"nodeName": node, "containers": [{"name": "c", "image": "nginx"}]} if node else {},
        }
        (tmp_path / f"{name}.json").write_text(json.dumps(pod))
        ok(kubectl(kc, "apply", "-f", str(tmp_path / f"{name}.json")))
    names = ok(
        kubectl(kc, "get", "pods", "-n", "fields", "--field-selector", "spec.nodeName=node-a", "-o", "name")
    )
    assert names.split() == ["pod/on-a"]
    unbound = ok(
        kubectl(kc, "get", "pods", "-n", "fields", "--field-selector", "spec.nodeName=", "-o", "name")
    )
    assert unbound.split() == ["pod/nowhere"]  # an absent field reads as "", as in kube
    res = kubectl(kc, "get", "pods", "-n", "fields", "--field-selector", "spec.image=nginx")
    assert res.returncode != 0 and '"spec.image" is not a known field selector' in res.stderr
