"""The shadow's client of kube-apiserver: failover across the configured servers, and whose credentials.

- Requests without an `Authorization` header on the loopback HTTP port (the kubelet, kube-proxy with
  the node's kubeconfig pointing here) go out with the node's client certificate. The cert/key files
  are re-read when they change (the kubelet rotates them), so an expiry offline is healed by the first
  rotation after it.
- Requests with a bearer token (pods), and requests without one on the HTTPS port (`anonymous=True`:
  kube-apiserver then treats them as anonymous), go out on a second session that presents NO client
  certificate, so a pod never acts with the node's rights.
- The answer's headers are awaited at most connect + request timeout, also for watches (whose body
  then may stay silent for as long as the watch lasts), and `cut_waiting()` (the cloud went away)
  makes every request still waiting for its headers raise UpstreamUnavailable at once.
- Bodies stream through untouched (`auto_decompress=False`); the caller reads the response as it likes.
"""

from __future__ import annotations

import asyncio
import logging
import os
import ssl
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import aiohttp
from multidict import CIMultiDict

from edge.aio import within
from edge.shadow.config import ShadowConfig

log = logging.getLogger(__name__)

HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "host",
        "content-length",
    }
)
CONNECT_ERRORS = (aiohttp.ClientConnectorError, aiohttp.ServerDisconnectedError, TimeoutError, OSError)


class UpstreamUnavailable(Exception):
    """No configured kube-apiserver could be reached."""


def _stamp(paths: tuple[Path, ...]) -> tuple[tuple[int, int, int], ...] | None:
    try:
        return tuple((s.st_mtime_ns, s.st_size, s.st_ino) for s in (os.stat(p) for p in paths))
    except OSError:
        return None


class Upstream:
    def __init__(self, cfg: ShadowConfig) -> None:
        self.cfg = cfg
        self.servers = [s.rstrip("/") for s in cfg.servers]
        self.current = 0
        self.cert_reloads = 0
        self._cert_stamp = _stamp((cfg.cert_file, cfg.key_file))
        self._node_ctx = self._load_node_ctx()
        self._token_ctx = ssl.create_default_context(cafile=str(cfg.ca_file))
        self._node: aiohttp.ClientSession | None = None
        self._token: aiohttp.ClientSession | None = None
        self._retired: list[aiohttp.ClientSession] = []  # node sessions of certificates rotated away
        self._waiting: set[asyncio.Task[Any]] = set()  # tasks waiting for an answer's headers
        self._cut: set[asyncio.Task[Any]] = set()  # ... of which cut_waiting() cancelled these

    def _load_node_ctx(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=str(self.cfg.ca_file))
        ctx.load_cert_chain(str(self.cfg.cert_file), str(self.cfg.key_file))
        return ctx

    @staticmethod
    def _session(ctx: ssl.SSLContext) -> aiohttp.ClientSession:
        return aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(ssl=ctx, limit=0),
            auto_decompress=False,
            timeout=aiohttp.ClientTimeout(total=None),
            skip_auto_headers=("Accept-Encoding", "User-Agent", "Content-Type"),
        )

    async def start(self) -> None:
        self._node, self._token = self._session(self._node_ctx), self._session(self._token_ctx)

    async def close(self) -> None:
        for s in (self._node, self._token, *self._retired):
            if s is not None:
                await s.close()
        self._retired.clear()

    def reload_if_changed(self) -> bool:
        """Load the node's cert/key again if the files changed. The pair is loaded into a new context
        (a pair that does not load, e.g. a new certificate whose key is not written yet, leaves the one
        in use untouched: OpenSSL would otherwise keep the new certificate without any key) and used by
        a new session, so requests from now on connect with it instead of reusing the pooled
        connections of the old certificate; those still in use (watches) end on their own, and the old
        session is closed with the others."""
        stamp = _stamp((self.cfg.cert_file, self.cfg.key_file))
        if stamp is None or stamp == self._cert_stamp:
            return False
        try:
            ctx = self._load_node_ctx()
        except (OSError, ssl.SSLError, ValueError) as e:
            log.warning("shadow: node certificate files changed but do not load yet (%s); will retry", e)
            return False
        self._cert_stamp = stamp
        self._node_ctx = ctx
        if self._node is not None:
            self._retired.append(self._node)
            self._node = self._session(ctx)
        self.cert_reloads += 1
        log.info("shadow: loaded the rotated node client certificate %s", self.cfg.cert_file)
        return True

    async def request(
        self,
        method: str,
        path_qs: str,
        headers: Mapping[str, str],
        body: bytes | None,
        *,
        streaming: bool = False,
        anonymous: bool = False,
    ) -> aiohttp.ClientResponse:
        """Send to the first server that answers (starting with the last good one). The caller releases
        the response. Raises UpstreamUnavailable when none can be reached, none sent the headers within
        connect + request timeout, or cut_waiting() was called meanwhile. `anonymous`: never with the
        node's certificate (a request without a token that came in on the HTTPS port)."""
        use_token = anonymous or "authorization" in {k.lower() for k in headers}
        session = self._token if use_token else self._node
        if session is None:
            raise RuntimeError("Upstream.start() first")
        out: CIMultiDict[str] = CIMultiDict()
        for k, v in headers.items():
            lk = k.lower()
            if lk in HOP_BY_HOP or (not use_token and lk.startswith("impersonate-")):
                continue
            out.add(k, v)
        timeout = aiohttp.ClientTimeout(
            total=None,
            connect=self.cfg.connect_timeout,
            sock_read=None if streaming else self.cfg.request_timeout,
        )
        headers_within = self.cfg.connect_timeout + self.cfg.request_timeout
        task = asyncio.current_task()
        assert task is not None
        last: Exception | None = None
        n = len(self.servers)
        self._waiting.add(task)
        try:
            for i in range(n):
                idx = (self.current + i) % n
                try:
                    resp = await within(
                        session.request(
                            method, self.servers[idx] + path_qs, headers=out, data=body, timeout=timeout
                        ),
                        headers_within,
                    )
                except CONNECT_ERRORS as e:
                    last = e
                    log.debug("shadow: upstream %s: %r", self.servers[idx], e)
                    continue
                self.current = idx
                return resp
        except asyncio.CancelledError:
            if task not in self._cut or task.cancelling() > 1:  # cancelled for another reason too
                raise
            raise UpstreamUnavailable("the cloud became unreachable while waiting for the answer") from None
        finally:
            self._waiting.discard(task)
            if task in self._cut:
                self._cut.discard(task)
                task.uncancel()
        raise UpstreamUnavailable(f"no kube-apiserver reachable ({last!r})")

    def cut_waiting(self) -> int:
        """Make every request still waiting for its answer's headers raise UpstreamUnavailable (the
        cloud was declared unreachable: their connections may be black holes). How many."""
        cut = [t for t in self._waiting if t not in self._cut and not t.done()]
        for t in cut:
            self._cut.add(t)
            t.cancel()
        return len(cut)

    async def probe(self) -> bool:
        """One health probe: any server answering /readyz (or /healthz) with 200."""
        if self._node is None:
            return False
        for server in [*self.servers[self.current :], *self.servers[: self.current]]:
            for path in ("/readyz", "/healthz"):
                try:
                    status = await within(self._probe_once(server + path), self.cfg.probe_timeout)
                    if status == 200:
                        return True
                    if status != 404:
                        break
                except (aiohttp.ClientError, TimeoutError, OSError) as e:
                    log.debug("shadow: probe %s%s: %r", server, path, e)
                    break
        return False

    async def _probe_once(self, url: str) -> int:
        assert self._node is not None
        async with self._node.get(url) as r:
            await r.read()
            return r.status
