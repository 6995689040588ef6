"""Strategic merge patch for the built-in kinds, close enough for what clients send the devcluster:
`kubectl apply` (re-applying a changed object), `kubectl patch`/`edit`, and kubernetes-asyncio, which
sends every dict-bodied patch as a strategic merge patch.

Maps merge as in a JSON merge patch (null deletes). Lists merge by kube's patchMergeKey where the
built-in types declare one (containers by name, conditions by type, ...), other lists are replaced.
Directives: `$patch: replace|delete` (maps and list items), `$deleteFromPrimitiveList/<field>`,
`$retainKeys`; `$setElementOrder/<field>` only orders, and is ignored. The devcluster stores
objects schemaless, so merge keys go by field name, not by the Go type."""

from __future__ import annotations

import copy
from typing import Any

from aggapi.machinery import apierrors

CONTENT_TYPE = "application/strategic-merge-patch+json"

# field name → merge key, from the patchMergeKey tags of k8s.io/api types.
MERGE_KEYS = {
    "containers": "name",
    "initContainers": "name",
    "ephemeralContainers": "name",
    "volumes": "name",
    "env": "name",
    "volumeMounts": "mountPath",
    "volumeDevices": "devicePath",
    "imagePullSecrets": "name",
    "conditions": "type",
    "addresses": "type",
    "ownerReferences": "uid",
    "hostAliases": "ip",
    "topologySpreadConstraints": "topologyKey",
    "resourceClaims": "name",
}
PRIMITIVE_MERGE = frozenset({"finalizers"})  # lists of strings merged as sets (patchStrategy merge)


def _merge_key(field: str, items: list[Any]) -> str | None:
    if field == "ports":  # container ports merge by containerPort, service ports by port
        return "containerPort" if any(isinstance(i, dict) and "containerPort" in i for i in items) else "port"
    return MERGE_KEYS.get(field)


def apply(original: Any, patch: Any) -> Any:
    if not isinstance(patch, dict):
        raise apierrors.bad_request("a strategic merge patch must be a JSON object")
    return _merge_map(copy.deepcopy(original) if isinstance(original, dict) else {}, patch)


def _merge_map(orig: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    directive = patch.get("$patch")
    if directive == "replace":
        return {k: v for k, v in patch.items() if not k.startswith("$")}
    if directive == "delete":
        return {}
    retain = patch.get("$retainKeys")
    for key, value in patch.items():
        if key.startswith("$deleteFromPrimitiveList/"):
            field = key.split("/", 1)[1]
            if isinstance(orig.get(field), list):
                orig[field] = [v for v in orig[field] if v not in (value or [])]
            continue
        if key.startswith("$"):
            continue  # $patch handled above; $setElementOrder only orders; $retainKeys below
        if value is None:
            orig.pop(key, None)
        elif isinstance(value, dict) and isinstance(orig.get(key), dict):
            merged = _merge_map(orig[key], value)
            if value.get("$patch") == "delete":
                orig.pop(key, None)
            else:
                orig[key] = merged
        elif isinstance(value, list) and isinstance(orig.get(key), list):
            orig[key] = _merge_list(key, orig[key], value)
        else:
            orig[key] = _strip(value)
    if isinstance(retain, list):
        for key in [k for k in orig if k not in retain]:
            del orig[key]
    return orig


def _merge_list(field: str, orig: list[Any], patch: list[Any]) -> list[Any]:
    if field in PRIMITIVE_MERGE and all(not isinstance(v, dict | list) for v in orig + patch):
        return orig + [v for v in patch if v not in orig]
    key = _merge_key(field, orig + patch)
    if key is None or not all(isinstance(i, dict) for i in orig + patch):
        return [_strip(v) for v in patch if not (isinstance(v, dict) and v.get("$patch") == "delete")]
    out = list(orig)
    for item in patch:
        if item.get("$patch") == "replace" and key not in item:
            return [_strip(i) for i in patch if i is not item]
        idx = next((n for n, o in enumerate(out) if o.get(key) == item.get(key)), None)
        if item.get("$patch") == "delete":
            if idx is not None:
                out.pop(idx)
        elif idx is None:
            out.append(_strip(item))
        else:
            out[idx] = _merge_map(out[idx], item)
    return out


def _strip(value: Any) -> Any:
    """A patch value stored as is, minus directives and null map entries."""
    if isinstance(value, dict):
        return {k: _strip(v) for k, v in value.items() if not k.startswith("$") and v is not None}
    if isinstance(value, list):
        return [_strip(v) for v in value]
    return value
