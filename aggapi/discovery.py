"""Discovery documents (legacy and aggregated) built from `ResourceDef`s.

Pure functions returning JSON-ready dicts; the HTTP layer picks one by path and Accept header
and serves it with `discovery_etag` as ETag. Shapes follow k8s.io/apimachinery meta/v1
(APIGroupList, APIGroup, APIResourceList) and k8s.io/api apidiscovery/v2.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

from aggapi.registry.resource import ResourceDef

# Content types of aggregated discovery; kube-aggregator and client-go key off these exact
# parameters in the response Content-Type (anything else is read as legacy discovery).
AGGREGATED_V2_CONTENT_TYPE = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList"
AGGREGATED_V2BETA1_CONTENT_TYPE = "application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList"

# Subresources whose verbs and response kinds are fixed by convention.
_STATUS_VERBS = ["get", "patch", "update"]
_SCALE_VERBS = ["get", "patch", "update"]
_SCALE_KIND = {"group": "autoscaling", "version": "v1", "kind": "Scale"}

_VERSION_RE = re.compile(r"^v(\d+)(?:(alpha|beta)(\d+))?$")


def canonical_json(doc: Mapping[str, Any]) -> bytes:
    """The byte form hashes are computed over: sorted keys, no insignificant whitespace."""
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def discovery_etag(doc: dict[str, Any]) -> str:
    """Strong ETag for a discovery document (If-None-Match → 304)."""
    return '"' + hashlib.sha256(canonical_json(doc)).hexdigest() + '"'


def storage_version_hash(group: str, version: str, kind: str) -> str:
    """Same value kube publishes: base64 of the first 8 bytes of sha256("group/version/kind")."""
    digest = hashlib.sha256(f"{group}/{version}/{kind}".encode()).digest()
    return base64.b64encode(digest[:8]).decode()


def version_priority(version: str) -> tuple[int, int, int, str]:
    """Sort key, smaller first: GA before beta before alpha, higher numbers first, then other names."""
    m = _VERSION_RE.match(version)
    if m is None:
        return (3, 0, 0, version)
    major, stage, minor = int(m.group(1)), m.group(2), int(m.group(3) or 0)
    rank = {None: 0, "beta": 1, "alpha": 2}[stage]
    return (rank, -major, -minor, "")


def served_group_versions(defs: Sequence[ResourceDef]) -> list[tuple[str, str]]:
    """(group, version) pairs, groups in first-seen order, versions by preference."""
    return [(g, v) for g, vs in _groups(defs).items() for v in vs]


def defs_in(group: str, version: str, defs: Sequence[ResourceDef]) -> list[ResourceDef]:
    return [d for d in defs if d.group == group and d.version == version]


def _groups(defs: Sequence[ResourceDef]) -> dict[str, list[str]]:
    """group → versions in descending preference, groups in first-seen order."""
    out: dict[str, list[str]] = {}
    for d in defs:
        versions = out.setdefault(d.group, [])
        if d.version not in versions:
            versions.append(d.version)
    for versions in out.values():
        versions.sort(key=version_priority)
    return out


def _gv_for_discovery(group: str, version: str) -> dict[str, str]:
    return {"groupVersion": f"{group}/{version}" if group else version, "version": version}


def _api_group_body(group: str, versions: list[str]) -> dict[str, Any]:
    return {
        "name": group,
        "versions": [_gv_for_discovery(group, v) for v in versions],
        "preferredVersion": _gv_for_discovery(group, versions[0]),
    }


def api_group_list(defs: Sequence[ResourceDef]) -> dict[str, Any]:
    """GET /apis (legacy)."""
    groups = [_api_group_body(g, vs) for g, vs in _groups(defs).items() if g]
    return {"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}


def api_group(group: str, defs: Sequence[ResourceDef]) -> dict[str, Any]:
    """GET /apis/<group>. Raises KeyError when no def is in `group` (the caller answers 404)."""
    versions = _groups(defs)[group]
    return {"kind": "APIGroup", "apiVersion": "v1", **_api_group_body(group, versions)}


def subresource_verbs(d: ResourceDef, sub: str) -> list[str]:
    """Verbs of one subresource: `extra["subresource_verbs"]` wins, then the kube conventions."""
    declared = (d.extra.get("subresource_verbs") or {}).get(sub)
    if declared is not None:
        return sorted(declared)
    if sub == "status":
        return list(_STATUS_VERBS)
    if sub == "scale":
        return list(_SCALE_VERBS)
    return ["get"]


def subresource_kind(d: ResourceDef, sub: str) -> dict[str, str]:
    """GVK a subresource returns. `extra["subresource_kinds"]` maps a name to a kind in the
    def's group/version or to a full {group, version, kind}; status returns the object itself,
    scale autoscaling/v1 Scale. Undeclared ones default to the parent kind (as pods/log does):
    clients drop subresources that have no kind at all."""
    declared = (d.extra.get("subresource_kinds") or {}).get(sub)
    if isinstance(declared, str):
        return {"group": d.group, "version": d.version, "kind": declared}
    if isinstance(declared, Mapping):
        return {
            "group": str(declared.get("group", d.group)),
            "version": str(declared.get("version", d.version)),
            "kind": str(declared["kind"]),
        }
    if sub == "scale":
        return dict(_SCALE_KIND)
    return {"group": d.group, "version": d.version, "kind": d.kind}


def api_resource_list(group: str, version: str, defs: Sequence[ResourceDef]) -> dict[str, Any]:
    """GET /apis/<group>/<version>: one entry per resource and one per subresource."""
    resources: list[dict[str, Any]] = []
    for d in defs_in(group, version, defs):
        entry: dict[str, Any] = {
            "name": d.resource,
            "singularName": d.singular,
            "namespaced": d.namespaced,
            "kind": d.kind,
            "verbs": list(d.verbs),
        }
        if d.short_names:
            entry["shortNames"] = list(d.short_names)
        if d.categories:
            entry["categories"] = list(d.categories)
        entry["storageVersionHash"] = storage_version_hash(d.group, d.version, d.kind)
        resources.append(entry)
        for sub in d.subresources:
            gvk = subresource_kind(d, sub)
            sub_entry: dict[str, Any] = {
                "name": f"{d.resource}/{sub}",
                "singularName": "",
                "namespaced": d.namespaced,
            }
            # group/version are only spelled out when they differ from the list's (kube does the same).
            if (gvk["group"], gvk["version"]) != (d.group, d.version):
                sub_entry["group"], sub_entry["version"] = gvk["group"], gvk["version"]
            sub_entry["kind"] = gvk["kind"]
            sub_entry["verbs"] = subresource_verbs(d, sub)
            resources.append(sub_entry)
    return {
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": f"{group}/{version}" if group else version,
        "resources": resources,
    }


def _resource_discovery(d: ResourceDef) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "resource": d.resource,
        "responseKind": {"group": d.group, "version": d.version, "kind": d.kind},
        "scope": "Namespaced" if d.namespaced else "Cluster",
        "singularResource": d.singular,
        "verbs": list(d.verbs),
    }
    if d.short_names:
        entry["shortNames"] = list(d.short_names)
    if d.categories:
        entry["categories"] = list(d.categories)
    if d.subresources:
        entry["subresources"] = [
            {"subresource": sub, "responseKind": subresource_kind(d, sub), "verbs": subresource_verbs(d, sub)}
            for sub in d.subresources
        ]
    return entry


def aggregated_discovery(defs: Sequence[ResourceDef], *, discovery_version: str = "v2") -> dict[str, Any]:
    """GET /apis as apidiscovery.k8s.io APIGroupDiscoveryList (v2; v2beta1 has the same shape)."""
    if discovery_version not in ("v2", "v2beta1"):
        raise ValueError(f"unsupported aggregated discovery version {discovery_version!r}")
    items: list[dict[str, Any]] = []
    for group, versions in _groups(defs).items():
        items.append(
            {
                "metadata": {"name": group},
                "versions": [
                    {
                        "version": v,
                        "resources": [_resource_discovery(d) for d in defs_in(group, v, defs)],
                        "freshness": "Current",
                    }
                    for v in versions
                ],
            }
        )
    return {
        "kind": "APIGroupDiscoveryList",
        "apiVersion": f"apidiscovery.k8s.io/{discovery_version}",
        "metadata": {},
        "items": items,
    }
