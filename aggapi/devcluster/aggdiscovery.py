"""Discovery of aggregated group-versions, as kube-aggregator merges it: each backend's aggregated
(v2) `/apis` downloaded as the aggregator with ETags, legacy `/apis/<g>/<v>` as the fallback, a
stale empty entry while a backend cannot be reached, and legacy APIGroups from the APIServices."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping
from typing import Any

import aiohttp

from aggapi.devcluster.backends import ACCEPT_V2, Backend
from aggapi.discovery import version_priority

log = logging.getLogger(__name__)

_V2_TYPE = ("apidiscovery.k8s.io", ("v2", "v2beta1"), "APIGroupDiscoveryList")


def _is_v2(content_type: str) -> bool:
    params = dict(p.strip().split("=", 1) for p in content_type.split(";")[1:] if "=" in p)
    return (params.get("g"), params.get("as")) == (_V2_TYPE[0], _V2_TYPE[2]) and params.get("v") in _V2_TYPE[
        1
    ]


def legacy_to_v2(resource_list: Mapping[str, Any], group: str, version: str) -> dict[str, Any]:
    """An APIResourceList as an APIVersionDiscovery (subresources folded under their resource)."""
    top: dict[str, dict[str, Any]] = {}
    subs: list[Mapping[str, Any]] = []
    for r in resource_list.get("resources") or []:
        name = str(r.get("name", ""))
        if "/" in name:
            subs.append(r)
            continue
        entry: dict[str, Any] = {
            "resource": name,
            "responseKind": {
                "group": r.get("group", group),
                "version": r.get("version", version),
                "kind": r.get("kind", ""),
            },
            "scope": "Namespaced" if r.get("namespaced") else "Cluster",
            "singularResource": r.get("singularName", ""),
            "verbs": list(r.get("verbs") or []),
        }
        for src, dst in (("shortNames", "shortNames"), ("categories", "categories")):
            if r.get(src):
                entry[dst] = list(r[src])
        top[name] = entry
    for r in subs:
        parent, _, sub = str(r["name"]).partition("/")
        if parent in top:
            top[parent].setdefault("subresources", []).append(
                {
                    "subresource": sub,
                    "responseKind": {
                        "group": r.get("group", group),
                        "version": r.get("version", version),
                        "kind": r.get("kind", ""),
                    },
                    "verbs": list(r.get("verbs") or []),
                }
            )
    return {"version": version, "resources": list(top.values())}


async def refresh(backend: Backend, host: str, port: int) -> None:
    """Download this backend's discovery of its group-version; on failure keep it but mark it stale."""
    spec = backend.spec
    try:
        headers = {"Accept": ACCEPT_V2}
        if backend.etag and backend.discovery is not None:
            headers["If-None-Match"] = backend.etag
        status, hdrs, body = await backend.get(host, port, "/apis", headers)
        if status == 304:
            backend.stale = False
            return
        if status == 200 and _is_v2(hdrs.get("Content-Type", "")):
            found = None
            for item in json.loads(body).get("items") or []:
                if (item.get("metadata") or {}).get("name") != spec.group:
                    continue
                found = next(
                    (v for v in item.get("versions") or [] if v.get("version") == spec.version), None
                )
            backend.discovery = found or {"version": spec.version}
            backend.etag = hdrs.get("ETag", "")
        else:
            path = f"/apis/{spec.group}/{spec.version}"
            status, _, body = await backend.get(host, port, path, {"Accept": "application/json"})
            if status != 200:
                raise RuntimeError(f"failed to download legacy discovery for {path}: {status}")
            backend.discovery = legacy_to_v2(json.loads(body), spec.group, spec.version)
            backend.etag = ""
        backend.stale = False
    except (aiohttp.ClientError, OSError, TimeoutError, RuntimeError, ValueError) as exc:
        log.info("discovery for %s: %s", spec.name, exc)
        backend.stale = True
    try:
        status, _, body = await backend.get(host, port, "/openapi/v3", {"Accept": "application/json"})
        if status == 200:
            entry = (json.loads(body).get("paths") or {}).get(f"apis/{spec.group}/{spec.version}") or {}
            backend.openapi_url = str(entry.get("serverRelativeURL", ""))
    except (aiohttp.ClientError, OSError, TimeoutError, ValueError) as exc:
        log.info("openapi v3 index for %s: %s", spec.name, exc)


def _ordered(backends: Iterable[Backend]) -> dict[str, list[Backend]]:
    """group → its backends, groups by descending group priority, versions by descending version
    priority then kube's version order (APIServices sorted as kube-aggregator sorts them)."""
    by_group: dict[str, list[Backend]] = {}
    for b in sorted(backends, key=lambda b: (-b.spec.group_priority, b.spec.group)):
        by_group.setdefault(b.spec.group, []).append(b)
    for group in by_group.values():
        group.sort(key=lambda b: (-b.spec.version_priority, version_priority(b.spec.version)))
    return by_group


def api_groups(backends: Iterable[Backend]) -> list[dict[str, Any]]:
    out = []
    for group, bs in _ordered(backends).items():
        versions = [{"groupVersion": f"{group}/{b.spec.version}", "version": b.spec.version} for b in bs]
        out.append(
            {
                "kind": "APIGroup",
                "apiVersion": "v1",
                "name": group,
                "versions": versions,
                "preferredVersion": versions[0],
            }
        )
    return out


def group_discovery(backends: Iterable[Backend]) -> list[dict[str, Any]]:
    out = []
    for group, bs in _ordered(backends).items():
        versions = []
        for b in bs:
            entry = (
                dict(b.discovery) if b.discovery is not None and not b.stale else {"version": b.spec.version}
            )
            entry["version"] = b.spec.version
            entry["freshness"] = "Stale" if b.stale else "Current"
            versions.append(entry)
        out.append({"metadata": {"name": group}, "versions": versions})
    return out
