"""The lab as users meet it: the real kubectl → devcluster (authn, authz, aggregation) → aggapi
(front-proxy authn, SubjectAccessReview back to the devcluster) → etcd."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from support.aggapi import KUBECTL, kubectl
from support.lab import TOKENS, token_kubeconfig

from aggapi.devcluster.labkit import JSONClient
from aggapi.devlab import APISERVICE, Lab

POOL = """\
apiVersion: edge.aggapi.io/v1alpha1
kind: NodePool
metadata:
  name: {name}
spec:
  type: Edge
  labels: {{zone: {zone}}}
  taints:
  - {{key: edge, effect: NoSchedule}}
"""


def ok(res: subprocess.CompletedProcess[str]) -> str:
    assert res.returncode == 0, f"kubectl failed ({res.returncode}): {res.stderr}"
    return res.stdout


@pytest.fixture(scope="module")
def kc(lab: Lab) -> Path:
    return lab.kubeconfig  # written by the lab once nodepools were served: the admin (system:masters)


def test_apiservice_available(kc: Path) -> None:
    header, row = ok(kubectl(kc, "get", "apiservice", APISERVICE)).splitlines()
    assert header.split() == ["NAME", "SERVICE", "AVAILABLE", "AGE"]
    assert row.split()[:3] == [APISERVICE, "aggapi", "True"]
    obj = json.loads(ok(kubectl(kc, "get", "apiservice", APISERVICE, "-o", "json")))
    (cond,) = obj["status"]["conditions"]
    assert (cond["type"], cond["status"], cond["reason"]) == ("Available", "True", "Passed")


def test_discovery_and_explain(kc: Path) -> None:
    out = ok(kubectl(kc, "api-resources", "--api-group=edge.aggapi.io", "--no-headers"))
    rows = {line.split()[0]: line.split() for line in out.splitlines()}
    assert rows["nodepools"][:5] == ["nodepools", "np", "edge.aggapi.io/v1alpha1", "false", "NodePool"]
    explained = ok(kubectl(kc, "explain", "nodepools.spec.taints"))
    assert "KIND:       NodePool" in explained and "FIELD: taints <[]Object>" in explained
    assert "effect" in explained


def test_apply_get_and_watch(kc: Path, tmp_path: Path) -> None:
    manifest = tmp_path / "pool.yaml"
    manifest.write_text(POOL.format(name="agg-apply", zone="a"))
    assert "created" in ok(kubectl(kc, "apply", "-f", str(manifest)))
    header, row = ok(kubectl(kc, "get", "nodepools", "agg-apply")).splitlines()
    assert header.split() == ["NAME", "TYPE", "READYNODES", "NOTREADYNODES", "AGE"]
    assert row.split()[:2] == ["agg-apply", "Edge"]
    watch = subprocess.Popen(
        [
            str(KUBECTL),
            "get",
            "np",
            "agg-apply",
            "-w",
            "--output-watch-events",
            "-o",
            'jsonpath={.type} {.object.spec.labels.zone}{"\\n"}',
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={"KUBECONFIG": str(kc), "HOME": str(kc.parent)},
    )
    try:
        assert watch.stdout is not None
        assert watch.stdout.readline().split() == ["ADDED", "a"]
        manifest.write_text(POOL.format(name="agg-apply", zone="b"))
        assert "configured" in ok(kubectl(kc, "apply", "-f", str(manifest)))
        assert watch.stdout.readline().split() == ["MODIFIED", "b"]  # streamed through the aggregator
    finally:
        watch.kill()
        watch.wait(5)


def test_token_user_allowed(lab: Lab, tmp_path: Path) -> None:
    alice = token_kubeconfig(lab, "alice", tmp_path / "alice")
    manifest = tmp_path / "pool.yaml"
    manifest.write_text(POOL.format(name="agg-alice", zone="x"))
    ok(kubectl(alice, "create", "-f", str(manifest)))
    assert "agg-alice" in ok(kubectl(alice, "get", "np", "agg-alice", "--no-headers"))


def test_denied_by_the_devcluster(lab: Lab, tmp_path: Path) -> None:
    bob = token_kubeconfig(lab, "bob", tmp_path / "bob")
    res = kubectl(bob, "get", "nodepools")
    assert res.returncode != 0
    assert "Error from server (Forbidden)" in res.stderr
    assert (
        'User "bob" cannot list resource "nodepools" in API group "edge.aggapi.io" at the cluster scope'
        in res.stderr
    )
    code, status = JSONClient(lab.url, lab.pki.ca, token=TOKENS["bob"]).get(
        "/apis/edge.aggapi.io/v1alpha1/nodepools"
    )
    assert code == 403 and status["kind"] == "Status" and status["reason"] == "Forbidden"


def test_denied_by_aggapi_after_the_devcluster_allowed(lab: Lab, tmp_path: Path) -> None:
    """carol passes the devcluster's own check; aggapi re-authorizes with a SubjectAccessReview, which
    the devcluster answers with a denial (`reviewDenies`): the 403 comes from aggapi."""
    carol = token_kubeconfig(lab, "carol", tmp_path / "carol")
    res = kubectl(carol, "get", "nodepools", "agg-apply")
    assert res.returncode != 0
    assert "Error from server (Forbidden)" in res.stderr
    assert 'User "carol" cannot get resource "nodepools" in API group "edge.aggapi.io"' in res.stderr
    assert "reviewDenies" in res.stderr  # the SAR's reason: aggapi made the decision
    aggapi_log = (lab.state / "aggapi.log").read_text()
    assert "Traceback" not in aggapi_log


def test_no_credentials_is_401(lab: Lab) -> None:
    code, status = JSONClient(lab.url, lab.pki.ca).get("/apis/edge.aggapi.io/v1alpha1/nodepools")
    assert code == 401 and status["reason"] == "Unauthorized"


def test_aggapi_down_makes_the_apiservice_unavailable(lab: Lab, kc: Path) -> None:
    ok(kubectl(kc, "get", "nodepools"))  # discovery cached by kubectl, as a user's would be
    lab.stop_aggapi()
    try:
        cond = lab.wait_available("False", timeout=20)
        assert cond["reason"] == "FailedDiscoveryCheck"
        assert "failing or missing response from https://127.0.0.1:" in cond["message"]
        res = kubectl(kc, "get", "nodepools")
        assert res.returncode != 0
        assert "Error from server (ServiceUnavailable)" in res.stderr, res.stderr
        code, body = lab.admin().get("/apis/edge.aggapi.io/v1alpha1/nodepools")
        assert code == 503 and "service unavailable" in str(body)
        row = ok(kubectl(kc, "get", "apiservice", APISERVICE, "--no-headers")).split()
        assert row[2] == "False"
    finally:
        lab.start_aggapi()
    lab.wait_available("True", timeout=20)
    ok(kubectl(kc, "get", "nodepools"))
