"""Where kube-apiserver sends kubelet traffic (pkg/registry/core/pod/strategy.go, node/strategy.go):
the node's address and kubelet port, and the kubelet path and query for each pod subresource.

    pods/{p}/exec?container=c&command=..&stdin=true&stdout=true&stderr=true&tty=true
        -> /exec/{ns}/{p}/{c}?input=1&output=1&error=1&tty=1&command=..   (false flags are omitted)
    pods/{p}/attach?container=c&stdin=..   -> /attach/{ns}/{p}/{c}?input=1&output=1&error=1&tty=1
    pods/{p}/log?container=c&follow=..&tailLines=..  -> /containerLogs/{ns}/{p}/{c}?follow=true&tailLines=..
    pods/{p}/portforward?ports=8080        -> /portForward/{ns}/{p}?port=8080
    nodes/{n}/proxy/{path}?{query}         -> /{path}?{query}
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import parse_qsl, urlencode

from aggapi.devcluster.options import ADDRESS_TYPES
from aggapi.machinery import apierrors

KUBELET_PORT = 10250
_TRUE = frozenset({"1", "t", "T", "TRUE", "true", "True"})  # Go's strconv.ParseBool
_BOOL_TO_KUBELET = (("stdin", "input"), ("stdout", "output"), ("stderr", "error"), ("tty", "tty"))
_LOG_BOOLS = ("follow", "previous", "timestamps")
_LOG_INTS = ("sinceSeconds", "tailLines", "limitBytes")


def _query(raw: str) -> dict[str, list[str]]:
    q: dict[str, list[str]] = {}
    for k, v in parse_qsl(raw, keep_blank_values=True):
        q.setdefault(k, []).append(v)
    return q


def _flag(q: Mapping[str, list[str]], name: str) -> bool:
    return (q.get(name) or [""])[0] in _TRUE


def node_endpoint(node: Mapping[str, Any], address_types: Sequence[str] = ADDRESS_TYPES) -> tuple[str, int]:
    """(address, kubelet port) of a Node: the first address of the most preferred type, and
    status.daemonEndpoints.kubeletEndpoint.Port (10250 when unset)."""
    name = str((node.get("metadata") or {}).get("name", ""))
    status = node.get("status") or {}
    addresses = [a for a in status.get("addresses") or [] if isinstance(a, Mapping)]
    for t in address_types:
        for a in addresses:
            if a.get("type") == t and a.get("address"):
                port = ((status.get("daemonEndpoints") or {}).get("kubeletEndpoint") or {}).get("Port")
                return str(a["address"]), int(port) if isinstance(port, int) and port > 0 else KUBELET_PORT
    known = [f"{a.get('type')}={a.get('address')}" for a in addresses]
    raise apierrors.StatusError(
        500, "", f"node {name}: no preferred addresses found; known addresses: [{' '.join(known)}]"
    )


def _container(pod: Mapping[str, Any], q: Mapping[str, list[str]]) -> str:
    name = pod["metadata"]["name"]
    containers = [str(c.get("name")) for c in (pod.get("spec") or {}).get("containers") or []]
    container = (q.get("container") or [""])[0]
    if not container:
        if len(containers) != 1:
            raise apierrors.bad_request(
                f"a container name must be specified for pod {name}, choose one of: [{' '.join(containers)}]"
            )
        return containers[0]
    if container not in containers:
        raise apierrors.bad_request(f"container {container} is not valid for pod {name}")
    return container


def pod_location(pod: Mapping[str, Any], subresource: str, raw_query: str) -> str:
    """The kubelet path and query for a pod subresource (raises a 400 Status for bad options)."""
    meta = pod["metadata"]
    ns, name = meta.get("namespace", "default"), meta["name"]
    q = _query(raw_query)
    if subresource == "portforward":
        ports = [p for v in q.get("ports", []) for p in v.split(",") if p]
        for p in ports:
            if not p.isdigit() or not 0 < int(p) < 65536:
                raise apierrors.bad_request(f"invalid port {p!r}: must be between 1 and 65535")
        query = urlencode([("port", p) for p in ports])
        return f"/portForward/{ns}/{name}" + (f"?{query}" if query else "")
    container = _container(pod, q)
    if subresource == "log":
        params = [(k, "true") for k in _LOG_BOOLS if _flag(q, k)]
        for k in _LOG_INTS:
            for v in q.get(k, []):
                if not v.lstrip("-").isdigit():
                    raise apierrors.bad_request(f"{k}: invalid value {v!r}: must be an integer")
                params.append((k, v))
        params += [("sinceTime", v) for v in q.get("sinceTime", []) if v]
        return f"/containerLogs/{ns}/{name}/{container}?{urlencode(params)}"
    if subresource in ("exec", "attach"):
        params = [(kubelet, "1") for k, kubelet in _BOOL_TO_KUBELET if _flag(q, k)]
        if not any(p in ("input", "output", "error") for p, _ in params):
            raise apierrors.bad_request("you must specify at least 1 of stdin, stdout, stderr")
        if subresource == "exec":
            if not q.get("command"):
                raise apierrors.bad_request("you must specify a command to run (command parameter)")
            params += [("command", c) for c in q["command"]]
        return f"/{subresource}/{ns}/{name}/{container}?{urlencode(params)}"
    raise apierrors.not_found("", f"pods/{subresource}", name)


def split_node_id(node_id: str) -> tuple[str, int | None]:
    """`[https:]name[:port]` as in nodes/{id}/proxy (kube's SplitSchemeNamePort); only https."""
    parts = node_id.split(":")
    if len(parts) == 3 or (len(parts) == 2 and parts[0] in ("http", "https")):
        scheme, *parts = parts
        if scheme != "https":
            raise apierrors.bad_request(
                f"scheme {scheme!r} is not supported: kubelets are reached over https"
            )
    if len(parts) == 2:
        if not parts[1].isdigit() or not 0 < int(parts[1]) < 65536:
            raise apierrors.bad_request(f"invalid port in node name {node_id!r}")
        return parts[0], int(parts[1])
    if len(parts) != 1 or not parts[0]:
        raise apierrors.bad_request(f"invalid node name {node_id!r}")
    return parts[0], None


def node_proxy_target(raw_path: str) -> str:
    """`/api/v1/nodes/{id}/proxy/{path}?{query}` → `/{path}?{query}` (raw, as sent)."""
    path, sep, query = raw_path.partition("?")
    parts = path.split("/")  # ["", "api", "v1", "nodes", id, "proxy", ...]
    rest = "/" + "/".join(parts[6:])
    return rest + (f"?{query}" if sep else "")
