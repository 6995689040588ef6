"""UnitedDeployment: one workload template rolled out as a Deployment or StatefulSet per NodePool, with
per-pool tweaks (OpenYurt's UnitedDeployment/YurtAppSet, SuperEdge's DeploymentGrid). The controller is
aggapi/controllers/uniteddeployment.py; validation is in uniteddeployment_validation.py."""

from __future__ import annotations

from typing import Any

from aggapi.apis.common import CONDITION, GROUP, STRING_MAP, VERSION, carry_status, object_schema, only_status
from aggapi.apis.uniteddeployment_render import DEFAULT_HISTORY
from aggapi.apis.uniteddeployment_validation import validate_spec, validate_status, validate_update
from aggapi.machinery.validation import is_dns1123_label
from aggapi.registry.resource import FieldError, Obj, PrinterColumn, ResourceDef

_STRINGS: dict[str, Any] = {"type": "array", "items": {"type": "string"}}

LABEL_SELECTOR: dict[str, Any] = {
    "type": "object",
    "description": "A metav1 LabelSelector: matchLabels and matchExpressions are ANDed; {} selects all.",
    "properties": {
        "matchLabels": STRING_MAP,
        "matchExpressions": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["key", "operator"],
                "properties": {
                    "key": {"type": "string"},
                    "operator": {"type": "string", "enum": ["In", "NotIn", "Exists", "DoesNotExist"]},
                    "values": _STRINGS,
                },
            },
        },
    },
}


def _workload_template(kind: str) -> dict[str, Any]:
    return {
        "type": "object",
        "description": f"The {kind} every target pool gets: metadata labels/annotations and an apps/v1 "
        f"{kind}Spec. The controller sets spec.selector (spec.selector plus the pool label), the pod "
        "template's apps.openyurt.io/pool-name label, nodeSelector apps.openyurt.io/nodepool and the "
        "pool's tolerations.",
        "required": ["spec"],
        "properties": {
            "metadata": {
                "type": "object",
                "properties": {"labels": STRING_MAP, "annotations": STRING_MAP},
            },
            "spec": {
                "type": "object",
                "description": f"An apps/v1 {kind}Spec (kept as given; checked by kube-apiserver).",
                "x-kubernetes-preserve-unknown-fields": True,
            },
        },
    }


PATCH_OP: dict[str, Any] = {
    "type": "object",
    "description": "An RFC 6902 JSON patch operation on the generated apps/v1 object.",
    "required": ["op", "path"],
    "properties": {
        "op": {"type": "string", "enum": ["add", "remove", "replace", "move", "copy", "test"]},
        "path": {"type": "string", "description": "A JSON pointer, e.g. /spec/template/spec/hostNetwork."},
        "from": {"type": "string"},
        "value": {"x-kubernetes-preserve-unknown-fields": True},
    },
}

TWEAK: dict[str, Any] = {
    "type": "object",
    "description": "Changes for the pools named in pools or matched by nodepoolSelector; tweaks apply in "
    "list order (a later one wins).",
    "properties": {
        "pools": {**_STRINGS, "description": "Pool names this tweak applies to."},
        "nodepoolSelector": {**LABEL_SELECTOR, "description": "NodePools (by their labels) it applies to."},
        "replicas": {"type": "integer", "format": "int32", "description": "Replicas in these pools."},
        "containerImages": {
            "type": "array",
            "description": "Images to use instead of the template's, by container name.",
            "items": {
                "type": "object",
                "required": ["name", "image"],
                "properties": {"name": {"type": "string"}, "image": {"type": "string"}},
            },
        },
        "patches": {"type": "array", "items": PATCH_OP, "description": "Applied after replicas and images."},
    },
}

SPEC: dict[str, Any] = {
    "type": "object",
    "description": "UnitedDeploymentSpec: the workload template, the target pools and per-pool tweaks.",
    "required": ["selector", "workloadTemplate"],
    "properties": {
        "selector": {
            **LABEL_SELECTOR,
            "description": "Selects the pods of every pool's workload; must match the pod template's labels. "
            "Immutable.",
        },
        "workloadTemplate": {
            "type": "object",
            "description": "Exactly one of deploymentTemplate and statefulSetTemplate (immutable kind).",
            "properties": {
                "deploymentTemplate": _workload_template("Deployment"),
                "statefulSetTemplate": _workload_template("StatefulSet"),
            },
        },
        "pools": {**_STRINGS, "description": "Target NodePools by name."},
        "nodepoolSelector": {
            **LABEL_SELECTOR,
            "description": "Target NodePools by label; pools created later that match get the workload too.",
        },
        "workloadTweaks": {"type": "array", "items": TWEAK},
        "revisionHistoryLimit": {
            "type": "integer",
            "format": "int32",
            "default": DEFAULT_HISTORY,
            "description": "Given to each workload whose template sets none: old ReplicaSets (Deployment) or "
            "ControllerRevisions (StatefulSet) kept for rollback. Defaults to 10.",
        },
    },
}

POOL_STATUS: dict[str, Any] = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "description": "The pool."},
        "workload": {"type": "string", "description": "The Deployment or StatefulSet of this pool."},
        "revision": {"type": "string", "description": "The workload's apps.openyurt.io/revision label."},
        "updated": {
            "type": "boolean",
            "description": "The workload runs the current revision everywhere and is available.",
        },
        "replicas": {"type": "integer", "format": "int32", "description": "Desired replicas."},
        "readyReplicas": {"type": "integer", "format": "int32"},
        "availableReplicas": {"type": "integer", "format": "int32"},
        "updatedReplicas": {"type": "integer", "format": "int32"},
    },
}

STATUS: dict[str, Any] = {
    "type": "object",
    "description": "UnitedDeploymentStatus: summed and per-pool replicas of the workloads, and conditions.",
    "properties": {
        "observedGeneration": {"type": "integer", "format": "int64"},
        "replicas": {"type": "integer", "format": "int32", "description": "Desired replicas, all pools."},
        "readyReplicas": {"type": "integer", "format": "int32"},
        "updatedReplicas": {
            "type": "integer",
            "format": "int32",
            "description": "Replicas of the pools' current revisions.",
        },
        "updateRevision": {"type": "string", "description": "The revision of the current spec."},
        "currentRevision": {
            "type": "string",
            "description": "The last revision every pool finished rolling out.",
        },
        "poolStatuses": {"type": "array", "items": POOL_STATUS},
        "conditions": {"type": "array", "items": CONDITION},
    },
}

SCHEMA = object_schema(
    "UnitedDeployment",
    "UnitedDeployment runs one app in every target NodePool: a Deployment or StatefulSet per pool, "
    "made from one template with per-pool tweaks.",
    SPEC,
    STATUS,
)


def _default(obj: Obj) -> None:
    spec = obj.get("spec")
    if isinstance(spec, dict):
        spec.setdefault("revisionHistoryLimit", DEFAULT_HISTORY)


class UnitedDeploymentStrategy:
    def prepare_for_create(self, obj: Obj) -> None:
        obj.pop("status", None)
        _default(obj)

    def prepare_for_update(self, new: Obj, old: Obj) -> None:
        carry_status(new, old)
        _default(new)

    def validate(self, obj: Obj) -> list[FieldError]:
        name = str((obj.get("metadata") or {}).get("name", ""))
        # The name goes into workload names (<name>-<pool>) and the edge.aggapi.io/uniteddeployment label.
        errs = [FieldError.invalid("metadata.name", name, m) for m in is_dns1123_label(name) if name]
        spec = obj.get("spec")
        if not isinstance(spec, dict):
            return [*errs, FieldError.required("spec")]
        return errs + validate_spec(spec)

    def validate_update(self, new: Obj, old: Obj) -> list[FieldError]:
        return self.validate(new) + validate_update(new.get("spec") or {}, old.get("spec") or {})


class UnitedDeploymentStatusStrategy:
    def prepare_for_create(self, obj: Obj) -> None:
        pass

    def prepare_for_update(self, new: Obj, old: Obj) -> None:
        only_status(new, old)

    def validate(self, obj: Obj) -> list[FieldError]:
        return []

    def validate_update(self, new: Obj, old: Obj) -> list[FieldError]:
        return validate_status(new.get("status"))


UNITEDDEPLOYMENT = ResourceDef(
    group=GROUP,
    version=VERSION,
    resource="uniteddeployments",
    kind="UnitedDeployment",
    singular="uniteddeployment",
    namespaced=True,
    schema=SCHEMA,
    strategy=UnitedDeploymentStrategy(),
    status_strategy=UnitedDeploymentStatusStrategy(),
    short_names=("ud",),
    categories=("edge",),
    printer_columns=(
        PrinterColumn("Total", "integer", ".status.replicas", "Desired replicas summed over the pools"),
        PrinterColumn("Ready", "integer", ".status.readyReplicas", "Ready replicas summed over the pools"),
        PrinterColumn("Updated", "integer", ".status.updatedReplicas", "Replicas of the current revision"),
        PrinterColumn("Age", "date", ".metadata.creationTimestamp"),
    ),
    description="UnitedDeployment runs one app in every target NodePool.",
)
