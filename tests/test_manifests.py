"""`aggapi manifests` and the apiservice/ kustomize tree, built by the real kubectl (kustomize).

No cluster is needed: `kubectl kustomize` builds offline, and every built object is checked against
the Kubernetes API schema by round-tripping it through kubernetes-asyncio's generated models (a
misspelled or misplaced field is dropped by them, and shows up as a difference).
`kubectl apply --dry-run=client -k` needs a server for discovery: it runs against the devcluster.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography import x509
from kubernetes_asyncio.client import ApiClient
from support.devcluster import Devcluster

from aggapi.__main__ import main
from aggapi.manifests import SOURCE_DIR, ManifestError, RenderOptions, _image_entry, render
from aggapi.options import add_serve_flags, from_args
from certs.files import load_cert, load_or_create_ca, load_pair, write_pair
from certs.pki import issue_serving, issued_by, key_matches, new_ca, service_dns_names

BIN = Path(sys.executable).parent
KUBECTL = BIN / "kubectl"
NS = "edge-ops"
IMAGE = "registry.example.com:5000/team/aggapi:1.2.3"
INSTALL_DOC = Path(__file__).resolve().parents[1] / "docs" / "install.md"

Obj = dict[str, Any]


def kustomize(directory: Path) -> list[Obj]:
    res = subprocess.run(
        [str(KUBECTL), "kustomize", str(directory)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={"HOME": str(directory.parent), "PATH": "/usr/bin:/bin"},
    )
    assert res.returncode == 0, f"kubectl kustomize failed: {res.stderr}"
    return [d for d in yaml.safe_load_all(res.stdout) if d]


def find(objs: list[Obj], kind: str, name: str) -> Obj:
    hits = [o for o in objs if o["kind"] == kind and o["metadata"]["name"] == name]
    assert len(hits) == 1, f"{kind}/{name}: {len(hits)} found"
    return hits[0]


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("manifests")
    out = base / "out"
    rc = main(
        ["manifests", "--out", str(out), "--ca-dir", str(base / "ca"), "--namespace", NS, "--image", IMAGE]
    )
    assert rc == 0
    return out


@pytest.fixture(scope="module")
def built(rendered: Path) -> list[Obj]:
    return kustomize(rendered)


def test_kubectl_apply_dry_run_client(rendered: Path, devcluster: Devcluster, tmp_path: Path) -> None:
    kubeconfig = devcluster.kubeconfig(tmp_path / "kubeconfig")
    env = {**os.environ, "KUBECONFIG": str(kubeconfig), "HOME": str(tmp_path)}
    res = subprocess.run(
        [str(KUBECTL), "apply", "--dry-run=client", "-k", str(rendered)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    assert res.returncode == 0, res.stderr
    out = res.stdout
    for what in (
        "apiservice.apiregistration.k8s.io/v1alpha1.edge.aggapi.io",
        "deployment.apps/aggapi",
        "statefulset.apps/aggapi-etcd",
        "clusterrolebinding.rbac.authorization.k8s.io/",
    ):
        assert what in out, out
    assert "(dry run)" in out


async def test_every_object_matches_the_kubernetes_schema(built: list[Obj]) -> None:
    kinds = {(o["kind"], o["metadata"]["name"]) for o in built}
    assert kinds >= {
        ("Namespace", NS),
        ("ServiceAccount", "aggapi"),
        ("Deployment", "aggapi"),
        ("PodDisruptionBudget", "aggapi"),
        ("Service", "aggapi"),
        ("Service", "aggapi-tunnel"),
        ("Secret", "aggapi-serving"),
        ("APIService", "v1alpha1.edge.aggapi.io"),
        ("StatefulSet", "aggapi-etcd"),
        ("Service", "aggapi-etcd"),
    }

    class Response:
        def __init__(self, obj: Obj) -> None:
            self.data = json.dumps(obj)

    async with ApiClient() as api:
        for obj in built:
            version = obj["apiVersion"].rpartition("/")[2]
            model = f"{version.capitalize()}{obj['kind']}"
            back = api.sanitize_for_serialization(api.deserialize(Response(obj), model))
            assert _dropped(obj, back) == [], f"{obj['kind']}/{obj['metadata']['name']}: unknown fields"
        # The check itself works: a misspelled field is reported.
        typo = json.loads(json.dumps(find(built, "Deployment", "aggapi")))
        typo["spec"]["template"]["spec"]["containers"][0]["securityContext"]["readOnlyRootFileSystem"] = True
        back = api.sanitize_for_serialization(api.deserialize(Response(typo), "V1Deployment"))
        assert _dropped(typo, back) == [
            ".spec.template.spec.containers[0].securityContext.readOnlyRootFileSystem"
        ]


def _dropped(orig: Any, back: Any, path: str = "") -> list[str]:
    """Paths in `orig` that did not survive the round trip through the typed model."""
    if isinstance(orig, dict):
        if not isinstance(back, dict):
            return [path]
        return [
            p
            for k, v in orig.items()
            for p in (_dropped(v, back[k], f"{path}.{k}") if k in back else [f"{path}.{k}"])
        ]
    if isinstance(orig, list):
        if not isinstance(back, list) or len(back) != len(orig):
            return [path]
        return [
            p for i, (a, b) in enumerate(zip(orig, back, strict=True)) for p in _dropped(a, b, f"{path}[{i}]")
        ]
    return [] if str(orig) == str(back) else [f"{path}: {orig!r} became {back!r}"]


def test_ca_bundle_verifies_the_serving_cert(built: list[Obj], rendered: Path) -> None:
    api = find(built, "APIService", "v1alpha1.edge.aggapi.io")
    ca = x509.load_pem_x509_certificate(base64.b64decode(api["spec"]["caBundle"]))
    assert api["spec"]["service"] == {"namespace": NS, "name": "aggapi", "port": 443}
    assert (api["spec"]["group"], api["spec"]["version"]) == ("edge.aggapi.io", "v1alpha1")
    assert (api["spec"]["groupPriorityMinimum"], api["spec"]["versionPriority"]) == (1000, 15)

    secret = find(built, "Secret", "aggapi-serving")
    assert secret["type"] == "kubernetes.io/tls"
    cert = x509.load_pem_x509_certificate(base64.b64decode(secret["data"]["tls.crt"]))
    assert issued_by(cert, ca)
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert f"aggapi.{NS}.svc" in sans.get_values_for_type(x509.DNSName)
    # The Secret carries the files written to OUT/serving, and the key belongs to the certificate.
    pair = load_pair(rendered / "serving" / "tls.crt", rendered / "serving" / "tls.key")
    assert pair.cert == cert and key_matches(cert, pair.key)
    assert base64.b64decode(secret["data"]["tls.key"]) == pair.key_pem()
    assert (rendered / "server" / "serving-secret.yaml").stat().st_mode & 0o077 == 0


def test_no_insecure_skip_tls_verify_anywhere(built: list[Obj], rendered: Path) -> None:
    assert "insecureSkipTLSVerify" not in yaml.safe_dump_all(built)
    for path in rendered.rglob("*.yaml"):
        assert "insecureSkipTLSVerify" not in path.read_text(), path


def test_namespace_is_substituted_everywhere(built: list[Obj], rendered: Path) -> None:
    assert "aggapi-system" not in yaml.safe_dump_all(built)
    for path in rendered.rglob("*.yaml"):
        assert "aggapi-system" not in path.read_text(), path  # comments included
    for obj in built:
        ns = obj["metadata"].get("namespace")
        if obj["kind"] in ("Namespace", "ClusterRole", "ClusterRoleBinding", "APIService"):
            assert ns is None
        elif (
            obj["kind"] == "RoleBinding"
            and obj["roleRef"]["name"] == "extension-apiserver-authentication-reader"
        ):
            assert ns == "kube-system"
        else:
            assert ns == NS, f"{obj['kind']}/{obj['metadata']['name']}"
        for subject in obj.get("subjects", []):
            if subject["kind"] == "ServiceAccount":  # groups (system:nodes) have no namespace
                assert subject["namespace"] == NS
    args = find(built, "Deployment", "aggapi")["spec"]["template"]["spec"]["containers"][0]["args"]
    servers = next(a for a in args if a.startswith("--etcd-servers=")).partition("=")[2].split(",")
    assert servers == [f"http://aggapi-etcd-{i}.aggapi-etcd.{NS}.svc:2379" for i in range(3)]
    egress = (rendered / "egress" / "egress-selector-configuration.yaml").read_text()
    assert f"https://aggapi-tunnel.{NS}.svc:8090" in egress


def test_deployment(built: list[Obj]) -> None:
    dep = find(built, "Deployment", "aggapi")
    spec = dep["spec"]
    assert spec["replicas"] == 2
    assert spec["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    anti = spec["template"]["spec"]["affinity"]["podAntiAffinity"][
        "preferredDuringSchedulingIgnoredDuringExecution"
    ]
    assert anti[0]["podAffinityTerm"]["topologyKey"] == "kubernetes.io/hostname"
    pod = spec["template"]["spec"]
    assert pod["serviceAccountName"] == "aggapi"
    (c,) = pod["containers"]
    assert c["image"] == IMAGE
    assert c["command"] == ["aggapi"] and c["args"][0] == "serve"

    sc = {**pod["securityContext"], **c["securityContext"]}  # the container's settings win
    assert sc["runAsNonRoot"] is True and sc["runAsUser"] == 65532
    assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert sc["seccompProfile"] == {"type": "RuntimeDefault"}

    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert ports == {"https": 6443, "tunnel-agent": 8091, "tunnel-egress": 8090}
    for probe, path in (("livenessProbe", "/livez"), ("readinessProbe", "/readyz")):
        get = c[probe]["httpGet"]
        assert (get["scheme"], get["path"], ports[get["port"]]) == ("HTTPS", path, 6443)
    assert set(c["resources"]["requests"]) == {"cpu", "memory"}
    assert set(c["resources"]["limits"]) == {"cpu", "memory"}

    mounts = {m["name"]: m for m in c["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert mounts["serving-cert"]["readOnly"] is True
    assert volumes["serving-cert"]["secret"]["secretName"] == "aggapi-serving"
    assert "emptyDir" in volumes[mounts["tmp"]["name"]] and mounts["tmp"]["mountPath"] == "/tmp"
    assert f"--tls-cert-file={mounts['serving-cert']['mountPath']}/tls.crt" in c["args"]

    pdb = find(built, "PodDisruptionBudget", "aggapi")
    assert pdb["spec"]["minAvailable"] == 1
    assert pdb["spec"]["selector"]["matchLabels"].items() <= pod_labels(dep).items()


def pod_labels(workload: Obj) -> dict[str, str]:
    labels: dict[str, str] = workload["spec"]["template"]["metadata"]["labels"]
    return labels


def test_deployment_args_are_flags_of_aggapi_serve(built: list[Obj]) -> None:
    args = find(built, "Deployment", "aggapi")["spec"]["template"]["spec"]["containers"][0]["args"]
    opts = _parse_serve(args)
    assert opts.serving.secure_port == 6443
    assert opts.serving.tls_cert_file == "/var/run/aggapi/serving/tls.crt"
    assert opts.serving.tls_private_key_file == "/var/run/aggapi/serving/tls.key"
    assert len(opts.etcd.servers) == 3 and opts.etcd.prefix == "/registry"


def _parse_serve(args: list[str]) -> Any:
    assert args[0] == "serve"
    parser = argparse.ArgumentParser(exit_on_error=False)
    add_serve_flags(parser)
    return from_args(parser.parse_args(args[1:]))


def test_services(built: list[Obj]) -> None:
    svc = find(built, "Service", "aggapi")
    assert svc["spec"]["ports"] == [{"name": "https", "port": 443, "targetPort": "https", "protocol": "TCP"}]
    tunnel = find(built, "Service", "aggapi-tunnel")
    assert {p["port"] for p in tunnel["spec"]["ports"]} == {8091, 8090}
    dep_labels = pod_labels(find(built, "Deployment", "aggapi"))
    for s in (svc, tunnel):
        assert s["spec"]["selector"].items() <= dep_labels.items()


def test_rbac(built: list[Obj]) -> None:
    def rules(name: str) -> dict[str, set[str]]:
        out: dict[str, set[str]] = {}
        for rule in find(built, "ClusterRole", name)["rules"]:
            for res in rule["resources"]:
                out.setdefault(res, set()).update(rule["verbs"])
        return out

    label = "rbac.authorization.k8s.io/aggregate-to-"
    view, edit, admin = (
        find(built, "ClusterRole", f"aggapi:aggregate-to-{r}") for r in ("view", "edit", "admin")
    )
    assert view["metadata"]["labels"][label + "view"] == "true"
    assert edit["metadata"]["labels"][label + "edit"] == "true"
    for role in (view, edit, admin):
        assert role["metadata"]["labels"][label + "admin"] == "true"
        assert {g for r in role["rules"] for g in r["apiGroups"]} == {"edge.aggapi.io"}
    v, e, a = (
        rules("aggapi:aggregate-to-view"),
        rules("aggapi:aggregate-to-edit"),
        rules("aggapi:aggregate-to-admin"),
    )
    for res in (
        "nodepools",
        "edgenodes",
        "uniteddeployments",
        "nodepools/status",
        "uniteddeployments/status",
    ):
        assert v[res] == {"get", "list", "watch"}
    assert v["edgenodes/health"] == {"get"}
    for res in ("nodepools", "uniteddeployments"):
        assert e[res] == {"create", "update", "patch", "delete", "deletecollection"}
    assert a == {"edgenodes/proxy": {"get", "create"}}
    assert "edgenodes/proxy" not in v and "edgenodes/proxy" not in e

    delegator = find(built, "ClusterRoleBinding", "aggapi:system:auth-delegator")
    assert delegator["roleRef"]["name"] == "system:auth-delegator"
    reader = find(built, "RoleBinding", "aggapi:extension-apiserver-authentication-reader")
    assert reader["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "Role",
        "name": "extension-apiserver-authentication-reader",
    }
    c = rules("aggapi:controller")
    assert {"get", "list", "watch", "update", "patch"} <= c["nodes"] and c["nodes/status"] == {"patch"}
    assert c["pods/eviction"] == {"create"} and {"update", "patch"} <= c["pods"]
    assert {"create", "update", "delete"} <= c["deployments"] and {"create", "update", "delete"} <= c[
        "statefulsets"
    ]
    assert c["events"] >= {"create", "patch"} and "list" in c["poddisruptionbudgets"]
    # blockOwnerDeletion on the workloads' ownerReferences (OwnerReferencesPermissionEnforcement).
    assert c["uniteddeployments/finalizers"] == {"update"}
    # The service topology trigger: follow Services, touch their Endpoints and EndpointSlices.
    assert {"list", "watch"} <= c["services"]
    assert {"list", "patch"} <= c["endpointslices"] and "patch" in c["endpoints"]
    election = find(built, "Role", "aggapi:leader-election")
    assert {"create", "update", "get"} <= set(election["rules"][0]["verbs"])
    for binding in ("ClusterRoleBinding/aggapi:controller", "RoleBinding/aggapi:leader-election"):
        kind, _, name = binding.partition("/")
        assert find(built, kind, name)["subjects"] == [
            {"kind": "ServiceAccount", "name": "aggapi", "namespace": NS}
        ]


def test_etcd(built: list[Obj]) -> None:
    sts = find(built, "StatefulSet", "aggapi-etcd")
    assert sts["spec"]["replicas"] == 3 and sts["spec"]["podManagementPolicy"] == "Parallel"
    headless = find(built, "Service", sts["spec"]["serviceName"])
    assert headless["spec"]["clusterIP"] == "None" and headless["spec"]["publishNotReadyAddresses"] is True
    assert sts["spec"]["volumeClaimTemplates"][0]["spec"]["accessModes"] == ["ReadWriteOnce"]
    pod = sts["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    sc = {**pod["securityContext"], **c["securityContext"]}
    assert sc["runAsNonRoot"] is True and sc["runAsUser"] != 0
    flags = dict(a.removeprefix("--").partition("=")[::2] for a in c["args"])
    members = [f"aggapi-etcd-{i}=http://aggapi-etcd-{i}.aggapi-etcd.{NS}.svc:2380" for i in range(3)]
    assert flags["initial-cluster"].split(",") == members
    assert flags["initial-cluster-state"] == "new"
    assert not any(f.startswith("auto-compaction") for f in flags)  # aggapi compacts (docs/storage.md)
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert c[probe]["httpGet"]["path"].startswith("/health")
    # Every flag is one the real etcd knows (the test binary is 3.5, like the image).
    help_text = subprocess.run(
        [str(BIN / "etcd"), "--help"], capture_output=True, text=True, check=False
    ).stdout
    for flag in flags:
        assert re.search(rf"^\s*--{re.escape(flag)}\b", help_text, re.M), f"etcd has no --{flag}"
    assert find(built, "PodDisruptionBudget", "aggapi-etcd")["spec"]["maxUnavailable"] == 1


def test_egress_selector_configuration(rendered: Path) -> None:
    cfg = yaml.safe_load((rendered / "egress" / "egress-selector-configuration.yaml").read_text())
    assert (cfg["apiVersion"], cfg["kind"]) == ("apiserver.k8s.io/v1beta1", "EgressSelectorConfiguration")
    sel = {s["name"]: s["connection"] for s in cfg["egressSelections"]}
    assert sel["cluster"]["proxyProtocol"] == "HTTPConnect"
    assert sel["cluster"]["transport"] == {"uds": {"udsName": "/etc/kubernetes/aggapi/egress.sock"}}
    assert sel["controlplane"] == {"proxyProtocol": "Direct"} and sel["etcd"] == {"proxyProtocol": "Direct"}
    assert "egress" not in (rendered / "kustomization.yaml").read_text()  # a host file, never applied


def test_rendering_again_reuses_the_ca_and_the_serving_cert(tmp_path: Path) -> None:
    ca_dir, out = tmp_path / "ca", tmp_path / "out"
    first = render(RenderOptions(out=out, ca_dir=ca_dir))
    ca_pem, cert_pem = (ca_dir / "ca.crt").read_bytes(), (out / "serving" / "tls.crt").read_bytes()
    second = render(RenderOptions(out=out, ca_dir=ca_dir))
    assert first.serving is not None and first.serving.issued
    assert second.serving is not None and not second.serving.issued
    assert second.ca_bundle_pem == first.ca_bundle_pem == ca_pem
    assert (ca_dir / "ca.crt").read_bytes() == ca_pem
    assert (out / "serving" / "tls.crt").read_bytes() == cert_pem
    # Another namespace needs other names: a new serving cert, still from the same CA.
    third = render(RenderOptions(out=out, ca_dir=ca_dir, namespace="edge-two"))
    assert third.ca_bundle_pem == ca_pem
    assert (out / "serving" / "tls.crt").read_bytes() != cert_pem
    cert = load_cert(out / "serving" / "tls.crt")
    assert "aggapi.edge-two.svc" in cert.extensions.get_extension_for_class(
        x509.SubjectAlternativeName
    ).value.get_values_for_type(x509.DNSName)
    api = find(kustomize(out), "APIService", "v1alpha1.edge.aggapi.io")
    assert base64.b64decode(api["spec"]["caBundle"]) == ca_pem


def test_ca_bundle_mode(tmp_path: Path) -> None:
    """Bring your own CA and serving cert: the CA key never comes near the renderer."""
    ca = load_or_create_ca(tmp_path / "ca", common_name="mine")
    (tmp_path / "bundle.pem").write_bytes(ca.cert_pem())
    serving = tmp_path / "serving"
    serving.mkdir()
    pair = issue_serving(ca, common_name="aggapi", dns_names=service_dns_names("aggapi", "aggapi-system"))
    write_pair(pair, serving / "tls.crt", serving / "tls.key")
    out = tmp_path / "out"

    render(RenderOptions(out=out, ca_bundle=tmp_path / "bundle.pem", serving_cert_dir=serving))
    secret = find(kustomize(out), "Secret", "aggapi-serving")
    assert base64.b64decode(secret["data"]["tls.crt"]) == pair.cert_pem()

    # Without the serving files the operator creates the Secret; a stale rendered one must not linger.
    result = render(RenderOptions(out=out, ca_bundle=tmp_path / "bundle.pem"))
    assert result.secret_file is None and not (out / "server" / "serving-secret.yaml").exists()
    assert not [o for o in kustomize(out) if o["kind"] == "Secret"]

    other = issue_serving(new_ca("other"), common_name="x", dns_names=["aggapi.aggapi-system.svc"])
    write_pair(other, serving / "tls.crt", serving / "tls.key")
    with pytest.raises(ManifestError, match="not signed by a CA in --ca-bundle"):
        render(RenderOptions(out=out, ca_bundle=tmp_path / "bundle.pem", serving_cert_dir=serving))
    write_pair(pair, serving / "tls.crt", serving / "tls.key")
    with pytest.raises(ManifestError, match=r"lacks the DNS name aggapi\.elsewhere\.svc"):
        render(
            RenderOptions(
                out=out, ca_bundle=tmp_path / "bundle.pem", serving_cert_dir=serving, namespace="elsewhere"
            )
        )


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--namespace", "kube-system"], "choose a dedicated one"),
        (["--namespace", "Edge"], "not a valid namespace name"),
        (["--image", "https://registry/aggapi"], "not an image reference"),
        (["--image", "aggapi latest"], "not an image reference"),
    ],
)
def test_bad_input_exits_2(
    tmp_path: Path, argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    rc = main(["manifests", "--out", str(tmp_path / "out"), "--ca-dir", str(tmp_path / "ca"), *argv])
    assert rc == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out").exists() and not (tmp_path / "ca").exists()


def test_refuses_to_write_into_the_source_tree_and_needs_it(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match="inside the source tree"):
        render(RenderOptions(out=SOURCE_DIR / "x", ca_dir=tmp_path / "ca"))
    with pytest.raises(ManifestError, match="source checkout"):
        render(RenderOptions(out=tmp_path / "out", ca_dir=tmp_path / "ca", source=tmp_path / "missing"))


@pytest.mark.parametrize(
    ("image", "entry"),
    [
        ("aggapi", {"newName": "aggapi"}),
        ("aggapi:0.1.0", {"newName": "aggapi", "newTag": "0.1.0"}),
        ("localhost:5000/aggapi", {"newName": "localhost:5000/aggapi"}),
        (
            "ghcr.io/o/aggapi:v1@sha256:" + "a" * 64,
            {"newName": "ghcr.io/o/aggapi", "digest": "sha256:" + "a" * 64},
        ),
    ],
)
def test_image_entry(image: str, entry: dict[str, str]) -> None:
    assert _image_entry(image) == {"name": "aggapi", **entry}


def _guide_overlays(root: Path) -> set[str]:
    """Write every `# <dir>/<file>` YAML block of docs/install.md under root; returns the dirs."""
    blocks = re.findall(r"```yaml\n# ([a-z-]+)/(\S+)\n(.*?)```", INSTALL_DOC.read_text(), re.S)
    for directory, name, body in blocks:
        (root / directory).mkdir(exist_ok=True)
        (root / directory / name).write_text(body)
    return {d for d, _, _ in blocks}


def test_existing_etcd_overlay_from_the_install_guide(tmp_path: Path) -> None:
    """The overlay in docs/install.md builds, drops the bundled etcd and gives aggapi TLS flags that parse."""
    render(RenderOptions(out=tmp_path / "aggapi", ca_dir=tmp_path / "ca"))
    assert "external-etcd" in _guide_overlays(tmp_path)
    for f in ("etcd-ca.crt", "etcd-client.crt", "etcd-client.key"):
        (tmp_path / "external-etcd" / f).write_text("placeholder\n")

    objs = kustomize(tmp_path / "external-etcd")
    assert not [o for o in objs if o["kind"] in ("StatefulSet", "NetworkPolicy")]
    assert not [o for o in objs if o["metadata"]["name"] == "aggapi-etcd"]
    pod = find(objs, "Deployment", "aggapi")["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    opts = _parse_serve(c["args"])
    assert all(s.startswith("https://") for s in opts.etcd.servers)
    mount = next(m for m in c["volumeMounts"] if m["name"] == "etcd-client")["mountPath"]
    assert opts.etcd.cafile == f"{mount}/ca.crt"
    assert (opts.etcd.certfile, opts.etcd.keyfile) == (f"{mount}/tls.crt", f"{mount}/tls.key")
    assert opts.serving.tls_cert_file == "/var/run/aggapi/serving/tls.crt"
    secret_name = next(v for v in pod["volumes"] if v["name"] == "etcd-client")["secret"]["secretName"]
    assert set(find(objs, "Secret", secret_name)["data"]) == {"ca.crt", "tls.crt", "tls.key"}
    assert {m["name"] for m in c["volumeMounts"]} == {"serving-cert", "tmp", "etcd-client"}


def test_tunnel_load_balancer_overlay_from_the_install_guide(tmp_path: Path) -> None:
    render(RenderOptions(out=tmp_path / "aggapi", ca_dir=tmp_path / "ca"))
    assert "tunnel-lb" in _guide_overlays(tmp_path)
    objs = kustomize(tmp_path / "tunnel-lb")
    assert find(objs, "Service", "aggapi-tunnel")["spec"]["type"] == "LoadBalancer"
    assert find(objs, "Service", "aggapi")["spec"]["type"] == "ClusterIP"
    assert find(objs, "StatefulSet", "aggapi-etcd")


def test_edge_nodes_may_post_health_votes_and_read_their_pool(built: list[Obj]) -> None:
    role = find(built, "ClusterRole", "aggapi:edge-node-health-votes")
    assert role["rules"] == [
        {"apiGroups": ["edge.aggapi.io"], "resources": ["edgenodes/health"], "verbs": ["create", "get"]},
        {"apiGroups": ["edge.aggapi.io"], "resources": ["nodepools/topology"], "verbs": ["get"]},
        {"apiGroups": ["edge.aggapi.io"], "resources": ["nodepools"], "verbs": ["get", "list", "watch"]},
    ]
    binding = find(built, "ClusterRoleBinding", "aggapi:edge-node-health-votes")
    assert binding["subjects"] == [
        {"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": "system:nodes"}
    ]


def test_edge_daemonset_runs_aggapi_edge_all_with_the_kubelets_certificates() -> None:
    """apiservice/edge: one `aggapi-edge all` per edge node; its arguments are what the real command
    accepts (the container's $(VAR)s filled in as the kubelet would)."""
    from edge import allinone

    objs = kustomize(SOURCE_DIR / "edge")
    ds = find(objs, "DaemonSet", "aggapi-edge")
    pod = ds["spec"]["template"]["spec"]
    assert pod["hostNetwork"] is True and pod["automountServiceAccountToken"] is False
    assert pod["nodeSelector"] == {"openyurt.io/is-edge-worker": "true"}
    (c,) = pod["containers"]
    assert c["command"] == ["aggapi-edge"] and c["args"][0] == "all"
    env = {e["name"]: e["valueFrom"] for e in c["env"]}
    assert env["NODE_NAME"] == {"fieldRef": {"fieldPath": "spec.nodeName"}}
    config = next(o for o in objs if o["kind"] == "ConfigMap")  # generated, with a hash suffix
    assert env["API_SERVER"]["configMapKeyRef"]["name"] == config["metadata"]["name"]
    values = {"NODE_NAME": "edge-1", "NODE_IP": "192.168.1.21", **config["data"]}
    args = [re.sub(r"\$\((\w+)\)", lambda m: values[m.group(1)], a) for a in c["args"]]
    p = argparse.ArgumentParser()
    allinone.add_parser(p.add_subparsers())
    cfg = allinone.config_from(p.parse_args(args))
    assert cfg.shadow is not None and cfg.health is not None and cfg.tunnel is not None
    assert cfg.shadow.node_name == "edge-1" and cfg.shadow.servers == ("https://KUBE-APISERVER.example:6443",)
    assert str(cfg.shadow.cert_file) == "/var/lib/kubelet/pki/kubelet-client-current.pem"
    assert str(cfg.health.serving_cert_file) == "/var/lib/kubelet/pki/kubelet-server-current.pem"
    mounts = {m["mountPath"] for m in c["volumeMounts"]}
    assert {"/var/lib/kubelet/pki", "/etc/kubernetes/pki/ca.crt", "/var/lib/aggapi-edge"} <= mounts
    # Not in the top-level install: edge nodes are opted in.
    assert not any(o["kind"] == "DaemonSet" for o in kustomize(SOURCE_DIR))
