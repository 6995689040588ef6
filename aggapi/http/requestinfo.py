"""Request attributes as kube-apiserver's RequestInfoFactory derives them: the verb, resource,
subresource, namespace and name used by authorization, metrics and dispatch."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import unquote

_WATCH_TRUE = ("true", "True", "1")


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
    if len(parts) < 3 or parts[0] != "apis":
        return RequestInfo(path, http_verb, False)
    group, version, rest = parts[1], parts[2], parts[3:]
    if not rest:
        return RequestInfo(path, http_verb, False, group, version)
    namespace = ""
    if rest[0] == "namespaces" and len(rest) >= 3:
        namespace, rest = rest[1], rest[2:]
    elif rest[0] == "namespaces" and len(rest) == 2:
        # GET /apis/g/v/namespaces/<ns> is the namespace object itself in kube; we serve no such thing.
        return RequestInfo(path, http_verb, True, group, version, "", "namespaces", "", rest[1])
    resource = rest[0]
    name = rest[1] if len(rest) > 1 else ""
    subresource = rest[2] if len(rest) > 2 else ""
    extra = tuple(rest[3:])
    if http_verb in ("get", "head"):
        verb = "get" if name else ("watch" if is_watch(query) else "list")
    elif http_verb == "post":
        verb = "create"
    elif http_verb == "put":
        verb = "update"
    elif http_verb == "patch":
        verb = "patch"
    elif http_verb == "delete":
        verb = "delete" if name else "deletecollection"
    else:
        verb = http_verb
    return RequestInfo(path, verb, True, group, version, namespace, resource, subresource, name, extra)
