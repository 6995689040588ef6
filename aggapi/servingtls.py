"""The serving TLS configuration, reloaded without a restart: when the certificate files or the
trusted client CAs change, new connections get a new SSLContext (swapped in during the handshake by
the SNI callback) while open connections and watches keep theirs."""

from __future__ import annotations

import asyncio
import logging
import os
import ssl
from collections.abc import Awaitable, Callable
from pathlib import Path

from cryptography import x509

from aggapi.auth.authconfig import AuthConfig
from aggapi.metrics import Metrics

log = logging.getLogger(__name__)


def _stamp(path: str) -> tuple[int, int, int]:
    st = os.stat(path)
    return (st.st_mtime_ns, st.st_size, st.st_ino)


class DynamicServingTLS:
    def __init__(
        self,
        cert_file: str,
        key_file: str,
        auth: Callable[[], AuthConfig],
        metrics: Metrics | None = None,
    ) -> None:
        self.cert_file = cert_file
        self.key_file = key_file
        self._auth = auth
        self._metrics = metrics
        self._current = self._build()
        self._seen = self._fingerprint()
        # The listening socket's context: it never changes; its SNI callback hands each new
        # connection the current context.
        self.base = self._build()
        self.base.sni_callback = self._select

    def _fingerprint(self) -> tuple[object, ...]:
        return (_stamp(self.cert_file), _stamp(self.key_file), self._auth().trust_pem)

    def _build(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.load_cert_chain(self.cert_file, self.key_file)
        trust = self._auth().trust_pem
        if trust.strip():
            ctx.load_verify_locations(cadata=trust.decode())
            # Optional at the TLS layer: probes come without certs; the authn middleware decides.
            ctx.verify_mode = ssl.CERT_OPTIONAL
        ctx.set_alpn_protocols(["http/1.1"])
        if self._metrics is not None:
            cert = x509.load_pem_x509_certificate(Path(self.cert_file).read_bytes())
            self._metrics.cert_expiry.labels("serving").set(cert.not_valid_after_utc.timestamp())
            auth = self._auth()
            front = auth.requestheader.cas if auth.requestheader else ()
            for label, cas in (("client-ca", auth.client_cas), ("requestheader-ca", front)):
                if cas:  # the soonest expiry is the one that matters
                    self._metrics.cert_expiry.labels(label).set(
                        min(c.not_valid_after_utc.timestamp() for c in cas)
                    )
        return ctx

    def _select(self, sslobj: ssl.SSLObject, _name: str | None, _ctx: ssl.SSLContext) -> None:
        sslobj.context = self._current

    def reload_if_changed(self) -> bool:
        try:
            seen = self._fingerprint()
            if seen == self._seen:
                return False
            ctx = self._build()
        except (OSError, ssl.SSLError, ValueError) as exc:
            # Half-written files during a rotation: keep serving the old ones and retry next tick.
            log.warning("serving certificate not reloaded (keeping the current one): %s", exc)
            return False
        self._current, self._seen = ctx, seen
        log.info("serving certificate or client CAs changed: new connections use the new ones")
        return True

    async def run(
        self, interval: float = 5.0, sleep: Callable[[float], Awaitable[None]] = asyncio.sleep
    ) -> None:
        while True:
            await sleep(interval)
            self.reload_if_changed()
