"""The tunnel wire contract shared by the agent (edge) and the server (aggapi.tunnel).

This module and the generated stubs in `proto/` are the only parts of `edge` that aggapi may import:
keep it free of agent logic. The protocol itself is documented in proto/tunnel.proto.
"""

from __future__ import annotations

import ipaddress

from edge.tunnel.proto import tunnel_pb2 as pb
from edge.tunnel.proto import tunnel_pb2_grpc as pb_grpc

__all__ = [
    "CONN_ID_METADATA",
    "DEFAULT_AGENT_PORT",
    "DEFAULT_KUBELET_PORT",
    "MAX_FRAME",
    "NODES_GROUP",
    "NODE_USER_PREFIX",
    "canonical_host",
    "format_hostport",
    "node_from_identity",
    "pb",
    "pb_grpc",
    "split_hostport",
]

# Frames carry at most this much data: small enough that one stalled connection pins little memory,
# large enough that per-message overhead stays a few percent of throughput.
MAX_FRAME = 32 * 1024
# Stream calls name the dial they answer in this metadata key (the server issued the id in a Dial).
CONN_ID_METADATA = "x-aggapi-tunnel-conn-id"
DEFAULT_AGENT_PORT = 8091
DEFAULT_KUBELET_PORT = 10250
# Kubernetes' node identity (what the Node authorizer and NodeRestriction admission expect).
NODE_USER_PREFIX = "system:node:"
NODES_GROUP = "system:nodes"


def node_from_identity(user: str, groups: list[str]) -> str | None:
    """The node a certificate (CN=user, O=groups) speaks for, or None if it is not a node identity."""
    if not user.startswith(NODE_USER_PREFIX) or NODES_GROUP not in groups:
        return None
    node = user[len(NODE_USER_PREFIX) :]
    return node or None


def canonical_host(host: str) -> str:
    """IP addresses in one spelling ("::0001" and "::1" are the same node); names lower-cased."""
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        return host.lower()


def split_hostport(value: str, *, default_port: int | None = None) -> tuple[str, int]:
    """Parse `host:port` or `[v6]:port` (or a bare host when default_port is given)."""
    value = value.strip()
    if value.startswith("["):
        end = value.find("]")
        if end < 0:
            raise ValueError(f"{value!r}: missing ']' after an IPv6 address")
        host, rest = value[1:end], value[end + 1 :]
        if not rest and default_port is not None:
            return host, default_port
        if not rest.startswith(":"):
            raise ValueError(f"{value!r}: expected ':port' after ']'")
        port_s = rest[1:]
    else:
        host, sep, port_s = value.rpartition(":")
        if not sep or ":" in host:
            if default_port is not None and (not sep or _is_ipv6(value)):
                return value, default_port
            raise ValueError(f"{value!r}: expected host:port (IPv6 as [addr]:port)")
    if not host:
        raise ValueError(f"{value!r}: empty host")
    if not port_s.isdigit() or not 0 < int(port_s) < 65536:
        raise ValueError(f"{value!r}: port must be a number in 1..65535")
    return host, int(port_s)


def format_hostport(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _is_ipv6(value: str) -> bool:
    try:
        return ipaddress.ip_address(value).version == 6
    except ValueError:
        return False
