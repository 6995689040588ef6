"""What a request to the shadow is about: kube-apiserver's RequestInfo (verb, group, version, resource,
namespace, name, subresource) parsed from the path and query, plus the client component from the
User-Agent (YurtHub's convention: the first token before '/', e.g. `kubelet/v1.30.0 (linux/amd64)`)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

_SAFE = re.compile(r"[^A-Za-z0-9._-]")
# Who a request acts as, and so which cache it may read and fill (docs/shadow.md, "Credentials"): the
# node (no Authorization, on the loopback HTTP port) uses the component's own cache; a bearer token uses
# `<component>@token` (never what was read with the node's credentials); a request without credentials
# on the HTTPS port is `<component>@anonymous` and caches nothing. `@` never occurs in a component
# taken from a User-Agent (component_of replaces it), so the scopes cannot collide.
TOKEN_SCOPE = "@token"
ANONYMOUS_SCOPE = "@anonymous"
_VERBS = {"POST": "create", "PUT": "update", "PATCH": "patch", "DELETE": "delete", "HEAD": "get"}


@dataclass(frozen=True, slots=True)
class RequestInfo:
    path: str
    component: str
    verb: str  # get list watch create update patch delete deletecollection, or the lowercase method
    is_resource: bool = False
    group: str = ""
    version: str = ""
    resource: str = ""
    subresource: str = ""
    namespace: str | None = None
    name: str | None = None
    label_selector: str = ""
    field_selector: str = ""

    @property
    def group_resource(self) -> str:
        """`pods`, `deployments.apps`: what names the resource's cache directory (no group collisions)."""
        return f"{self.resource}.{self.group}" if self.group else self.resource

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def client(self) -> str:
        """The component without its credential scope (`coredns@token` → `coredns`): metric labels and
        filters go by it."""
        return self.component.partition("@")[0]

    @property
    def is_read(self) -> bool:
        return self.verb in ("get", "list", "watch")


def component_of(user_agent: str) -> str:
    """`kubelet/v1.30.0 (linux/amd64) kubernetes/abc` → `kubelet`; a safe path segment, never empty."""
    token = user_agent.strip().split("/", 1)[0].split(" ", 1)[0].strip().lower()
    token = _SAFE.sub("_", token)
    return token if token and token not in (".", "..") else "unknown"


def _truthy(value: str | None) -> bool:
    return value is not None and value.lower() in ("true", "1")


def parse(method: str, path: str, query: Mapping[str, str], user_agent: str) -> RequestInfo:
    component = component_of(user_agent)
    parts = [p for p in path.split("/") if p]
    method = method.upper()
    if parts[:1] == ["api"] and len(parts) >= 2:
        group, version, rest = "", parts[1], parts[2:]
    elif parts[:1] == ["apis"] and len(parts) >= 3:
        group, version, rest = parts[1], parts[2], parts[3:]
    else:
        return RequestInfo(path, component, method.lower())
    if not rest:
        return RequestInfo(path, component, method.lower())
    watch_prefix = rest[0] == "watch"
    if watch_prefix:
        rest = rest[1:]
    namespace: str | None = None
    if len(rest) >= 2 and rest[0] == "namespaces":
        if len(rest) == 2:  # /api/v1/namespaces/{name}: the namespace object itself
            return _info(
                path, component, method, query, group, version, "namespaces", None, rest[1], "", watch_prefix
            )
        namespace, rest = rest[1], rest[2:]
        if len(rest) == 1 and rest[0] in ("status", "finalize"):  # namespaces/{n}/status
            return _info(
                path,
                component,
                method,
                query,
                group,
                version,
                "namespaces",
                None,
                namespace,
                rest[0],
                watch_prefix,
            )
    if not rest:
        return RequestInfo(path, component, method.lower())
    resource = rest[0]
    name = rest[1] if len(rest) >= 2 else None
    sub = "/".join(rest[2:])
    return _info(path, component, method, query, group, version, resource, namespace, name, sub, watch_prefix)


def _info(
    path: str,
    component: str,
    method: str,
    query: Mapping[str, str],
    group: str,
    version: str,
    resource: str,
    namespace: str | None,
    name: str | None,
    sub: str,
    watch_prefix: bool,
) -> RequestInfo:
    if method in ("GET", "HEAD"):
        verb = "watch" if watch_prefix or _truthy(query.get("watch")) else ("get" if name else "list")
    elif method == "DELETE" and not name:
        verb = "deletecollection"
    else:
        verb = _VERBS.get(method, method.lower())
    field_selector = query.get("fieldSelector", "")
    if verb == "watch" and name:  # /watch/namespaces/x/pods/name: a watch of one object
        field_selector = f"metadata.name={name}" + (f",{field_selector}" if field_selector else "")
        name = None
    return RequestInfo(
        path=path,
        component=component,
        verb=verb,
        is_resource=True,
        group=group,
        version=version,
        resource=resource,
        subresource=sub,
        namespace=namespace,
        name=name,
        label_selector=query.get("labelSelector", ""),
        field_selector=field_selector,
    )
