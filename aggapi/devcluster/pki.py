"""The devcluster's certificates in one directory, created when missing and kept otherwise:

ca.crt/.key                   the cluster CA: signs the serving certificate (what kubeconfigs trust)
apiserver.crt/.key            serving certificate (127.0.0.1, localhost, kubernetes.default.svc, ...)
client-ca.crt/.key            signs client certificates (CN = user, O = groups)
admin.crt/.key                a client certificate in system:masters
front-proxy-ca.crt/.key       the requestheader CA aggregated servers trust for X-Remote-* headers
front-proxy-client.crt/.key   what the aggregator presents to aggregated servers
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from certs.files import load_or_create_ca, write_pair
from certs.pki import CertKeyPair, issue_client, issue_serving

FRONT_PROXY_CN = "front-proxy-client"
SERVING_NAMES = (
    "localhost",
    "kubernetes",
    "kubernetes.default",
    "kubernetes.default.svc",
    "kubernetes.default.svc.cluster.local",
)


@dataclass(frozen=True, slots=True)
class DevclusterPKI:
    directory: Path

    def path(self, name: str) -> Path:
        return self.directory / name

    @property
    def ca(self) -> Path:
        return self.path("ca.crt")

    @property
    def serving_cert(self) -> Path:
        return self.path("apiserver.crt")

    @property
    def serving_key(self) -> Path:
        return self.path("apiserver.key")

    @property
    def client_ca(self) -> Path:
        return self.path("client-ca.crt")

    @property
    def admin_cert(self) -> Path:
        return self.path("admin.crt")

    @property
    def admin_key(self) -> Path:
        return self.path("admin.key")

    @property
    def front_proxy_ca(self) -> Path:
        return self.path("front-proxy-ca.crt")

    @property
    def front_proxy_cert(self) -> Path:
        return self.path("front-proxy-client.crt")

    @property
    def front_proxy_key(self) -> Path:
        return self.path("front-proxy-client.key")

    def client_ca_pair(self) -> CertKeyPair:
        return load_or_create_ca(self.directory, "client-ca", common_name="devcluster-client-ca")


def _missing(*paths: Path) -> bool:
    return not all(p.exists() for p in paths)


def ensure_pki(directory: Path, ips: Sequence[str] = ("127.0.0.1",)) -> DevclusterPKI:
    """Create whatever is missing; never replaces an existing CA or certificate."""
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    pki = DevclusterPKI(directory)
    ca = load_or_create_ca(directory, "ca", common_name="devcluster-ca")
    if _missing(pki.serving_cert, pki.serving_key):
        serving = issue_serving(ca, common_name="kube-apiserver", dns_names=SERVING_NAMES, ips=list(ips))
        write_pair(serving, pki.serving_cert, pki.serving_key)
    client_ca = pki.client_ca_pair()
    if _missing(pki.admin_cert, pki.admin_key):
        write_pair(
            issue_client(client_ca, common_name="admin", organizations=["system:masters"]),
            pki.admin_cert,
            pki.admin_key,
        )
    front = load_or_create_ca(directory, "front-proxy-ca", common_name="devcluster-front-proxy-ca")
    if _missing(pki.front_proxy_cert, pki.front_proxy_key):
        write_pair(issue_client(front, common_name=FRONT_PROXY_CN), pki.front_proxy_cert, pki.front_proxy_key)
    return pki


def issue_user(pki: DevclusterPKI, name: str, groups: Sequence[str], out: Path) -> tuple[Path, Path]:
    """A client certificate for `name` in `groups`, written to out/<name>.crt/.key."""
    pair = issue_client(pki.client_ca_pair(), common_name=name, organizations=list(groups))
    safe = name.replace(":", "_")
    cert, key = out / f"{safe}.crt", out / f"{safe}.key"
    write_pair(pair, cert, key)
    return cert, key
