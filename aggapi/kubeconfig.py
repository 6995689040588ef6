"""Write and read kubeconfig files.

Written files are self-contained (CA, client cert and key embedded as base64 `*-data`), mode
0600 because they hold credentials, and replaced atomically. TLS verification is never disabled.
"""

from __future__ import annotations

import base64
import binascii
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from cryptography import x509

from certs.files import write_pem_atomic

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class KubeconfigCredentials:
    """What one context of a kubeconfig resolves to."""

    server: str
    ca_pem: bytes | None
    cert_pem: bytes | None
    key_pem: bytes | None
    token: str | None
    insecure_skip_tls_verify: bool


def write_kubeconfig(
    path: Path,
    *,
    server: str,
    ca_pem: bytes,
    cert_path: Path | None = None,
    key_path: Path | None = None,
    token: str | None = None,
    cluster: str = "aggapi",
    user: str = "admin",
    context: str = "aggapi",
) -> None:
    """Write a one-cluster, one-user kubeconfig whose current context is `context`."""
    if not server.startswith("https://"):
        raise ValueError(f"server must be an https:// URL, got {server!r}")
    try:
        x509.load_pem_x509_certificates(ca_pem)
    except ValueError as e:
        raise ValueError(f"ca_pem is not PEM certificate data: {e}") from e
    if (cert_path is None) != (key_path is None):
        raise ValueError("cert_path and key_path must be given together")
    user_entry: dict[str, str] = {}
    if cert_path is not None and key_path is not None:
        user_entry["client-certificate-data"] = _b64(Path(cert_path).read_bytes())
        user_entry["client-key-data"] = _b64(Path(key_path).read_bytes())
    if token is not None:
        if not token:
            raise ValueError("token must be non-empty when given")
        user_entry["token"] = token
    doc: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {"name": cluster, "cluster": {"server": server, "certificate-authority-data": _b64(ca_pem)}}
        ],
        "users": [{"name": user, "user": user_entry}],
        "contexts": [{"name": context, "context": {"cluster": cluster, "user": user}}],
        "current-context": context,
        "preferences": {},
    }
    data = yaml.safe_dump(doc, sort_keys=False, default_flow_style=False).encode()
    write_pem_atomic(Path(path), data, private=True)
    log.debug("wrote kubeconfig %s for %s (context %s)", path, server, context)


def read_kubeconfig(path: Path, context: str | None = None) -> KubeconfigCredentials:
    """Resolve `context` (default: current-context) to server and credentials.

    Understands both embedded `*-data` fields and file references; relative file paths are
    resolved against the kubeconfig's directory, as client-go does.
    """
    path = Path(path)
    doc = yaml.safe_load(path.read_bytes())
    if not isinstance(doc, dict):
        raise ValueError(f"{path}: not a kubeconfig (top level is not a mapping)")
    name = context or doc.get("current-context")
    if not name:
        raise ValueError(f"{path}: no context given and no current-context set")
    ctx = _named(doc, "contexts", "context", name, path)
    cluster = _named(doc, "clusters", "cluster", ctx.get("cluster"), path)
    user = _named(doc, "users", "user", ctx.get("user"), path) if ctx.get("user") else {}
    server = cluster.get("server")
    if not isinstance(server, str) or not server:
        raise ValueError(f"{path}: cluster {ctx.get('cluster')!r} has no server")
    token = user.get("token")
    return KubeconfigCredentials(
        server=server,
        ca_pem=_data_or_file(cluster, "certificate-authority", path),
        cert_pem=_data_or_file(user, "client-certificate", path),
        key_pem=_data_or_file(user, "client-key", path),
        token=str(token) if token else None,
        insecure_skip_tls_verify=bool(cluster.get("insecure-skip-tls-verify", False)),
    )


def _named(doc: dict[str, Any], section: str, field: str, name: object, path: Path) -> dict[str, Any]:
    for entry in doc.get(section) or []:
        if isinstance(entry, dict) and entry.get("name") == name:
            body = entry.get(field) or {}
            if not isinstance(body, dict):
                raise ValueError(f"{path}: {section} entry {name!r} is malformed")
            return body
    raise ValueError(f"{path}: no {section} entry named {name!r}")


def _data_or_file(entry: dict[str, Any], key: str, path: Path) -> bytes | None:
    data = entry.get(f"{key}-data")
    if data:
        try:
            return base64.b64decode(str(data), validate=True)
        except binascii.Error as e:
            raise ValueError(f"{path}: {key}-data is not valid base64: {e}") from e
    ref = entry.get(key)
    if ref:
        ref_path = Path(str(ref))
        return (ref_path if ref_path.is_absolute() else path.parent / ref_path).read_bytes()
    return None


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")
