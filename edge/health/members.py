"""Pool membership from the cluster (`--api-server`): this node's pool is the `apps.openyurt.io/nodepool`
label of its own Node (a kubelet may read its Node), and the members are that NodePool's topology
(`nodepools/<pool>/topology`, served by aggapi through kube-apiserver): name → InternalIP.

Read with the node certificate every --members-refresh; the last answer is kept in
`<state-dir>/members` (the peers-file format, written atomically) so that an agent restarted while the
cloud is unreachable still knows its peers. A failed refresh keeps the members it had."""

from __future__ import annotations

import logging
import os
import ssl
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp

from edge.health.config import USER_AGENT, parse_peers

log = logging.getLogger(__name__)

POOL_LABEL = "apps.openyurt.io/nodepool"
TOPOLOGY = "/apis/edge.aggapi.io/v1alpha1/nodepools/{pool}/topology"


class MembershipError(Exception):
    pass


def node_address(entry: dict[str, Any]) -> str | None:
    """A topology node's address: its InternalIP, else its first address."""
    addresses = [a for a in entry.get("addresses") or [] if isinstance(a, dict) and a.get("address")]
    for a in addresses:
        if a.get("type") == "InternalIP":
            return str(a["address"])
    return str(addresses[0]["address"]) if addresses else None


class MembersFeed:
    def __init__(
        self,
        api_server: str,
        node: str,
        ctx: Callable[[], ssl.SSLContext],
        *,
        timeout: float,
        cache: Path | None = None,
    ) -> None:
        self.api_server = api_server.rstrip("/")
        self.node = node
        self._ctx = ctx
        self.timeout = timeout
        self.cache = cache
        self.pool = ""
        self.fetches = 0
        self.failures = 0

    async def _get(self, session: aiohttp.ClientSession, path: str) -> dict[str, Any]:
        url = self.api_server + path
        async with session.get(
            url, ssl=self._ctx(), timeout=aiohttp.ClientTimeout(total=self.timeout)
        ) as resp:
            body = await resp.read()
            if resp.status != 200:
                raise MembershipError(f"GET {path}: HTTP {resp.status} {body[:200]!r}")
            doc = await resp.json(content_type=None)
            if not isinstance(doc, dict):
                raise MembershipError(f"GET {path}: not a JSON object")
            return doc

    async def fetch(self) -> dict[str, str]:
        """The pool's members (name → address), this node among them; {} when it is in no pool.
        Raises MembershipError (or aiohttp/OS errors) when the cluster cannot tell."""
        self.fetches += 1
        try:
            async with aiohttp.ClientSession(headers={"User-Agent": USER_AGENT}) as session:
                me = await self._get(session, f"/api/v1/nodes/{quote(self.node, safe='')}")
                labels = (me.get("metadata") or {}).get("labels") or {}
                self.pool = str(labels.get(POOL_LABEL) or "")
                if not self.pool:
                    return {}
                topo = await self._get(session, TOPOLOGY.format(pool=quote(self.pool, safe="")))
        except Exception:
            self.failures += 1
            raise
        members: dict[str, str] = {}
        for entry in topo.get("nodes") or []:
            if not isinstance(entry, dict) or not entry.get("name"):
                continue
            address = node_address(entry)
            if address:
                members[str(entry["name"])] = address
        return members

    def load(self) -> dict[str, str] | None:
        """The members saved by the last successful fetch (blocking IO), or None."""
        if self.cache is None:
            return None
        try:
            return parse_peers(self.cache.read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as e:
            log.warning("health agent: ignoring unreadable members file %s: %s", self.cache, e)
            return None

    def save(self, members: dict[str, str]) -> None:
        if self.cache is None:
            return
        self.cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.cache.with_name(f".{self.cache.name}.{os.getpid()}.tmp")
        lines = "".join(f"{name}={addr}\n" for name, addr in sorted(members.items()))
        tmp.write_text(f"# pool {self.pool or '(none)'}, from {self.api_server}\n{lines}")
        os.replace(tmp, self.cache)
