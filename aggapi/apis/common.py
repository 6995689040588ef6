"""Schema fragments and checks shared by the kinds of edge.aggapi.io."""

from __future__ import annotations

from typing import Any

from aggapi.machinery.validation import is_qualified_name, is_valid_label_value
from aggapi.registry.resource import FieldError, Obj

GROUP = "edge.aggapi.io"
VERSION = "v1alpha1"

STRING_MAP: dict[str, Any] = {"type": "object", "additionalProperties": {"type": "string"}}

TAINT_EFFECTS = ["NoSchedule", "PreferNoSchedule", "NoExecute"]

TAINT: dict[str, Any] = {
    "type": "object",
    "description": "A core/v1 Taint: the node this is applied to repels pods that do not tolerate it.",
    "required": ["key", "effect"],
    "properties": {
        "key": {"type": "string", "description": "The taint key to be applied to a node."},
        "value": {"type": "string", "description": "The taint value corresponding to the taint key."},
        "effect": {
            "type": "string",
            "enum": TAINT_EFFECTS,
            "description": "The effect of the taint on pods that do not tolerate it: "
            "NoSchedule, PreferNoSchedule or NoExecute.",
        },
        "timeAdded": {"type": "string", "format": "date-time"},
    },
}

CONDITION: dict[str, Any] = {
    "type": "object",
    "required": ["type", "status"],
    "properties": {
        "type": {"type": "string"},
        "status": {"type": "string", "enum": ["True", "False", "Unknown"]},
        "lastTransitionTime": {"type": "string", "format": "date-time"},
        "reason": {"type": "string"},
        "message": {"type": "string"},
        "observedGeneration": {"type": "integer", "format": "int64"},
    },
}


def object_schema(
    kind: str, description: str, spec: dict[str, Any], status: dict[str, Any]
) -> dict[str, Any]:
    """The whole-object schema, shaped like a CRD's openAPIV3Schema."""
    return {
        "type": "object",
        "description": description,
        "properties": {
            "apiVersion": {
                "type": "string",
                "description": "APIVersion defines the versioned schema of this representation of an object.",
            },
            "kind": {"type": "string", "description": f"Kind is the type of the object: {kind}."},
            "metadata": {"type": "object"},
            "spec": spec,
            "status": status,
        },
    }


def validate_string_map(value: Any, path: str, *, label_values: bool) -> list[FieldError]:
    """Keys must be qualified names; values must be label values when the map becomes node labels."""
    if value is None:
        return []
    if not isinstance(value, dict):
        return [FieldError.invalid(path, value, "must be a map of strings")]
    errs: list[FieldError] = []
    for key, val in value.items():
        errs += [FieldError.invalid(path, key, m) for m in is_qualified_name(str(key))]
        if not isinstance(val, str):
            errs.append(FieldError.invalid(f"{path}[{key}]", val, "must be a string"))
        elif label_values:
            errs += [FieldError.invalid(f"{path}[{key}]", val, m) for m in is_valid_label_value(val)]
    return errs


def validate_taints(taints: Any, path: str) -> list[FieldError]:
    if taints is None:
        return []
    if not isinstance(taints, list):
        return [FieldError.invalid(path, taints, "must be a list of taints")]
    errs: list[FieldError] = []
    seen: set[tuple[str, str]] = set()
    for i, taint in enumerate(taints):
        at = f"{path}[{i}]"
        if not isinstance(taint, dict):
            errs.append(FieldError.invalid(at, taint, "must be an object"))
            continue
        key = taint.get("key")
        if not key:
            errs.append(FieldError.required(f"{at}.key"))
        else:
            errs += [FieldError.invalid(f"{at}.key", key, m) for m in is_qualified_name(str(key))]
        value = taint.get("value")
        if value:
            errs += [FieldError.invalid(f"{at}.value", value, m) for m in is_valid_label_value(str(value))]
        effect = taint.get("effect")
        if not effect:
            errs.append(FieldError.required(f"{at}.effect"))
        elif effect not in TAINT_EFFECTS:
            errs.append(FieldError.not_supported(f"{at}.effect", effect, TAINT_EFFECTS))
        # A taint is identified by key+effect: two entries with both equal would fight on the node.
        ident = (str(key), str(effect))
        if key and effect and ident in seen:
            errs.append(
                FieldError(
                    f"{at}",
                    "FieldValueDuplicate",
                    f'Duplicate value: taint with key "{key}" and effect "{effect}" is listed twice',
                )
            )
        seen.add(ident)
    return errs


def carry_status(new: Obj, old: Obj) -> None:
    """Main-resource updates never change status (the status subresource owns it)."""
    if "status" in old:
        new["status"] = old["status"]
    else:
        new.pop("status", None)


def only_status(new: Obj, old: Obj) -> None:
    """Status updates change status only: everything else is carried over from the stored object."""
    status = new.get("status")
    new.clear()
    new.update({k: v for k, v in old.items() if k != "status"})
    if status is not None:
        new["status"] = status
