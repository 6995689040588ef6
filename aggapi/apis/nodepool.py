"""NodePool: a group of edge nodes managed together (OpenYurt-compatible shape)."""

from __future__ import annotations

from typing import Any

from aggapi.apis.common import (
    CONDITION,
    GROUP,
    STRING_MAP,
    TAINT,
    VERSION,
    carry_status,
    object_schema,
    only_status,
    validate_string_map,
    validate_taints,
)
from aggapi.machinery.validation import is_dns1123_label
from aggapi.registry.resource import FieldError, Obj, PrinterColumn, ResourceDef

POOL_TYPES = ["Edge", "Cloud"]
# OpenYurt's label on a pool: its spec.type in lower case ("edge" | "cloud"), so pools select by type.
TYPE_LABEL = "nodepool.openyurt.io/type"

SPEC: dict[str, Any] = {
    "type": "object",
    "description": "NodePoolSpec describes the desired state of a pool and what it pushes onto its nodes.",
    "properties": {
        "type": {
            "type": "string",
            "enum": POOL_TYPES,
            "default": "Edge",
            "description": "Edge or Cloud. Defaults to Edge. Immutable.",
        },
        "hostNetwork": {
            "type": "boolean",
            "description": "Nodes of this pool run pods on the host network only. "
            "Immutable; not valid on Cloud.",
        },
        "interConnectivity": {
            "type": "boolean",
            "description": "Nodes of this pool can reach each other directly.",
        },
        "labels": {**STRING_MAP, "description": "Labels applied to every node of the pool."},
        "annotations": {**STRING_MAP, "description": "Annotations applied to every node of the pool."},
        "taints": {
            "type": "array",
            "description": "Taints applied to every node of the pool (identified by key and effect).",
            "items": TAINT,
        },
    },
}

STATUS: dict[str, Any] = {
    "type": "object",
    "description": "NodePoolStatus is the observed state of the pool.",
    "properties": {
        "readyNodeNum": {"type": "integer", "format": "int32", "description": "Ready nodes in the pool."},
        "unreadyNodeNum": {"type": "integer", "format": "int32", "description": "Not-ready nodes."},
        "nodes": {"type": "array", "items": {"type": "string"}, "description": "Names of member nodes."},
        "conditions": {"type": "array", "items": CONDITION},
    },
}


SCHEMA = object_schema(
    "NodePool",
    "NodePool is a group of edge nodes managed together: labels, annotations and taints pushed "
    "onto its members, readiness counted, and workloads rolled out per pool.",
    SPEC,
    STATUS,
)


def _default(obj: Obj) -> None:
    spec = obj.setdefault("spec", {})
    if not isinstance(spec, dict):
        return
    spec.setdefault("type", "Edge")
    meta = obj.get("metadata")
    if isinstance(spec.get("type"), str) and isinstance(meta, dict):
        labels = meta.get("labels")
        if not isinstance(labels, dict):
            labels = meta["labels"] = {}
        labels[TYPE_LABEL] = spec["type"].lower()


class NodePoolStrategy:
    def prepare_for_create(self, obj: Obj) -> None:
        obj.pop("status", None)
        _default(obj)

    def prepare_for_update(self, new: Obj, old: Obj) -> None:
        carry_status(new, old)
        _default(new)

    def validate(self, obj: Obj) -> list[FieldError]:
        errs: list[FieldError] = []
        name = obj.get("metadata", {}).get("name", "")
        # The pool name becomes the value of the node label apps.openyurt.io/nodepool, hence ≤ 63 chars.
        errs += [FieldError.invalid("metadata.name", name, m) for m in is_dns1123_label(name) if name]
        spec = obj.get("spec")
        if not isinstance(spec, dict):
            return [*errs, FieldError.required("spec")]
        ptype = spec.get("type")
        if ptype not in POOL_TYPES:
            errs.append(FieldError.not_supported("spec.type", ptype, POOL_TYPES))
        if spec.get("hostNetwork") and ptype == "Cloud":
            errs.append(FieldError.forbidden("spec.hostNetwork", "hostNetwork is only valid for Edge pools"))
        errs += validate_string_map(spec.get("labels"), "spec.labels", label_values=True)
        errs += validate_string_map(spec.get("annotations"), "spec.annotations", label_values=False)
        errs += validate_taints(spec.get("taints"), "spec.taints")
        return errs

    def validate_update(self, new: Obj, old: Obj) -> list[FieldError]:
        errs = self.validate(new)
        new_spec, old_spec = new.get("spec") or {}, old.get("spec") or {}
        for field in ("type", "hostNetwork"):
            if new_spec.get(field) != old_spec.get(field):
                errs.append(FieldError.immutable(f"spec.{field}", new_spec.get(field)))
        return errs


class NodePoolStatusStrategy:
    def prepare_for_create(self, obj: Obj) -> None:  # status is never created on its own
        pass

    def prepare_for_update(self, new: Obj, old: Obj) -> None:
        only_status(new, old)

    def validate(self, obj: Obj) -> list[FieldError]:
        return []

    def validate_update(self, new: Obj, old: Obj) -> list[FieldError]:
        errs: list[FieldError] = []
        status = new.get("status") or {}
        for field in ("readyNodeNum", "unreadyNodeNum"):
            val = status.get(field)
            if val is not None and (not isinstance(val, int) or val < 0):
                errs.append(FieldError.invalid(f"status.{field}", val, "must be a non-negative integer"))
        return errs


_NODE_ADDRESS: dict[str, Any] = {
    "type": "object",
    "properties": {"type": {"type": "string"}, "address": {"type": "string"}},
}

TOPOLOGY: dict[str, Any] = {
    "type": "object",
    "description": "NodePoolTopology (GET nodepools/{name}/topology, read-only): the pool's nodes as this "
    "aggapi replica sees them, and the in-pool endpoints of Services annotated openyurt.io/topologyKeys.",
    "properties": {
        "apiVersion": {"type": "string"},
        "kind": {"type": "string"},
        "metadata": {"type": "object"},
        "pool": {
            "type": "object",
            "properties": {"type": {"type": "string"}, "readyNodeNum": {"type": "integer"}},
        },
        "nodes": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "name": {"type": "string"},
                    "ready": {"type": "string", "description": "The Node's Ready condition status."},
                    "addresses": {"type": "array", "items": _NODE_ADDRESS},
                    "tunnel": {
                        "type": "string",
                        "description": "Connected or Disconnected (the tunnel agent on this replica).",
                    },
                    "autonomyDuration": {
                        "type": "string",
                        "description": "The node's node.openyurt.io/autonomy-duration annotation, if set.",
                    },
                },
            },
        },
        "services": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "namespace": {"type": "string"},
                    "name": {"type": "string"},
                    "topologyKeys": {"type": "string"},
                    "endpoints": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "properties": {
                                "addresses": {"type": "array", "items": {"type": "string"}},
                                "nodeName": {"type": "string"},
                                "ready": {"type": "boolean"},
                            },
                        },
                    },
                },
            },
        },
    },
}

NODEPOOL = ResourceDef(
    group=GROUP,
    version=VERSION,
    resource="nodepools",
    kind="NodePool",
    singular="nodepool",
    namespaced=False,
    schema=SCHEMA,
    strategy=NodePoolStrategy(),
    status_strategy=NodePoolStatusStrategy(),
    short_names=("np",),
    categories=("edge",),
    printer_columns=(
        PrinterColumn("Type", "string", ".spec.type", "The type of nodepool"),
        PrinterColumn(
            "ReadyNodes", "integer", ".status.readyNodeNum", "The number of ready nodes in the pool"
        ),
        PrinterColumn("NotReadyNodes", "integer", ".status.unreadyNodeNum", "The number of unready nodes"),
        PrinterColumn("Age", "date", ".metadata.creationTimestamp"),
    ),
    extra_subresources=("topology",),
    description="NodePool is a group of edge nodes managed together.",
    extra={
        "subresource_verbs": {"topology": ["get"]},
        "subresource_kinds": {"topology": "NodePoolTopology"},
        "subresource_schemas": {"topology": TOPOLOGY},
    },
)
