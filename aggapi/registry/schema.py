"""Structural-schema handling shared by every kind: pruning unknown fields (for fieldValidation) and
type/enum/required checks turned into 422 causes, the way kube-apiserver treats custom resources."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import jsonschema

from aggapi.registry.resource import FieldError

OBJECT_META_FIELDS = frozenset(
    {
        "name",
        "generateName",
        "namespace",
        "selfLink",
        "uid",
        "resourceVersion",
        "generation",
        "creationTimestamp",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
        "labels",
        "annotations",
        "ownerReferences",
        "finalizers",
        "managedFields",
    }
)


def prune(obj: Any, schema: Mapping[str, Any], path: str = "") -> list[str]:
    """Remove fields the schema does not declare; return their paths (`spec.foo`) for errors/warnings."""
    unknown: list[str] = []
    if not isinstance(obj, dict):
        if isinstance(obj, list) and isinstance(schema.get("items"), Mapping):
            for i, item in enumerate(obj):
                unknown += prune(item, schema["items"], f"{path}[{i}]")
        return unknown
    if schema.get("x-kubernetes-preserve-unknown-fields"):
        return unknown
    props = schema.get("properties")
    addl = schema.get("additionalProperties")
    for key in list(obj):
        sub = f"{path}.{key}" if path else key
        if path == "" and key == "metadata":
            if isinstance(obj[key], dict):
                for mkey in [k for k in obj[key] if k not in OBJECT_META_FIELDS]:
                    del obj[key][mkey]
                    unknown.append(f"metadata.{mkey}")
            continue
        if isinstance(props, Mapping) and key in props:
            unknown += prune(obj[key], props[key], sub)
        elif isinstance(addl, Mapping):
            unknown += prune(obj[key], addl, sub)
        elif props is not None or addl is False:
            del obj[key]
            unknown.append(sub)
    return unknown


def _field_path(parts: Any) -> str:
    out = ""
    for p in parts:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out


def _type_name(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return "null"


def check(obj: Any, schema: Mapping[str, Any]) -> list[FieldError]:
    """Schema violations as kube-style field errors (type, enum, required)."""
    validator = jsonschema.Draft7Validator(schema)
    errs: list[FieldError] = []
    for e in sorted(validator.iter_errors(obj), key=lambda e: list(e.absolute_path)):
        path = _field_path(e.absolute_path)
        if e.validator == "required" and isinstance(e.instance, dict):
            missing = [r for r in e.validator_value if r not in e.instance]
            errs += [FieldError.required(f"{path}.{m}" if path else m) for m in missing]
        elif e.validator == "enum":
            errs.append(FieldError.not_supported(path, e.instance, [str(v) for v in e.validator_value]))
        elif e.validator == "type":
            errs.append(
                FieldError(
                    path,
                    "FieldValueTypeInvalid",
                    f'Invalid value: "{_type_name(e.instance)}": {path} in body must be of type '
                    f"{e.validator_value}: {json.dumps(e.instance)}",
                )
            )
        else:
            errs.append(FieldError.invalid(path, e.instance, e.message))
    return errs


def with_schema_errors(obj: Any, schema: Mapping[str, Any], errs: list[FieldError]) -> list[FieldError]:
    """`errs` plus the structural-schema violations (types, enums, required) of `obj`, as kube validates a
    custom resource against its schema; a field the kind's own checks already reported is not repeated."""
    seen = {e.field for e in errs}
    return errs + [e for e in check(obj, schema) if e.field not in seen]
