"""The tunnel server's TLS files, re-read when they change (gRPC asks on every new agent handshake)."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import serialization

log = logging.getLogger(__name__)


def _stamp(*paths: Path) -> tuple[tuple[int, int, int], ...]:
    out = []
    for p in paths:
        st = os.stat(p)
        out.append((st.st_mtime_ns, st.st_size, st.st_ino))
    return tuple(out)


class ServerCertFiles:
    """A certificate-configuration fetcher for grpc.dynamic_ssl_server_credentials.

    `fetch()` runs in gRPC's own thread for each handshake: it stats the files (cheap) and returns a new
    configuration only when they changed and form a matching certificate/key pair; a half-written
    rotation keeps the current one until the next handshake looks again. It never raises.
    """

    def __init__(self, cert_file: Path, key_file: Path, ca_file: Path) -> None:
        self.cert_file, self.key_file, self.ca_file = cert_file, key_file, ca_file
        self._stamp: tuple[tuple[int, int, int], ...] | None = None
        self.reloads = 0

    def load(self) -> Any:
        try:
            stamp = _stamp(self.cert_file, self.key_file, self.ca_file)
            if stamp == self._stamp:
                return None
            cert, key, ca = self.cert_file.read_bytes(), self.key_file.read_bytes(), self.ca_file.read_bytes()
            _check_pair(cert, key)
            x509.load_pem_x509_certificates(ca)
        except (OSError, ValueError, TypeError) as exc:
            log.warning("tunnel server certificate files not (re)loaded, keeping the current ones: %s", exc)
            return None
        first = self._stamp is None
        self._stamp = stamp
        if not first:
            self.reloads += 1
            log.info("tunnel server certificate or agent CA changed: new agent connections use them")
        return grpc.ssl_server_certificate_configuration([(key, cert)], root_certificates=ca)

    def fetch(self) -> Any:
        try:
            return self.load()
        except Exception:  # gRPC's thread must never see an exception from us
            log.exception("tunnel server certificate reload failed")
            return None


def _check_pair(cert_pem: bytes, key_pem: bytes) -> None:
    cert = x509.load_pem_x509_certificate(cert_pem)
    key = serialization.load_pem_private_key(key_pem, password=None)
    pub = serialization.PublicFormat.SubjectPublicKeyInfo
    enc = serialization.Encoding.DER
    if cert.public_key().public_bytes(enc, pub) != key.public_key().public_bytes(enc, pub):
        raise ValueError(f"the key does not belong to the certificate {cert.subject.rfc4514_string()}")
