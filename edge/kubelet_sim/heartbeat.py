"""The kubelet's heartbeats, against a kube-apiserver: its Node Lease `kube-node-lease/<node>` renewed
every --node-lease-renew-interval, and its Node's Ready condition (with lastHeartbeatTime) patched
through nodes/<node>/status every --node-status-update-frequency. Authenticates with a node client
certificate (CN=system:node:<name>, O=system:nodes), as a kubelet does after TLS bootstrapping.

Like the kubelet, a failed round is logged and retried at the next tick; stopping the sim stops both."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp

from edge.aio import within
from edge.kubelet_sim.config import utcnow

log = logging.getLogger(__name__)

LEASE_NAMESPACE = "kube-node-lease"
LEASE_DURATION_SECONDS = 40  # the kubelet's nodeLeaseDurationSeconds default
SMP = "application/strategic-merge-patch+json"


KUBELET_USER_AGENT = "kubelet/v1.30.0 (linux/amd64) kubernetes/aggapi-sim"


@dataclass(frozen=True, slots=True)
class HeartbeatConfig:
    # https://host:port of kube-apiserver, or http://<node>:10261, the node's shadow-apiserver, which
    # adds the node's credentials itself (as a kubelet pointed at yurthub does)
    api_server: str
    client_cert_file: Path | None
    client_key_file: Path | None
    ca_file: Path | None
    lease_renew_interval: float = 10.0  # --node-lease-renew-interval
    status_update_frequency: float = 10.0  # --node-status-update-frequency
    lease_duration_seconds: int = LEASE_DURATION_SECONDS
    request_timeout: float = 10.0


def api_ssl(cfg: HeartbeatConfig) -> ssl.SSLContext | bool:
    """The TLS context for kube-apiserver (the node's client cert), or False for a plain-HTTP shadow."""
    if cfg.api_server.startswith("http://"):
        return False
    ctx = ssl.create_default_context(cafile=str(cfg.ca_file) if cfg.ca_file else None)
    if cfg.client_cert_file is not None:
        ctx.load_cert_chain(str(cfg.client_cert_file), str(cfg.client_key_file or cfg.client_cert_file))
    return ctx


def micro_time(t: datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def rfc3339(t: datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


def lease_object(node: str, uid: str, duration: int, now: datetime) -> dict[str, Any]:
    owner = {"apiVersion": "v1", "kind": "Node", "name": node, "uid": uid} if uid else None
    meta: dict[str, Any] = {"name": node, "namespace": LEASE_NAMESPACE}
    if owner is not None:
        meta["ownerReferences"] = [owner]
    return {
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": meta,
        "spec": {"holderIdentity": node, "leaseDurationSeconds": duration, "renewTime": micro_time(now)},
    }


def ready_patch(current: dict[str, Any], now: datetime) -> dict[str, Any]:
    """The status patch a kubelet sends: Ready=True, heartbeat now; the transition time changes only
    when the status does (e.g. after the node lifecycle controller set it Unknown)."""
    conditions = (current.get("status") or {}).get("conditions") or []
    prev = next((c for c in conditions if c.get("type") == "Ready"), None)
    t = rfc3339(now)
    transition = prev.get("lastTransitionTime") if prev and prev.get("status") == "True" else None
    cond = {
        "type": "Ready",
        "status": "True",
        "reason": "KubeletReady",
        "message": "kubelet is posting ready status",
        "lastHeartbeatTime": t,
        "lastTransitionTime": transition or t,
    }
    return {"status": {"conditions": [cond]}}


class Heartbeat:
    def __init__(self, node: str, cfg: HeartbeatConfig, clock: Callable[[], datetime] = utcnow) -> None:
        self.node = node
        self.cfg = cfg
        self.clock = clock
        self.base = cfg.api_server.rstrip("/")
        self.lease_renewals = 0
        self.status_updates = 0

    async def run(self) -> None:
        """Heartbeat until cancelled."""
        connector = aiohttp.TCPConnector(ssl=api_ssl(self.cfg))
        headers = {"User-Agent": KUBELET_USER_AGENT}
        async with aiohttp.ClientSession(connector=connector, headers=headers) as http:
            tasks = [
                asyncio.create_task(
                    self._every(self.cfg.lease_renew_interval, self.renew_lease, http), name="node-lease"
                ),
                asyncio.create_task(
                    self._every(self.cfg.status_update_frequency, self.update_status, http),
                    name="node-status",
                ),
            ]
            try:
                await asyncio.gather(*tasks)
            finally:
                for t in tasks:
                    t.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)

    async def _every(
        self,
        interval: float,
        step: Callable[[aiohttp.ClientSession], Any],
        http: aiohttp.ClientSession,
    ) -> None:
        while True:
            try:
                await within(step(http), self.cfg.request_timeout)
            except (aiohttp.ClientError, OSError, TimeoutError, RuntimeError, ValueError) as e:
                log.warning("kubelet-sim %s: heartbeat %s failed: %s", self.node, step.__name__, e)
            await asyncio.sleep(interval)

    async def _call(
        self, http: aiohttp.ClientSession, method: str, path: str, body: Any = None, ctype: str = ""
    ) -> tuple[int, Any]:
        headers = {"Accept": "application/json"}
        data = None
        if body is not None:
            headers["Content-Type"] = ctype or "application/json"
            data = json.dumps(body)
        async with http.request(method, self.base + path, data=data, headers=headers) as r:
            text = await r.text()
            with contextlib.suppress(ValueError):
                return r.status, json.loads(text)
            return r.status, text

    async def renew_lease(self, http: aiohttp.ClientSession) -> None:
        path = f"/apis/coordination.k8s.io/v1/namespaces/{LEASE_NAMESPACE}/leases/{self.node}"
        now = self.clock()
        code, lease = await self._call(http, "GET", path)
        if code == 404:
            code_n, node = await self._call(http, "GET", f"/api/v1/nodes/{self.node}")
            uid = str(node.get("metadata", {}).get("uid", "")) if code_n == 200 else ""
            want = lease_object(self.node, uid, self.cfg.lease_duration_seconds, now)
            code, lease = await self._call(http, "POST", path.rsplit("/", 1)[0], want)
            if code not in (200, 201):
                raise RuntimeError(f"creating lease: {code} {lease}")
        elif code == 200:
            spec = lease.setdefault("spec", {})
            spec.update(
                holderIdentity=self.node,
                leaseDurationSeconds=self.cfg.lease_duration_seconds,
                renewTime=micro_time(now),
            )
            code, out = await self._call(http, "PUT", path, lease)
            if code != 200:
                raise RuntimeError(f"renewing lease: {code} {out}")
        else:
            raise RuntimeError(f"getting lease: {code} {lease}")
        self.lease_renewals += 1

    async def update_status(self, http: aiohttp.ClientSession) -> None:
        path = f"/api/v1/nodes/{self.node}"
        code, node = await self._call(http, "GET", path)
        if code != 200:
            raise RuntimeError(f"getting node: {code} {node}")
        patch = ready_patch(node, self.clock())
        code, out = await self._call(http, "PATCH", f"{path}/status", patch, SMP)
        if code != 200:
            raise RuntimeError(f"patching node status: {code} {out}")
        self.status_updates += 1
