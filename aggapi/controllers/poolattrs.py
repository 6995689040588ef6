"""What a NodePool pushes onto its nodes, and the merge patch that brings one node there.

OpenYurt-compatible: node annotation `nodepool.openyurt.io/previous-attributes` holds JSON
{"labels": {...}, "annotations": {...}, "taints": [...]} of what the pool last pushed. A key the pool
pushed before and no longer has is removed from the node; a key the pool never pushed is never touched.
Taints are identified by key+effect. A node that left its pool (or whose pool is gone) gets desired =
nothing, so it loses exactly what the pool gave it, and the annotation goes too.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from typing import Any

from aggapi.controllers.informer import Obj

log = logging.getLogger(__name__)

PREVIOUS_ATTRIBUTES = "nodepool.openyurt.io/previous-attributes"


@dataclass(frozen=True, slots=True)
class Attrs:
    labels: dict[str, str] = field(default_factory=dict)
    annotations: dict[str, str] = field(default_factory=dict)
    taints: list[Obj] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return not (self.labels or self.annotations or self.taints)

    def encode(self) -> str:
        body: dict[str, Any] = {}
        if self.labels:
            body["labels"] = self.labels
        if self.annotations:
            body["annotations"] = self.annotations
        if self.taints:
            body["taints"] = self.taints
        return json.dumps(body, sort_keys=True, separators=(",", ":"))


def _str_map(value: Any) -> dict[str, str]:
    return {str(k): str(v) for k, v in value.items()} if isinstance(value, dict) else {}


def _taints(value: Any) -> list[Obj]:
    out = []
    for t in value if isinstance(value, list) else []:
        if isinstance(t, dict) and t.get("key") and t.get("effect"):
            out.append(
                {k: t[k] for k in ("key", "value", "effect", "timeAdded") if t.get(k) not in (None, "")}
            )
    return out


def pool_attrs(pool: Obj | None) -> Attrs:
    """What `pool` pushes (nothing when there is no pool)."""
    if pool is None:
        return Attrs()
    spec = pool.get("spec") or {}
    annotations = _str_map(spec.get("annotations"))
    annotations.pop(PREVIOUS_ATTRIBUTES, None)  # the bookkeeping annotation is never a pool's to push
    return Attrs(_str_map(spec.get("labels")), annotations, _taints(spec.get("taints")))


def previous_attrs(node: Obj) -> Attrs:
    raw = ((node.get("metadata") or {}).get("annotations") or {}).get(PREVIOUS_ATTRIBUTES)
    if not raw:
        return Attrs()
    try:
        body = json.loads(raw)
    except ValueError:
        log.warning(
            "node %s: unreadable %s annotation; treating it as empty", _name(node), PREVIOUS_ATTRIBUTES
        )
        return Attrs()
    if not isinstance(body, dict):
        return Attrs()
    return Attrs(_str_map(body.get("labels")), _str_map(body.get("annotations")), _taints(body.get("taints")))


def _ident(t: Obj) -> tuple[str, str]:
    return str(t.get("key")), str(t.get("effect"))


def _map_patch(current: dict[str, str], previous: dict[str, str], desired: dict[str, str]) -> dict[str, Any]:
    patch: dict[str, Any] = {k: None for k in previous if k not in desired and k in current}
    patch.update({k: v for k, v in desired.items() if current.get(k) != v})
    return patch


def desired_taints(current: list[Obj], previous: list[Obj], desired: list[Obj]) -> list[Obj]:
    """The node's taints: the pool's (replacing same key+effect), minus ones the pool pushed and dropped,
    everything else kept in place."""
    want = {_ident(t): t for t in desired}
    drop = {_ident(t) for t in previous} - want.keys()
    out: list[Obj] = []
    placed: set[tuple[str, str]] = set()
    for t in current:
        ident = _ident(t)
        if ident in drop or ident in placed:
            continue
        if ident in want:
            merged = dict(want[ident])
            if "timeAdded" not in merged and t.get("timeAdded"):
                merged["timeAdded"] = t["timeAdded"]
            out.append(merged)
            placed.add(ident)
        else:
            out.append(t)
    out += [t for ident, t in want.items() if ident not in placed]
    return out


def node_patch(node: Obj, desired: Attrs) -> Obj | None:
    """A JSON merge patch (guarded by the node's resourceVersion) making `node` carry `desired`, or None
    when it already does."""
    meta = node.get("metadata") or {}
    labels, annotations = _str_map(meta.get("labels")), _str_map(meta.get("annotations"))
    previous = previous_attrs(node)
    label_patch = _map_patch(labels, previous.labels, desired.labels)
    ann_patch = _map_patch(annotations, previous.annotations, desired.annotations)
    if desired.empty:
        if PREVIOUS_ATTRIBUTES in annotations:
            ann_patch[PREVIOUS_ATTRIBUTES] = None
    elif annotations.get(PREVIOUS_ATTRIBUTES) != desired.encode():
        ann_patch[PREVIOUS_ATTRIBUTES] = desired.encode()
    current_taints = [t for t in (node.get("spec") or {}).get("taints") or [] if isinstance(t, dict)]
    taints = desired_taints(current_taints, previous.taints, desired.taints)
    if not (label_patch or ann_patch or taints != current_taints):
        return None
    patch_meta: dict[str, Any] = {"resourceVersion": str(meta.get("resourceVersion") or "")}
    if label_patch:
        patch_meta["labels"] = label_patch
    if ann_patch:
        patch_meta["annotations"] = ann_patch
    patch: Obj = {"metadata": patch_meta}
    if taints != current_taints:
        patch["spec"] = {"taints": taints}  # a merge patch replaces lists whole
    return patch


def _name(node: Obj) -> str:
    return str((node.get("metadata") or {}).get("name", ""))
