"""EdgeNode: a read-only view of one edge Node joined with the state of its tunnel agent.

Nothing is stored: aggapi builds each EdgeNode from its Node informer and its tunnel server (see
aggapi/edge_api/). The kind is get/list/watch only; `proxy` reaches the node's kubelet through the tunnel.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from aggapi.apis.common import GROUP, VERSION, object_schema
from aggapi.machinery.timefmt import format_rfc3339
from aggapi.registry.resource import FieldError, Obj, PrinterColumn, ResourceDef

CONNECTED, DISCONNECTED = "Connected", "Disconnected"
HEALTHY, UNHEALTHY, UNKNOWN = "Healthy", "Unhealthy", "Unknown"
VERDICTS = [HEALTHY, UNHEALTHY, UNKNOWN]
# kube's nodes/proxy: every method is a connect verb.
PROXY_VERBS = ["create", "delete", "get", "patch", "update"]

_STRINGS: dict[str, Any] = {"type": "array", "items": {"type": "string"}}

SPEC: dict[str, Any] = {
    "type": "object",
    "description": "EdgeNodeSpec names the Node this view is of.",
    "properties": {
        "nodeName": {"type": "string", "description": "The name of the Node."},
        "pool": {
            "type": "string",
            "description": "The NodePool the node belongs to (its apps.openyurt.io/nodepool label), if any.",
        },
    },
}

TUNNEL: dict[str, Any] = {
    "type": "object",
    "description": "The node's tunnel agent as the aggapi replica that answered sees it.",
    "properties": {
        "connected": {"type": "boolean", "description": "An agent of this node is connected."},
        "state": {
            "type": "string",
            "enum": [CONNECTED, DISCONNECTED],
            "description": "Connected or Disconnected.",
        },
        "connectedSince": {
            "type": "string",
            "format": "date-time",
            "description": "When the agent connected.",
        },
        "agentVersion": {"type": "string", "description": "The version the agent announced."},
        "addresses": {**_STRINGS, "description": "Addresses the agent announced that are on the Node."},
        "rejectedAddresses": {
            **_STRINGS,
            "description": "Addresses the agent announced that are not on the Node (never routed to).",
        },
    },
}

STATUS: dict[str, Any] = {
    "type": "object",
    "description": "EdgeNodeStatus is the observed state of the node and its tunnel.",
    "properties": {
        "ready": {
            "type": "string",
            "enum": ["True", "False", "Unknown"],
            "description": "The status of the Node's Ready condition.",
        },
        "addresses": {
            "type": "array",
            "description": "The Node's status.addresses.",
            "items": {
                "type": "object",
                "properties": {"type": {"type": "string"}, "address": {"type": "string"}},
            },
        },
        "kubeletPort": {
            "type": "integer",
            "format": "int32",
            "description": "The kubelet's port on the node.",
        },
        "tunnel": TUNNEL,
        "health": {
            "type": "string",
            "enum": VERDICTS,
            "description": "The pool peers' verdict on the node (see its health subresource): Healthy, "
            "Unhealthy or Unknown.",
        },
        "autonomyDuration": {
            "type": "string",
            "description": "The Node's node.openyurt.io/autonomy-duration annotation (set on the node or "
            "through its pool's spec.annotations): how long its pods tolerate the node being not ready or "
            'unreachable before eviction ("0": forever). Absent when the node is not autonomous.',
        },
    },
}

SCHEMA = object_schema(
    "EdgeNode",
    "EdgeNode is a read-only view of an edge Node (label openyurt.io/is-edge-worker=true, or a member of "
    "a NodePool) joined with the state of its tunnel agent. Its proxy subresource reaches the node's "
    "kubelet through the tunnel.",
    SPEC,
    STATUS,
)


HEALTH_VOTE: dict[str, Any] = {
    "type": "object",
    "description": "HealthVote (POST edgenodes/{name}/health): one pool peer's observation of a node. A node "
    "votes only as itself (its client certificate, user system:node:<voter>) and only about nodes of its own "
    "pool. Stored under a lease of --health-vote-ttl: a vote that is not renewed expires.",
    "required": ["apiVersion", "kind", "voter", "target", "observedAt", "result"],
    "properties": {
        "apiVersion": {"type": "string"},
        "kind": {"type": "string"},
        "voter": {"type": "string", "description": "The voting node (the caller's own node name)."},
        "target": {"type": "string", "description": "The node voted about (the name in the URL)."},
        "observedAt": {"type": "string", "format": "date-time", "description": "When the voter probed."},
        "result": {"type": "string", "enum": [HEALTHY, UNHEALTHY], "description": "What the voter saw."},
        "probes": {
            "type": "object",
            "x-kubernetes-preserve-unknown-fields": True,
            "description": "Free-form details of the probes behind the result.",
        },
        "receivedAt": {
            "type": "string",
            "format": "date-time",
            "description": "When aggapi stored the vote (set by the server).",
        },
    },
}

NODE_HEALTH: dict[str, Any] = {
    "type": "object",
    "description": "NodeHealth (GET edgenodes/{name}/health): the verdict of the node's pool peers. "
    "A verdict needs live votes from a majority of the pool's other members; too few voters, a node "
    "alone in its pool, or a pool cut off from the cloud as a whole give Unknown, never Unhealthy "
    "(docs/health.md). POST a HealthVote to the same path to vote.",
    "properties": {
        "apiVersion": {"type": "string"},
        "kind": {"type": "string"},
        "node": {"type": "string", "description": "The node."},
        "pool": {"type": "string", "description": "The node's NodePool."},
        "verdict": {"type": "string", "enum": VERDICTS, "description": "Healthy, Unhealthy or Unknown."},
        "reason": {"type": "string", "description": "Why, in words."},
        "votes": {"type": "array", "items": HEALTH_VOTE, "description": "The live votes that count."},
        "quorum": {
            "type": "object",
            "description": "members: the pool's nodes but this one; voters: members with a live vote; "
            "needed: floor(members/2)+1.",
            "properties": {
                "members": {"type": "integer", "format": "int32"},
                "voters": {"type": "integer", "format": "int32"},
                "needed": {"type": "integer", "format": "int32"},
            },
        },
        "lastTransitionTime": {
            "type": "string",
            "format": "date-time",
            "description": "When the verdict last changed, as the answering aggapi replica saw it (kept in "
            "memory: a restarted replica starts counting when it first computes the verdict).",
        },
    },
}


@dataclass(frozen=True, slots=True)
class NodeFacts:
    """What an EdgeNode shows of its Node (extracted by the caller)."""

    name: str
    uid: str
    created: str  # the Node's creationTimestamp
    labels: Mapping[str, str]
    pool: str
    ready: str  # True | False | Unknown
    addresses: tuple[tuple[str, str], ...]  # (type, address)
    kubelet_port: int
    autonomy: str = ""  # the node.openyurt.io/autonomy-duration annotation, "" without it
    health: str = ""  # the peers' verdict (Healthy | Unhealthy | Unknown), "" when not known


@dataclass(frozen=True, slots=True)
class TunnelFacts:
    connected_since: float  # unix time
    agent_version: str
    addresses: tuple[str, ...]
    rejected_addresses: tuple[str, ...] = ()


def edge_node(node: NodeFacts, tunnel: TunnelFacts | None) -> Obj:
    """The EdgeNode object, without resourceVersion (the view mints those)."""
    t: Obj = {"connected": tunnel is not None, "state": CONNECTED if tunnel is not None else DISCONNECTED}
    if tunnel is not None:
        t["connectedSince"] = format_rfc3339(datetime.fromtimestamp(tunnel.connected_since, UTC))
        t["agentVersion"] = tunnel.agent_version
        t["addresses"] = list(tunnel.addresses)
        if tunnel.rejected_addresses:
            t["rejectedAddresses"] = list(tunnel.rejected_addresses)
    meta: Obj = {"name": node.name, "uid": node.uid, "creationTimestamp": node.created}
    if node.labels:
        meta["labels"] = dict(node.labels)
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "EdgeNode",
        "metadata": meta,
        "spec": {"nodeName": node.name, **({"pool": node.pool} if node.pool else {})},
        "status": {
            "ready": node.ready,
            "addresses": [{"type": typ, "address": addr} for typ, addr in node.addresses],
            "kubeletPort": node.kubelet_port,
            "tunnel": t,
            **({"health": node.health} if node.health else {}),
            **({"autonomyDuration": node.autonomy} if node.autonomy else {}),
        },
    }


class ReadOnlyStrategy:
    """Never used for writes (the kind's verbs are get/list/watch: writes are 405 before any strategy)."""

    def prepare_for_create(self, obj: Obj) -> None:
        pass

    def prepare_for_update(self, new: Obj, old: Obj) -> None:
        pass

    def validate(self, obj: Obj) -> list[FieldError]:
        return [FieldError.forbidden("", "edgenodes are read-only")]

    def validate_update(self, new: Obj, old: Obj) -> list[FieldError]:
        return self.validate(new)


EDGENODE = ResourceDef(
    group=GROUP,
    version=VERSION,
    resource="edgenodes",
    kind="EdgeNode",
    singular="edgenode",
    namespaced=False,
    schema=SCHEMA,
    strategy=ReadOnlyStrategy(),
    short_names=("en",),
    categories=("edge",),
    printer_columns=(
        PrinterColumn("Pool", "string", ".spec.pool", "The NodePool of the node"),
        PrinterColumn(
            "Tunnel", "string", ".status.tunnel.state", "Whether the node's tunnel agent is connected"
        ),
        PrinterColumn("Ready", "string", ".status.ready", "The Node's Ready condition"),
        PrinterColumn("Health", "string", ".status.health", "The pool peers' verdict on the node"),
        PrinterColumn(
            "Autonomy",
            "string",
            ".status.autonomyDuration",
            "How long pods tolerate the node being unreachable (node.openyurt.io/autonomy-duration)",
        ),
        PrinterColumn("Age", "date", ".metadata.creationTimestamp"),
    ),
    extra_subresources=("proxy", "health"),
    verbs=("get", "list", "watch"),
    description="EdgeNode is a read-only view of an edge Node joined with its tunnel state.",
    extra={
        "subresource_verbs": {"proxy": PROXY_VERBS, "health": ["create", "get"]},
        "subresource_kinds": {"proxy": "EdgeNodeProxyOptions", "health": "NodeHealth"},
        "subresource_schemas": {"health": NODE_HEALTH},
    },
)
