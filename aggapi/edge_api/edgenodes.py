"""Keeps the edgenodes view equal to (edge Nodes from the informer) joined with (this replica's tunnel
agents): Node events refresh one node at once; tunnel state is polled (every `poll_interval`) and the nodes
whose agent connected, left or changed are refreshed. A refresh that changes nothing emits nothing, so a
Node heartbeat is not a watch event."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import replace
from typing import Protocol

from aggapi.apis.edgenode import NodeFacts, TunnelFacts, edge_node
from aggapi.controllers import nodes as n
from aggapi.controllers.autonomy import AUTONOMY_ANNOTATION
from aggapi.controllers.informer import EventHandler, Obj
from aggapi.controllers.nodes import NodeDirectory
from aggapi.edge_api.memstore import MemoryView
from aggapi.tunnel import AgentInfo

log = logging.getLogger(__name__)


class Agents(Protocol):
    def agents(self) -> Mapping[str, AgentInfo]: ...


def node_facts(node: Obj) -> NodeFacts:
    meta = node.get("metadata") or {}
    addrs = tuple(
        (str(a.get("type") or ""), str(a.get("address") or ""))
        for a in (node.get("status") or {}).get("addresses") or []
    )
    return NodeFacts(
        name=str(meta.get("name", "")),
        uid=str(meta.get("uid", "")),
        created=str(meta.get("creationTimestamp", "")),
        labels=n.labels(node),
        pool=n.pool_of(node),
        ready=n.ready_status(node),
        addresses=addrs,
        kubelet_port=n.kubelet_port(node),
        autonomy=str((meta.get("annotations") or {}).get(AUTONOMY_ANNOTATION) or ""),
    )


def tunnel_facts(info: AgentInfo) -> TunnelFacts:
    return TunnelFacts(info.connected_since, info.agent_version, info.addresses, info.rejected_addresses)


class EdgeNodeView:
    def __init__(
        self,
        nodes: NodeDirectory,
        agents: Agents | None,
        view: MemoryView,
        *,
        poll_interval: float = 1.0,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        health: Callable[[str], str] | None = None,
    ) -> None:
        self._nodes = nodes
        self._health = health  # the node's edge health verdict (the HEALTH column)
        self._agents = agents
        self.view = view
        self._poll = poll_interval
        self._sleep = sleep
        self._tunnels: dict[str, TunnelFacts] = {}

    def handler(self) -> EventHandler:
        """For the Node informer (register it before the informer runs)."""
        return EventHandler(
            on_add=lambda obj: self.refresh(_name(obj)),
            on_update=lambda _old, new: self.refresh(_name(new)),
            on_delete=lambda obj: self.refresh(_name(obj)),
        )

    def refresh(self, name: str) -> None:
        node = self._nodes.get(name)
        if node is None or not n.is_edge_node(node):
            self.view.apply(name, None)
            return
        facts = node_facts(node)
        if self._health is not None:
            facts = replace(facts, health=self._health(name))
        self.view.apply(name, edge_node(facts, self._tunnels.get(name)))

    def poll_tunnel(self) -> int:
        """Take the current agents; refresh the nodes whose tunnel state changed. Returns how many."""
        if self._agents is None:
            return 0
        current = {node: tunnel_facts(info) for node, info in self._agents.agents().items()}
        changed = {k for k in current.keys() | self._tunnels.keys() if current.get(k) != self._tunnels.get(k)}
        self._tunnels = current
        for name in sorted(changed):
            self.refresh(name)
        return len(changed)

    async def run(self) -> None:
        """Follow the tunnel's agents until cancelled (Node changes arrive through handler())."""
        while True:
            self.poll_tunnel()
            await self._sleep(self._poll)


def _name(obj: Obj) -> str:
    return str((obj.get("metadata") or {}).get("name", ""))
