"""What users see: the real kubectl against a real `aggapi serve` on a real etcd."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import yaml
from support.aggapi import kubectl

POOL = """\
apiVersion: edge.aggapi.io/v1alpha1
kind: NodePool
metadata:
  name: {name}
  labels: {{suite: kubectl}}
spec:
  type: {type}
  labels: {{zone: {zone}}}
  taints:
  - {{key: edge, effect: NoSchedule}}
"""


def ok(res: subprocess.CompletedProcess[str]) -> str:
    assert res.returncode == 0, f"kubectl failed ({res.returncode}): {res.stderr}"
    return res.stdout


def test_api_resources_lists_nodepools_with_short_name(kubeconfig: Path) -> None:
    out = ok(kubectl(kubeconfig, "api-resources", "--api-group=edge.aggapi.io", "--no-headers"))
    rows = {line.split()[0]: line.split() for line in out.splitlines() if line.strip()}
    assert rows["nodepools"] == ["nodepools", "np", "edge.aggapi.io/v1alpha1", "false", "NodePool"]
    assert rows["edgenodes"] == ["edgenodes", "en", "edge.aggapi.io/v1alpha1", "false", "EdgeNode"]
    assert rows["uniteddeployments"] == [
        "uniteddeployments",
        "ud",
        "edge.aggapi.io/v1alpha1",
        "true",
        "UnitedDeployment",
    ]


def test_apply_creates_then_updates_and_get_shows_columns(kubeconfig: Path, tmp_path: Path) -> None:
    manifest = tmp_path / "pool.yaml"
    manifest.write_text(POOL.format(name="k-apply", type="Edge", zone="a"))
    assert "created" in ok(kubectl(kubeconfig, "apply", "-f", str(manifest)))
    manifest.write_text(POOL.format(name="k-apply", type="Edge", zone="b"))
    assert "configured" in ok(kubectl(kubeconfig, "apply", "-f", str(manifest)))
    out = ok(kubectl(kubeconfig, "get", "nodepools", "k-apply"))
    header, row = out.splitlines()
    assert header.split() == ["NAME", "TYPE", "READYNODES", "NOTREADYNODES", "AGE"]
    assert row.split()[:2] == ["k-apply", "Edge"]
    obj = yaml.safe_load(ok(kubectl(kubeconfig, "get", "np", "k-apply", "-o", "yaml")))
    assert obj["spec"]["labels"] == {"zone": "b"}
    assert obj["metadata"]["generation"] == 2
    assert obj["spec"]["taints"] == [{"key": "edge", "effect": "NoSchedule"}]


def test_patch_merge_and_json(kubeconfig: Path, tmp_path: Path) -> None:
    manifest = tmp_path / "pool.yaml"
    manifest.write_text(POOL.format(name="k-patch", type="Edge", zone="a"))
    ok(kubectl(kubeconfig, "create", "-f", str(manifest)))
    ok(
        kubectl(
            kubeconfig, "patch", "np", "k-patch", "--type", "merge", "-p", '{"spec":{"labels":{"extra":"1"}}}'
        )
    )
    ok(
        kubectl(
            kubeconfig,
            "patch",
            "np",
            "k-patch",
            "--type",
            "json",
            "-p",
            '[{"op":"add","path":"/spec/annotations","value":{"note":"x"}},{"op":"remove","path":"/spec/taints"}]',
        )
    )
    obj = json.loads(ok(kubectl(kubeconfig, "get", "np", "k-patch", "-o", "json")))
    assert obj["spec"]["labels"] == {"zone": "a", "extra": "1"}
    assert obj["spec"]["annotations"] == {"note": "x"}
    assert "taints" not in obj["spec"]
    res = kubectl(kubeconfig, "patch", "np", "k-patch", "-p", '{"spec":{}}')  # strategic: not offered
    assert res.returncode != 0 and "merge-patch+json" in res.stderr


def test_edit_through_kube_editor(kubeconfig: Path, tmp_path: Path) -> None:
    manifest = tmp_path / "pool.yaml"
    manifest.write_text(POOL.format(name="k-edit", type="Edge", zone="a"))
    ok(kubectl(kubeconfig, "create", "-f", str(manifest)))
    editor = tmp_path / "editor.sh"
    editor.write_text("#!/bin/sh\nsed -i 's/zone: a/zone: edited/' \"$1\"\n")
    editor.chmod(0o755)
    out = ok(kubectl(kubeconfig, "edit", "np", "k-edit", env={"KUBE_EDITOR": str(editor)}))
    assert "edited" in out
    obj = json.loads(ok(kubectl(kubeconfig, "get", "np", "k-edit", "-o", "json")))
    assert obj["spec"]["labels"] == {"zone": "edited"}


def test_delete(kubeconfig: Path, tmp_path: Path) -> None:
    manifest = tmp_path / "pool.yaml"
    manifest.write_text(POOL.format(name="k-delete", type="Cloud", zone="a"))
    ok(kubectl(kubeconfig, "create", "-f", str(manifest)))
    assert 'nodepool.edge.aggapi.io "k-delete" deleted' in ok(kubectl(kubeconfig, "delete", "np", "k-delete"))
    res = kubectl(kubeconfig, "get", "np", "k-delete")
    assert res.returncode == 1
    assert 'nodepools.edge.aggapi.io "k-delete" not found' in res.stderr


def test_label_and_field_selectors(kubeconfig: Path, tmp_path: Path) -> None:
    for name, zone in (("k-sel-a", "north"), ("k-sel-b", "south")):
        manifest = tmp_path / f"{name}.yaml"
        manifest.write_text(
            POOL.format(name=name, type="Edge", zone=zone).replace("suite: kubectl", f"sel: {zone}")
        )
        ok(kubectl(kubeconfig, "create", "-f", str(manifest)))
    names = ok(kubectl(kubeconfig, "get", "np", "-l", "sel=north", "-o", "name")).split()
    assert names == ["nodepool.edge.aggapi.io/k-sel-a"]
    names = ok(
        kubectl(kubeconfig, "get", "np", "-l", "sel in (north,south),sel!=north", "-o", "name")
    ).split()
    assert names == ["nodepool.edge.aggapi.io/k-sel-b"]
    names = ok(
        kubectl(kubeconfig, "get", "np", "--field-selector", "metadata.name=k-sel-b", "-o", "name")
    ).split()
    assert names == ["nodepool.edge.aggapi.io/k-sel-b"]
    res = kubectl(kubeconfig, "get", "np", "--field-selector", "spec.type=Edge")
    assert res.returncode != 0 and "field selector" in res.stderr


def test_get_watch_sees_change_by_another_client(kubeconfig: Path, tmp_path: Path) -> None:
    manifest = tmp_path / "pool.yaml"
    manifest.write_text(POOL.format(name="k-watch", type="Edge", zone="a"))
    ok(kubectl(kubeconfig, "create", "-f", str(manifest)))
    env = {"KUBECONFIG": str(kubeconfig), "HOME": str(kubeconfig.parent)}
    from support.aggapi import KUBECTL

    watcher = subprocess.Popen(
        [
            str(KUBECTL),
            "get",
            "np",
            "k-watch",
            "-w",
            "-o",
            "custom-columns=NAME:.metadata.name,ZONE:.spec.labels.zone",
            "--request-timeout=0",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**__import__("os").environ, **env},
    )
    try:
        time.sleep(1.5)  # let the watch start after the initial list
        ok(
            kubectl(
                kubeconfig,
                "patch",
                "np",
                "k-watch",
                "--type",
                "merge",
                "-p",
                '{"spec":{"labels":{"zone":"z9"}}}',
            )
        )
        deadline = time.monotonic() + 20
        seen = ""
        assert watcher.stdout is not None
        while time.monotonic() < deadline:
            line = watcher.stdout.readline()
            seen += line
            if "z9" in line:
                break
        assert "z9" in seen, seen
    finally:
        watcher.terminate()
        watcher.wait(5)


def test_chunked_list_over_500_objects(kubeconfig: Path, tmp_path: Path) -> None:
    items = [
        {
            "apiVersion": "edge.aggapi.io/v1alpha1",
            "kind": "NodePool",
            "metadata": {"name": f"k-chunk-{i:03d}", "labels": {"chunk": "yes"}},
            "spec": {"type": "Edge"},
        }
        for i in range(520)
    ]
    # Multi-document YAML, not a v1 List: kubectl validates a List against the core group's OpenAPI,
    # which kube-apiserver serves and an aggregated server alone does not.
    manifest = tmp_path / "many.yaml"
    manifest.write_text(yaml.safe_dump_all(items))
    ok(kubectl(kubeconfig, "create", "-f", str(manifest), timeout=300))
    out = ok(kubectl(kubeconfig, "get", "np", "-l", "chunk=yes", "--chunk-size=50", "-o", "name", "-v=6"))
    names = out.split()
    assert names == [f"nodepool.edge.aggapi.io/k-chunk-{i:03d}" for i in range(520)]
    res = kubectl(kubeconfig, "get", "np", "-l", "chunk=yes", "--chunk-size=50", "-v=6")
    assert res.stderr.count("continue=") >= 10, "kubectl should have paged with continue tokens"
    assert len(res.stdout.splitlines()) == 521


def test_explain_nodepool_taints(kubeconfig: Path) -> None:
    out = ok(kubectl(kubeconfig, "explain", "nodepools.spec.taints"))
    assert "KIND:       NodePool" in out
    for field in ("effect", "key", "value"):
        assert f"  {field}\t" in out
    assert "NoSchedule, PreferNoSchedule, NoExecute" in out
