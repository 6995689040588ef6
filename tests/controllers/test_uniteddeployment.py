"""UnitedDeployments end to end: kubectl → devcluster (aggregation) → aggapi → etcd, the controller in
aggapi writing Deployments into the devcluster, tests playing kube's deployment controller (workload
status), and the devcluster's garbage-collector stand-in deleting workloads whose UnitedDeployment is
gone."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from npkit import MERGE, eventually
from support.etcd import EtcdServer
from udkit import (
    OWNER_KEYS,
    UDEnv,
    condition,
    create_pool,
    create_ud,
    deploys,
    get_ud,
    patch_pool,
    patch_ud,
    roll_out,
    start_ud_env,
    stop_ud_env,
    ud_manifest,
    uds,
    uid,
    wait_condition,
    workload,
)

POOL_NAME = "apps.openyurt.io/pool-name"
REVISION = "apps.openyurt.io/revision"
NODEPOOL = "apps.openyurt.io/nodepool"


@pytest.fixture(scope="module")
def env(etcd_server: EtcdServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[UDEnv]:
    e = start_ud_env(etcd_server, tmp_path_factory.mktemp("ud"))
    try:
        yield e
    finally:
        stop_ud_env(e)


def pod_spec(d: dict[str, Any]) -> dict[str, Any]:
    result: dict[str, Any] = d["spec"]["template"]["spec"]
    return result


def test_one_workload_per_pool_with_selector_tweaks_and_status(env: UDEnv) -> None:
    ns, hz, bj, sh, other = uid("ns"), uid("hz"), uid("bj"), uid("sh"), uid("other")
    region = uid("north")
    create_pool(env, hz, taints=[{"key": "edge", "value": "hz", "effect": "NoSchedule"}])
    create_pool(env, bj, {"region": region})
    create_pool(env, other)
    body = ud_manifest(
        "web",
        pools=[hz],
        nodepoolSelector={"matchLabels": {"region": region}},
        workloadTweaks=[
            {
                "pools": [hz],
                "replicas": 3,
                "containerImages": [{"name": "web", "image": "nginx:1.27-alpine"}],
            },
            {
                "nodepoolSelector": {"matchLabels": {"region": region}},
                "patches": [{"op": "add", "path": "/spec/template/spec/hostNetwork", "value": True}],
            },
        ],
    )
    ud = create_ud(env, ns, body)
    assert ud["spec"]["revisionHistoryLimit"] == 10  # defaulted

    d_hz = eventually(lambda: workload(env, ns, f"web-{hz}"), "the hz workload")
    d_bj = eventually(lambda: workload(env, ns, f"web-{bj}"), "the bj workload")
    assert workload(env, ns, f"web-{other}") is None
    for d, pool in ((d_hz, hz), (d_bj, bj)):
        assert d["metadata"]["labels"][POOL_NAME] == pool and d["metadata"]["labels"]["app"] == "web"
        assert len(d["metadata"]["labels"][REVISION]) == 10
        assert d["spec"]["selector"] == {"matchLabels": {"app": "web", POOL_NAME: pool}}
        assert d["spec"]["template"]["metadata"]["labels"] == {"app": "web", POOL_NAME: pool}
        assert pod_spec(d)["nodeSelector"] == {NODEPOOL: pool}
        assert d["spec"]["revisionHistoryLimit"] == 10
        (ref,) = d["metadata"]["ownerReferences"]
        assert sorted(ref) == OWNER_KEYS
        assert ref == {
            "apiVersion": "edge.aggapi.io/v1alpha1",
            "kind": "UnitedDeployment",
            "name": "web",
            "uid": ud["metadata"]["uid"],
            "controller": True,
            "blockOwnerDeletion": True,
        }
    assert d_hz["spec"]["replicas"] == 3 and pod_spec(d_hz)["containers"][0]["image"] == "nginx:1.27-alpine"
    assert pod_spec(d_hz)["tolerations"] == [
        {"key": "edge", "operator": "Equal", "value": "hz", "effect": "NoSchedule"}
    ]
    assert "hostNetwork" not in pod_spec(d_hz)
    assert d_bj["spec"]["replicas"] == 2 and pod_spec(d_bj)["containers"][0]["image"] == "nginx:1.27"
    assert pod_spec(d_bj)["hostNetwork"] is True and "tolerations" not in pod_spec(d_bj)

    wait_condition(env, ns, "web", "AppDispatched", "True")
    st = get_ud(env, ns, "web")["status"]
    assert condition(get_ud(env, ns, "web"), "PoolFound")["status"] == "True"
    assert (st["replicas"], st["readyReplicas"], st["updatedReplicas"]) == (5, 0, 0)
    assert [p["name"] for p in st["poolStatuses"]] == sorted([hz, bj])
    assert condition(get_ud(env, ns, "web"), "AppReady")["status"] == "False"

    for pool in (hz, bj):
        roll_out(env, ns, f"web-{pool}")
    wait_condition(env, ns, "web", "AppReady", "True")
    wait_condition(env, ns, "web", "AppUpdated", "True")
    st = get_ud(env, ns, "web")["status"]
    assert (st["replicas"], st["readyReplicas"], st["updatedReplicas"]) == (5, 5, 5)
    assert st["currentRevision"] == st["updateRevision"]
    assert st["observedGeneration"] == 1

    # What users see: kubectl through the devcluster's aggregation.
    res = env.kubectl("get", "ud", "-n", ns)
    assert res.returncode == 0, res.stderr
    header, row = res.stdout.splitlines()
    assert header.split() == ["NAME", "TOTAL", "READY", "UPDATED", "AGE"]
    assert row.split()[:4] == ["web", "5", "5", "5"]

    # A pool created later that matches the selector gets the app.
    create_pool(env, sh, {"region": region})
    d_sh = eventually(lambda: workload(env, ns, f"web-{sh}"), "the new pool's workload")
    assert pod_spec(d_sh)["nodeSelector"] == {NODEPOOL: sh} and pod_spec(d_sh)["hostNetwork"] is True

    # A pool that stops being a target loses its workload; the others are left alone.
    rv_bj = workload(env, ns, f"web-{bj}")["metadata"]["resourceVersion"]  # type: ignore[index]
    patch_ud(env, ns, "web", {"spec": {"pools": []}})
    eventually(lambda: workload(env, ns, f"web-{hz}") is None, "hz workload deleted")
    assert workload(env, ns, f"web-{bj}")["metadata"]["resourceVersion"] == rv_bj  # type: ignore[index]


def test_template_change_rolls_pool_by_pool(env: UDEnv) -> None:
    ns, tier = uid("ns"), uid("tier")
    pools = sorted(uid(p) for p in ("a", "b", "c"))
    for p in pools:
        create_pool(env, p, {"tier": tier})
    create_ud(env, ns, ud_manifest("app", nodepoolSelector={"matchLabels": {"tier": tier}}))
    names = [f"app-{p}" for p in pools]
    for n in names:
        eventually(lambda n=n: workload(env, ns, n), n)
        roll_out(env, ns, n)
    wait_condition(env, ns, "app", "AppUpdated", "True")
    first = get_ud(env, ns, "app")["status"]["currentRevision"]
    old = {n: workload(env, ns, n)["metadata"]["labels"][REVISION] for n in names}  # type: ignore[index]

    def image(n: str) -> str:
        d = workload(env, ns, n)
        assert d is not None
        return str(pod_spec(d)["containers"][0]["image"])

    patch = {"spec": {"workloadTemplate": {"deploymentTemplate": {"spec": {"template": {"spec": {
        "containers": [{"name": "web", "image": "nginx:1.28"}]}}}}}}}  # fmt: skip
    patch_ud(env, ns, "app", patch)
    for i, n in enumerate(names):
        eventually(lambda n=n: image(n) == "nginx:1.28", f"{n} updated")
        wait_condition(env, ns, "app", "AppUpdated", "False", "RollingOut", f"rolling out pool {pools[i]} ")
        for later in names[i + 1 :]:
            assert image(later) == "nginx:1.27", f"{later} updated before {n} rolled out"
        d = workload(env, ns, n)
        assert d is not None and d["metadata"]["labels"][REVISION] != old[n]
        roll_out(env, ns, n)
    wait_condition(env, ns, "app", "AppUpdated", "True", "RolloutComplete")
    st = get_ud(env, ns, "app")["status"]
    assert st["currentRevision"] == st["updateRevision"] != first
    assert st["observedGeneration"] == 2
    assert {p["name"]: p["revision"] for p in st["poolStatuses"]} == {
        p: workload(env, ns, f"app-{p}")["metadata"]["labels"][REVISION]  # type: ignore[index]
        for p in pools
    }

    # Scaling is not a revision: every pool at once, revision labels unchanged.
    revs = {n: workload(env, ns, n)["metadata"]["labels"][REVISION] for n in names}  # type: ignore[index]
    patch_ud(env, ns, "app", {"spec": {"workloadTweaks": [{"pools": pools, "replicas": 4}]}})
    for n in names:
        eventually(lambda n=n: workload(env, ns, n)["spec"]["replicas"] == 4, f"{n} scaled")  # type: ignore[index]
        assert workload(env, ns, n)["metadata"]["labels"][REVISION] == revs[n]  # type: ignore[index]


def test_workload_of_another_controller_is_not_touched(env: UDEnv) -> None:
    ns, pool = uid("ns"), uid("p")
    create_pool(env, pool)
    foreign = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": f"web-{pool}",
            "labels": {POOL_NAME: pool},
            "ownerReferences": [
                {
                    "apiVersion": "example.com/v1",
                    "kind": "Other",
                    "name": "x",
                    "uid": "u-1",
                    "controller": True,
                }
            ],
        },
        "spec": {"replicas": 7},
    }
    code, out = env.dc.request("POST", deploys(ns), foreign)
    assert code == 201, out
    create_ud(env, ns, ud_manifest("web", pools=[pool]))
    c = wait_condition(env, ns, "web", "AppDispatched", "False", "WorkloadConflict")
    assert f"web-{pool}" in c["message"] and "Other x" in c["message"]
    d = workload(env, ns, f"web-{pool}")
    assert d is not None and d["metadata"]["resourceVersion"] == out["metadata"]["resourceVersion"]


def test_deleting_the_ud_leaves_its_workloads_to_the_garbage_collector(env: UDEnv, tmp_path: Path) -> None:
    ns, pool = uid("ns"), uid("p")
    create_pool(env, pool, taints=[{"key": "a", "effect": "NoSchedule"}])
    # A UnitedDeployment held by a finalizer: deleting it only sets its deletionTimestamp.
    held = ud_manifest("held", pools=[pool])
    held["metadata"]["finalizers"] = ["example.com/hold"]
    create_ud(env, ns, held)
    create_ud(env, ns, ud_manifest("live", pools=[pool]))  # tells when the controller saw a pool change
    for n in ("held", "live"):
        eventually(lambda n=n: workload(env, ns, f"{n}-{pool}"), n)
    manifest = tmp_path / "held.yaml"
    manifest.write_text(yaml.safe_dump({**held, "metadata": {"name": "held", "namespace": ns}}))
    res = env.kubectl("delete", "-f", str(manifest), "--wait=false")
    assert res.returncode == 0, res.stderr
    assert get_ud(env, ns, "held")["metadata"]["deletionTimestamp"]
    before = workload(env, ns, f"held-{pool}")
    assert before is not None

    patch_pool(env, pool, {"spec": {"taints": [{"key": "b", "effect": "NoSchedule"}]}})

    def live_tolerates_b() -> bool:
        d = workload(env, ns, f"live-{pool}")
        return d is not None and any(t["key"] == "b" for t in pod_spec(d).get("tolerations", []))

    eventually(live_tolerates_b, "the live UnitedDeployment's workload follows the pool's taints")
    after = workload(env, ns, f"held-{pool}")
    assert after is not None and after["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"]

    # The owner still exists (being deleted): the garbage collector keeps its workload ...
    res = env.kubectl("delete", "ud", "live", "-n", ns)
    assert res.returncode == 0, res.stderr
    eventually(lambda: workload(env, ns, f"live-{pool}") is None, "live's workload garbage-collected")
    assert workload(env, ns, f"held-{pool}") is not None
    # ... until the owner is gone.
    code, out = env.agg.request("PATCH", f"{uds(ns)}/held", {"metadata": {"finalizers": None}}, headers=MERGE)
    assert code == 200, out
    eventually(lambda: workload(env, ns, f"held-{pool}") is None, "held's workload garbage-collected")
    # Nothing brings them back: once a later UnitedDeployment's workload exists, they are still gone.
    create_ud(env, ns, ud_manifest("later", pools=[pool]))
    eventually(lambda: workload(env, ns, f"later-{pool}"), "a later UnitedDeployment's workload")
    assert workload(env, ns, f"live-{pool}") is None and workload(env, ns, f"held-{pool}") is None


def test_invalid_templates_are_refused_with_causes(env: UDEnv, tmp_path: Path) -> None:
    ns = uid("ns")
    bad = ud_manifest(
        "bad",
        pools=["Not_A_Pool"],
        workloadTweaks=[
            {"pools": ["x"], "containerImages": [{"name": "nope", "image": "i"}]},
            {"pools": ["x"], "patches": [{"op": "replace", "path": "/spec/missing/field", "value": 1}]},
        ],
    )
    tpl = bad["spec"]["workloadTemplate"]["deploymentTemplate"]["spec"]["template"]
    tpl["metadata"]["labels"] = {"app": "other"}
    tpl["spec"]["containers"] = [{"name": "web"}]
    code, out = env.agg.request("POST", uds(ns), bad)
    assert code == 422, out
    assert out["reason"] == "Invalid" and out["details"]["kind"] == "UnitedDeployment"
    causes = {(c["field"], c["reason"]) for c in out["details"]["causes"]}
    base = "spec.workloadTemplate.deploymentTemplate.spec.template"
    assert causes == {
        (f"{base}.metadata.labels", "FieldValueInvalid"),
        (f"{base}.spec.containers[0].image", "FieldValueRequired"),
        ("spec.pools[0]", "FieldValueInvalid"),
        ("spec.workloadTweaks[0].containerImages[0].name", "FieldValueInvalid"),
        ("spec.workloadTweaks[1].patches", "FieldValueInvalid"),
    }, out
    msgs = {c["field"]: c["message"] for c in out["details"]["causes"]}
    assert "`selector` does not match template `labels`" in msgs[f"{base}.metadata.labels"]
    assert "path /spec/missing does not exist" in msgs["spec.workloadTweaks[1].patches"]

    # Neither template, through kubectl and the aggregation: kubectl prints the causes.
    none = ud_manifest("none", pools=["a"])
    none["spec"]["workloadTemplate"] = {}
    none["metadata"]["namespace"] = ns
    manifest = tmp_path / "none.yaml"
    manifest.write_text(yaml.safe_dump(none))
    res = env.kubectl("create", "-f", str(manifest))
    assert res.returncode != 0
    assert 'The UnitedDeployment "none" is invalid' in res.stderr, res.stderr
    assert (
        "spec.workloadTemplate: Required value: one of deploymentTemplate or statefulSetTemplate"
        in res.stderr
    )

    # The selector and the workload kind are immutable.
    create_ud(env, ns, ud_manifest("imm", pools=["a"]))
    sts = {"statefulSetTemplate": get_ud(env, ns, "imm")["spec"]["workloadTemplate"]["deploymentTemplate"]}
    code, out = env.agg.request(
        "PATCH",
        f"{uds(ns)}/imm",
        {
            "spec": {
                "selector": {"matchLabels": {"app": "x"}},
                "workloadTemplate": {**sts, "deploymentTemplate": None},
            }
        },
        headers=MERGE,
    )
    assert code == 422, out
    fields = {c["field"] for c in out["details"]["causes"]}
    assert {"spec.selector", "spec.workloadTemplate"} <= fields, out


def test_statefulset_template_and_explain(env: UDEnv) -> None:
    ns, pool = uid("ns"), uid("p")
    create_pool(env, pool)
    body = ud_manifest("db", pools=[pool], replicas=1)
    wt = body["spec"]["workloadTemplate"]
    wt["statefulSetTemplate"] = wt.pop("deploymentTemplate")
    wt["statefulSetTemplate"]["spec"]["serviceName"] = "db"
    create_ud(env, ns, body)
    path = f"/apis/apps/v1/namespaces/{ns}/statefulsets/db-{pool}"
    sts = eventually(lambda: env.dc.get(path)[1] if env.dc.get(path)[0] == 200 else None, "the StatefulSet")
    assert sts["spec"]["serviceName"] == "db" and sts["spec"]["replicas"] == 1
    assert pod_spec(sts)["nodeSelector"] == {NODEPOOL: pool}
    assert sts["metadata"]["ownerReferences"][0]["kind"] == "UnitedDeployment"
    assert workload(env, ns, f"db-{pool}") is None  # no Deployment

    res = env.kubectl("explain", "uniteddeployments.spec.workloadTweaks")
    assert res.returncode == 0, res.stderr
    assert "KIND:       UnitedDeployment" in res.stdout and "containerImages" in res.stdout
