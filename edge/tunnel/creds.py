"""The agent's TLS files: load them into grpc credentials, and notice when they are replaced (rotation).

Files are read fresh for every new connection, so a rotated certificate is used at the next connect
even without the watcher; the watcher makes that connect happen soon after the files change.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import serialization

Stamp = tuple[tuple[int, int, int], ...]


@dataclass(frozen=True, slots=True)
class TLSFiles:
    cert: Path
    key: Path
    ca: Path

    def stamp(self) -> Stamp | None:
        """What changes when any file is rewritten (atomic replace: a new inode); None if one is missing."""
        try:
            return tuple(_stat(p) for p in (self.cert, self.key, self.ca))
        except OSError:
            return None

    def load(self) -> tuple[bytes, bytes, bytes]:
        """(cert, key, ca) PEM bytes, checked to belong together. Raises ValueError/OSError."""
        cert_pem, key_pem, ca_pem = self.cert.read_bytes(), self.key.read_bytes(), self.ca.read_bytes()
        cert = x509.load_pem_x509_certificate(cert_pem)
        key = serialization.load_pem_private_key(key_pem, password=None)
        fmt = serialization.PublicFormat.SubjectPublicKeyInfo
        enc = serialization.Encoding.DER
        if cert.public_key().public_bytes(enc, fmt) != key.public_key().public_bytes(enc, fmt):
            raise ValueError(f"{self.key} does not match the certificate in {self.cert} (mid-rotation?)")
        x509.load_pem_x509_certificates(ca_pem)
        return cert_pem, key_pem, ca_pem

    def credentials(self) -> grpc.ChannelCredentials:
        cert_pem, key_pem, ca_pem = self.load()
        return grpc.ssl_channel_credentials(
            root_certificates=ca_pem, private_key=key_pem, certificate_chain=cert_pem
        )


def _stat(path: Path) -> tuple[int, int, int]:
    st = os.stat(path)
    return (st.st_mtime_ns, st.st_size, st.st_ino)
