"""Request attributes as kube-apiserver's RequestInfoFactory derives them: the verb, resource,
subresource, namespace and name used by authorization, metrics and dispatch."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import unquote

_WATCH_TRUE = ("true", "True", "1")
NAMESPACE_SUBRESOURCES = ("status", "finalize")


@dataclass(frozen=True, slots=True)
class RequestInfo:
    path: str
    verb: str  # kube verb (get, list, watch, create, update, patch, delete, deletecollection) or HTTP verb
    is_resource: bool
    group: str = ""
    version: str = ""
    namespace: str = ""
    resource: str = ""
    subresource: str = ""
    name: str = ""
    extra_path: tuple[str, ...] = ()  # parts after the subresource (e.g. proxy paths)


def is_watch(query: dict[str, str]) -> bool:
    return query.get("watch", "") in _WATCH_TRUE


def parse(method: str, path: str, query: dict[str, str]) -> RequestInfo:
    http_verb = method.lower()
    parts = [unquote(p) for p in path.strip("/").split("/")] if path.strip("/") else []
    if len(parts) >= 2 and parts[0] == "api":  # the legacy core group: /api/v1/...
        group, version, rest = "", parts[1], parts[2:]
    elif len(parts) >= 3 and parts[0] == "apis":
        group, version, rest = parts[1], parts[2], parts[3:]
    else:
        return RequestInfo(path, http_verb, False)
    if not rest:
        return RequestInfo(path, http_verb, False, group, version)
    namespace = ""
    if rest[0] == "namespaces" and len(rest) > 1:
        namespace = rest[1]
        # kube: after the namespace name comes a resource, unless it is a namespace subresource.
        if len(rest) > 2 and rest[2] not in NAMESPACE_SUBRESOURCES:
            rest = rest[2:]
        else:
            # /namespaces/<ns>[/status|finalize] is the Namespace object itself.
            sub = rest[2] if len(rest) > 2 else ""
            verb = _verb(http_verb, query, named=True)
            return RequestInfo(path, verb, True, group, version, namespace, "namespaces", sub, namespace)
    resource = rest[0]
    name = rest[1] if len(rest) > 1 else ""
    subresource = rest[2] if len(rest) > 2 else ""
    extra = tuple(rest[3:])
    verb = _verb(http_verb, query, named=bool(name))
    return RequestInfo(path, verb, True, group, version, namespace, resource, subresource, name, extra)


def _verb(http_verb: str, query: dict[str, str], *, named: bool) -> str:
    if http_verb in ("get", "head"):
        return ("watch" if is_watch(query) else "get") if named else ("watch" if is_watch(query) else "list")
    if http_verb == "delete":
        return "delete" if named else "deletecollection"
    return {"post": "create", "put": "update", "patch": "patch"}.get(http_verb, http_verb)
