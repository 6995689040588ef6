"""Run the real devcluster (`python -m aggapi devcluster`) as a subprocess for tests, with its own PKI,
token file, policy and etcd prefix, and hand out clients and kubeconfigs for its users."""

from __future__ import annotations

import sys
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from aggapi.devcluster.labkit import Child, JSONClient, free_port, wait_for
from aggapi.devcluster.pki import DevclusterPKI, ensure_pki
from aggapi.kubeconfig import write_kubeconfig

CM = "/api/v1/namespaces/kube-system/configmaps/extension-apiserver-authentication"


@dataclass
class Devcluster:
    workdir: Path
    etcd_servers: str
    tokens: str = ""
    policy: str = ""
    check_interval: str = "500ms"
    port: int = field(default_factory=free_port)
    prefix: str = field(default_factory=lambda: f"/dc-{uuid.uuid4().hex[:8]}")
    extra_args: tuple[str, ...] = ()  # more devcluster flags (e.g. the egress selector)
    child: Child | None = None

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    @property
    def pki(self) -> DevclusterPKI:
        return DevclusterPKI(self.workdir / "pki")

    def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        ensure_pki(self.pki.directory)
        (self.workdir / "tokens.csv").write_text(self.tokens)
        (self.workdir / "policy.yaml").write_text(self.policy)
        self.child = Child(
            "devcluster",
            [
                sys.executable,
                "-m",
                "aggapi",
                "devcluster",
                "--bind-address=127.0.0.1",
                f"--secure-port={self.port}",
                f"--etcd-servers={self.etcd_servers}",
                f"--etcd-prefix={self.prefix}",
                f"--pki-dir={self.pki.directory}",
                f"--token-auth-file={self.workdir / 'tokens.csv'}",
                f"--authorization-policy-file={self.workdir / 'policy.yaml'}",
                f"--apiservice-check-interval={self.check_interval}",
                *self.extra_args,
            ],
            self.workdir / "devcluster.log",
        )
        self.child.start()
        admin = self.admin()
        wait_for(
            "devcluster ready", lambda: admin.get("/readyz")[0] == 200 or None, timeout=30, alive=[self.child]
        )
        wait_for(
            "ConfigMap published", lambda: admin.get(CM)[0] == 200 or None, timeout=30, alive=[self.child]
        )

    def stop(self) -> None:
        if self.child is not None:
            self.child.stop()

    def admin(self) -> JSONClient:
        return JSONClient(self.url, self.pki.ca, (self.pki.admin_cert, self.pki.admin_key))

    def client(self, token: str = "", cert: tuple[Path, Path] | None = None) -> JSONClient:
        return JSONClient(self.url, self.pki.ca, cert, token=token)

    def kubeconfig(self, path: Path, token: str | None = None) -> Path:
        """Admin (client certificate in system:masters) unless a token is given."""
        path.parent.mkdir(parents=True, exist_ok=True)
        if token is not None:
            write_kubeconfig(path, server=self.url, ca_pem=self.pki.ca.read_bytes(), token=token)
        else:
            write_kubeconfig(
                path,
                server=self.url,
                ca_pem=self.pki.ca.read_bytes(),
                cert_path=self.pki.admin_cert,
                key_path=self.pki.admin_key,
            )
        return path


# Users of the standalone devcluster tests: dave may read pods in namespace "team" only.
DEV_TOKENS = 'dave-token-0123456789,dave,uid-dave,"devs,testers"\n'
DEV_POLICY = """\
rules:
  - users: ["dave"]
    verbs: ["get", "list", "watch"]
    apiGroups: [""]
    resources: ["pods", "pods/log"]
    namespaces: ["team"]
  - groups: ["testers"]
    verbs: ["get"]
    apiGroups: ["apps"]
    resources: ["deployments/status"]
"""
