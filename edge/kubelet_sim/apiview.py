"""What a node's clients see of the API: the kubelet-sim list+watches, like a kubelet, the pods bound
to its node and the Services (pods' environment), and, like kube-proxy, the EndpointSlices — each with
its component's User-Agent, so that through the node's shadow-apiserver they are cached and filtered as
a real kubelet's and kube-proxy's would be. The current view is written to a JSON file (tmp +
os.replace) after every change, for the lab and its tests to read:

  {"pods": ["ns/name", ...], "services": [...], "endpointslices": {"ns/name": ["10.0.0.1", ...]},
   "synced": {"pods": true, ...}, "errors": {"pods": "last error", ...}}

A watch that ends is resumed from its last resourceVersion; an error (or 410) relists after a short
backoff. Nothing here decides anything: it only shows what the API answers."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp

from edge.aio import within
from edge.kubelet_sim.heartbeat import KUBELET_USER_AGENT, HeartbeatConfig, api_ssl

log = logging.getLogger(__name__)

KUBE_PROXY_USER_AGENT = "kube-proxy/v1.30.0 (linux/amd64) kubernetes/aggapi-sim"
SAMPLE_APP_USER_AGENT = "sample-app/1.0"


@dataclass(frozen=True, slots=True)
class PodClientConfig:
    """A sample in-cluster client: a pod reading the ConfigMaps of its namespace with its ServiceAccount
    token, from the `kubernetes` Service address it was given (the node's shadow, HTTPS)."""

    server: str  # https://host:port
    token_file: Path
    ca_file: Path
    namespace: str = "default"


WATCH_SECONDS = 60  # server-side timeoutSeconds of each watch; the client waits a little longer


@dataclass(frozen=True, slots=True)
class Feed:
    key: str  # in the view file
    path: str  # list path, with its query
    user_agent: str
    pod: bool = False  # the sample in-cluster client's (its own server, token and TLS)


def feeds(node: str, pod: PodClientConfig | None = None) -> tuple[Feed, ...]:
    on_node = quote(f"spec.nodeName={node}", safe="")
    out = (
        Feed("pods", f"/api/v1/pods?fieldSelector={on_node}", KUBELET_USER_AGENT),
        Feed("services", "/api/v1/services", KUBELET_USER_AGENT),
        Feed("endpointslices", "/apis/discovery.k8s.io/v1/endpointslices", KUBE_PROXY_USER_AGENT),
    )
    if pod is None:
        return out
    return (
        *out,
        Feed("configmaps", f"/api/v1/namespaces/{pod.namespace}/configmaps", SAMPLE_APP_USER_AGENT, True),
    )


def _key(obj: dict[str, Any]) -> str:
    meta = obj.get("metadata") or {}
    ns = meta.get("namespace")
    return f"{ns}/{meta.get('name')}" if ns else str(meta.get("name"))


def _summary(feed: Feed, obj: dict[str, Any]) -> Any:
    if feed.key != "endpointslices":
        return True
    return sorted(a for ep in obj.get("endpoints") or [] for a in ep.get("addresses") or [])


class ApiView:
    def __init__(
        self,
        node: str,
        cfg: HeartbeatConfig,
        out: Path,
        *,
        pod_client: PodClientConfig | None = None,
        backoff: float = 1.0,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.node = node
        self.cfg = cfg
        self.base = cfg.api_server.rstrip("/")
        self.out = out
        self.pod = pod_client
        self.backoff = backoff
        self._sleep = sleep
        self.feeds = feeds(node, pod_client)
        self.items: dict[str, dict[str, Any]] = {f.key: {} for f in self.feeds}
        self.synced: dict[str, bool] = {f.key: False for f in self.feeds}
        self.errors: dict[str, str] = {}

    async def run(self) -> None:
        node_conn = aiohttp.TCPConnector(ssl=api_ssl(self.cfg))
        pod_ctx = ssl.create_default_context(cafile=str(self.pod.ca_file)) if self.pod else False
        async with (
            aiohttp.ClientSession(connector=node_conn) as http,
            aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=pod_ctx)) as pod_http,
            asyncio.TaskGroup() as tg,
        ):
            for f in self.feeds:
                name = f"kubelet-sim:{self.node}:view:{f.key}"
                tg.create_task(self._follow(pod_http if f.pod else http, f), name=name)

    def _base_headers(self, feed: Feed) -> tuple[str, dict[str, str]]:
        headers = {"User-Agent": feed.user_agent, "Accept": "application/json"}
        if not feed.pod or self.pod is None:
            return self.base, headers
        token = self.pod.token_file.read_text().strip()  # re-read: projected tokens rotate
        return self.pod.server.rstrip("/"), {**headers, "Authorization": f"Bearer {token}"}

    async def _follow(self, http: aiohttp.ClientSession, feed: Feed) -> None:
        while True:
            try:
                rv = await self._list(http, feed)
                while rv:
                    rv = await self._watch(http, feed, rv)
            except (aiohttp.ClientError, OSError, TimeoutError, ValueError, RuntimeError) as e:
                self.errors[feed.key] = str(e) or type(e).__name__
                self._write()
                log.info("kubelet-sim %s: %s: %s; relisting", self.node, feed.key, e)
            await self._sleep(self.backoff)

    async def _list(self, http: aiohttp.ClientSession, feed: Feed) -> str:
        base, headers = self._base_headers(feed)
        r = await within(http.get(base + feed.path, headers=headers), self.cfg.request_timeout)
        async with r:
            body = await within(r.json(content_type=None), self.cfg.request_timeout)
            if r.status != 200 or not isinstance(body, dict):
                raise RuntimeError(f"list {feed.key}: HTTP {r.status}: {str(body)[:200]}")
        self.items[feed.key] = {_key(o): _summary(feed, o) for o in body.get("items") or []}
        self.synced[feed.key] = True
        self.errors.pop(feed.key, None)
        self._write()
        return str((body.get("metadata") or {}).get("resourceVersion") or "")

    async def _watch(self, http: aiohttp.ClientSession, feed: Feed, rv: str) -> str:
        """Follow one watch; the resourceVersion to resume from, or "" to relist."""
        sep = "&" if "?" in feed.path else "?"
        base, headers = self._base_headers(feed)
        url = f"{base}{feed.path}{sep}watch=1&resourceVersion={rv}&timeoutSeconds={WATCH_SECONDS}"
        r = await within(http.get(url, headers=headers), self.cfg.request_timeout)
        async with r:
            if r.status != 200:
                raise RuntimeError(f"watch {feed.key}: HTTP {r.status}")
            while True:
                line = await within(r.content.readline(), WATCH_SECONDS + self.cfg.request_timeout)
                if not line:
                    return rv  # the server ended the watch: resume
                event = json.loads(line)
                kind, obj = event.get("type"), event.get("object") or {}
                if kind == "ERROR":
                    return ""
                rv = str((obj.get("metadata") or {}).get("resourceVersion") or rv)
                if kind in ("ADDED", "MODIFIED"):
                    self.items[feed.key][_key(obj)] = _summary(feed, obj)
                elif kind == "DELETED":
                    self.items[feed.key].pop(_key(obj), None)
                else:
                    continue  # BOOKMARK
                self._write()

    def snapshot(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, items in self.items.items():
            out[key] = dict(sorted(items.items())) if key == "endpointslices" else sorted(items)
        return {**out, "synced": dict(self.synced), "errors": dict(self.errors)}

    def _write(self) -> None:
        tmp = self.out.with_name(f".{self.out.name}.tmp")
        try:
            tmp.write_text(json.dumps(self.snapshot(), indent=1))
            os.replace(tmp, self.out)
        except OSError as e:
            log.warning("kubelet-sim %s: cannot write %s: %s", self.node, self.out, e)
