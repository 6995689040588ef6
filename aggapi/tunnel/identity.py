"""Which node a gRPC peer is: read from its verified client certificate, never from what it says."""

from __future__ import annotations

import logging
from collections import OrderedDict
from typing import Any

from cryptography import x509
from cryptography.x509.oid import NameOID

from edge.tunnel.protocol import node_from_identity

log = logging.getLogger(__name__)

_CACHE_SIZE = 4096


class PeerIdentity:
    """Maps a peer certificate (PEM from grpc's auth_context) to a node name, with a bounded cache:
    every Stream call of an agent presents the same certificate, and parsing it each time is wasted work."""

    def __init__(self) -> None:
        self._cache: OrderedDict[bytes, str | None] = OrderedDict()

    def node_of(self, context: Any) -> str | None:
        """The node name from `CN=system:node:<name>, O=system:nodes`, or None for any other identity.

        grpc verified the chain against the agent CA during the handshake (require_client_auth).
        """
        try:
            pems = context.auth_context().get("x509_pem_cert") or []
        except Exception:  # not a TLS peer
            return None
        if not pems:
            return None
        pem = pems[0] if isinstance(pems, list) else pems
        key = pem if isinstance(pem, bytes) else str(pem).encode()
        if key in self._cache:
            self._cache.move_to_end(key)
            return self._cache[key]
        node = _parse(key)
        self._cache[key] = node
        if len(self._cache) > _CACHE_SIZE:
            self._cache.popitem(last=False)
        return node


def _parse(pem: bytes) -> str | None:
    try:
        cert = x509.load_pem_x509_certificate(pem)
    except ValueError:
        log.warning("peer presented an unparsable certificate")
        return None
    cns = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    orgs = cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)
    user = _text(cns[0].value) if len(cns) == 1 else ""  # several CNs: ambiguous, refuse
    return node_from_identity(user, [_text(o.value) for o in orgs])


def _text(value: str | bytes) -> str:
    return value if isinstance(value, str) else value.decode("utf-8", "replace")
