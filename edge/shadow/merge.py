"""Patches applied to cached objects offline: JSON merge patch (RFC 7386) and the subset of strategic
merge patch that node status and Lease updates use (lists of conditions/addresses merged by their
kube patchMergeKey, `null` deletes, `$patch: delete` on list items, other `$` directives ignored)."""

from __future__ import annotations

import copy
from typing import Any

MERGE_KEYS = {
    "conditions": "type",
    "addresses": "type",
    "taints": "key",
    "volumesAttached": "name",
    "containers": "name",
    "ownerReferences": "uid",
}


def merge_patch(target: Any, patch: Any) -> Any:
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = dict(target) if isinstance(target, dict) else {}
    for k, v in patch.items():
        if v is None:
            out.pop(k, None)
        else:
            out[k] = merge_patch(out.get(k), v)
    return out


def strategic_merge(target: Any, patch: Any) -> Any:
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = dict(target) if isinstance(target, dict) else {}
    for k, v in patch.items():
        if k.startswith("$"):
            continue
        if v is None:
            out.pop(k, None)
        elif isinstance(v, list) and k in MERGE_KEYS and isinstance(out.get(k), list):
            out[k] = _merge_list(out[k], v, MERGE_KEYS[k])
        elif isinstance(v, dict):
            out[k] = strategic_merge(out.get(k), v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def _merge_list(current: list[Any], patch: list[Any], key: str) -> list[Any]:
    out = [copy.deepcopy(x) for x in current]
    for item in patch:
        if not isinstance(item, dict) or key not in item:
            out.append(copy.deepcopy(item))
            continue
        idx = next((i for i, x in enumerate(out) if isinstance(x, dict) and x.get(key) == item[key]), None)
        if item.get("$patch") == "delete":
            if idx is not None:
                out.pop(idx)
        elif idx is None:
            out.append(strategic_merge({}, item))
        else:
            out[idx] = strategic_merge(out[idx], item)
    return out


def apply_patch(obj: dict[str, Any], ctype: str, patch: Any) -> dict[str, Any] | None:
    """The patched object, or None for a patch type not applied offline (JSON patch, apply)."""
    media = ctype.split(";", 1)[0].strip()
    if media == "application/strategic-merge-patch+json":
        result = strategic_merge(obj, patch)
    elif media == "application/merge-patch+json":
        result = merge_patch(obj, patch)
    else:
        return None
    return result if isinstance(result, dict) else None
