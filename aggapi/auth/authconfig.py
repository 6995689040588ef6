"""The client-CA and front-proxy settings kube-apiserver publishes in
`kube-system/extension-apiserver-authentication`, or that are given by flags."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field

from cryptography import x509

CONFIGMAP_NAMESPACE = "kube-system"
CONFIGMAP_NAME = "extension-apiserver-authentication"


def load_certs(pem: bytes) -> tuple[x509.Certificate, ...]:
    return tuple(x509.load_pem_x509_certificates(pem)) if pem.strip() else ()


@dataclass(frozen=True, slots=True)
class RequestHeaderConfig:
    """Who may assert a user in headers (the aggregator's front-proxy client cert), and which headers."""

    ca_pem: bytes
    allowed_names: tuple[str, ...] = ()  # empty: any CN signed by the requestheader CA
    username_headers: tuple[str, ...] = ("X-Remote-User",)
    uid_headers: tuple[str, ...] = ()
    group_headers: tuple[str, ...] = ("X-Remote-Group",)
    extra_prefixes: tuple[str, ...] = ("X-Remote-Extra-",)
    cas: tuple[x509.Certificate, ...] = field(default=(), compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "cas", load_certs(self.ca_pem))


@dataclass(frozen=True, slots=True)
class AuthConfig:
    client_ca_pem: bytes = b""
    requestheader: RequestHeaderConfig | None = None
    client_cas: tuple[x509.Certificate, ...] = field(default=(), compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "client_cas", load_certs(self.client_ca_pem))

    @property
    def trust_pem(self) -> bytes:
        """Every CA a client certificate may chain to, for the TLS handshake."""
        front = self.requestheader.ca_pem if self.requestheader else b""
        return b"\n".join(p.strip() for p in (self.client_ca_pem, front) if p.strip()) + b"\n"


def _json_list(data: Mapping[str, str], key: str, default: tuple[str, ...]) -> tuple[str, ...]:
    raw = data.get(key)
    if raw is None or raw == "":
        return default
    value = json.loads(raw)
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValueError(f"{key} must be a JSON list of strings")
    return tuple(value)


def from_configmap(data: Mapping[str, str]) -> AuthConfig:
    """Parse the ConfigMap's data exactly as kube-apiserver writes it (lists are JSON arrays)."""
    front: RequestHeaderConfig | None = None
    if data.get("requestheader-client-ca-file", "").strip():
        front = RequestHeaderConfig(
            ca_pem=data["requestheader-client-ca-file"].encode(),
            allowed_names=_json_list(data, "requestheader-allowed-names", ()),
            username_headers=_json_list(data, "requestheader-username-headers", ("X-Remote-User",)),
            uid_headers=_json_list(data, "requestheader-uid-headers", ()),
            group_headers=_json_list(data, "requestheader-group-headers", ("X-Remote-Group",)),
            extra_prefixes=_json_list(data, "requestheader-extra-headers-prefix", ("X-Remote-Extra-",)),
        )
    return AuthConfig(data.get("client-ca-file", "").encode(), front)


def to_configmap(cfg: AuthConfig) -> dict[str, str]:
    """The inverse, used by the devcluster to publish its own CAs."""
    data = {"client-ca-file": cfg.client_ca_pem.decode()}
    if cfg.requestheader is not None:
        rh = cfg.requestheader
        data.update(
            {
                "requestheader-client-ca-file": rh.ca_pem.decode(),
                "requestheader-allowed-names": json.dumps(list(rh.allowed_names)),
                "requestheader-username-headers": json.dumps(list(rh.username_headers)),
                "requestheader-uid-headers": json.dumps(list(rh.uid_headers)),
                "requestheader-group-headers": json.dumps(list(rh.group_headers)),
                "requestheader-extra-headers-prefix": json.dumps(list(rh.extra_prefixes)),
            }
        )
    return data
