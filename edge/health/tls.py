"""mTLS with node certificates, both ways: the node cert signs outgoing probes and votes, and serves the
peer endpoint unless a separate serving certificate is given (a kubelet's client certificate is
clientAuth only and its serving certificate serverAuth only: pass both, as the kubelet has them).
Peers are verified against the node CA and identified by the certificate subject (CN=system:node:<name>,
O=system:nodes), not by host name: node certs need not carry IP SANs.

Rotation: `reload_if_changed()` (called by the agent's cert watcher) reloads the server context in place
(new handshakes use the new cert) and rebuilds the client contexts.
"""

from __future__ import annotations

import logging
import ssl
from pathlib import Path
from typing import Any

from edge.tunnel.creds import Stamp, TLSFiles

log = logging.getLogger(__name__)

NODE_PREFIX = "system:node:"
NODES_GROUP = "system:nodes"


def node_identity(peercert: Any) -> str | None:
    """The node name a verified peer certificate (ssl's getpeercert() dict) carries, or None."""
    if not isinstance(peercert, dict):
        return None
    cns: list[str] = []
    orgs: list[str] = []
    for rdn in peercert.get("subject", ()):
        for key, value in rdn:
            if key == "commonName":
                cns.append(str(value))
            elif key == "organizationName":
                orgs.append(str(value))
    if len(cns) != 1 or NODES_GROUP not in orgs or not cns[0].startswith(NODE_PREFIX):
        return None
    name = cns[0][len(NODE_PREFIX) :]
    return name or None


class NodeTLS:
    def __init__(self, files: TLSFiles, vote_ca: Path | None = None, serving: TLSFiles | None = None) -> None:
        self.files = files
        self.serving = serving if serving is not None else files
        self._vote_ca = vote_ca if vote_ca is not None else files.ca
        self._stamp: Stamp | None = None
        self.server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.server.minimum_version = ssl.TLSVersion.TLSv1_2
        self.server.verify_mode = ssl.CERT_REQUIRED
        self.peer_client = self._client(check_hostname=False)
        self.vote_client = self._client(check_hostname=True)
        self.reloads = 0
        self._load()

    def _stamps(self) -> Stamp | None:
        a, b = self.files.stamp(), self.serving.stamp()
        return None if a is None or b is None else a + b

    def reload_if_changed(self) -> bool:
        """Reload when the files changed and are usable together (blocking file IO: run in a thread)."""
        stamp = self._stamps()
        if stamp is None or stamp == self._stamp:
            return False
        try:
            self.files.load()
            self.serving.load()
        except (OSError, ValueError) as e:
            log.warning("health agent: certificate files changed but are not usable yet: %s", e)
            return False
        self.peer_client = self._client(check_hostname=False)
        self.vote_client = self._client(check_hostname=True)
        self._load()
        self.reloads += 1
        log.info("health agent: reloaded the node certificate")
        return True

    def _load(self) -> None:
        self._stamp = self._stamps()
        self.files.load()  # raises when they do not match
        self.serving.load()
        self.server.load_cert_chain(self.serving.cert, self.serving.key)
        self.server.load_verify_locations(cafile=str(self.files.ca))
        for ctx, ca in ((self.peer_client, self.files.ca), (self.vote_client, self._vote_ca)):
            ctx.load_cert_chain(self.files.cert, self.files.key)
            ctx.load_verify_locations(cafile=str(ca))

    @staticmethod
    def _client(*, check_hostname: bool) -> ssl.SSLContext:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.check_hostname = check_hostname
        ctx.verify_mode = ssl.CERT_REQUIRED
        return ctx
