"""ObjectMeta rules every kind shares (kube's rest.BeforeCreate/BeforeUpdate and ValidateObjectMeta)."""

from __future__ import annotations

import secrets
from typing import Any

from aggapi.machinery.validation import (
    is_dns1123_subdomain,
    is_qualified_name,
    validate_annotations,
    validate_labels,
)
from aggapi.registry.resource import FieldError, Obj

# kube's utilrand alphabet: no vowels (no words), no look-alike characters.
_GEN_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"


def generate_name(base: str) -> str:
    base = base[: 63 - 5]
    return base + "".join(secrets.choice(_GEN_ALPHABET) for _ in range(5))


def spec_changed(new: Obj, old: Obj) -> bool:
    """Generation moves when anything but metadata and status changes (custom-resource rule)."""
    strip = ("metadata", "status")
    return {k: v for k, v in new.items() if k not in strip} != {
        k: v for k, v in old.items() if k not in strip
    }


def validate_meta(meta: Any, *, namespaced: bool) -> list[FieldError]:
    if not isinstance(meta, dict):
        return [FieldError.required("metadata")]
    errs: list[FieldError] = []
    name = meta.get("name", "")
    if not name:
        errs.append(FieldError.required("metadata.name", "name or generateName is required"))
    elif not isinstance(name, str):
        errs.append(FieldError.invalid("metadata.name", name, "must be a string"))
    else:
        errs += [FieldError.invalid("metadata.name", name, m) for m in is_dns1123_subdomain(name)]
    if namespaced and not meta.get("namespace"):
        errs.append(FieldError.required("metadata.namespace"))
    errs += [
        FieldError(p or "metadata.labels", "FieldValueInvalid", m)
        for p, m in validate_labels(meta.get("labels"), "metadata.labels")
    ]
    errs += [
        FieldError(p, "FieldValueInvalid", m)
        for p, m in validate_annotations(meta.get("annotations"), "metadata.annotations")
    ]
    finalizers = meta.get("finalizers")
    if finalizers is not None:
        if not isinstance(finalizers, list):
            errs.append(FieldError.invalid("metadata.finalizers", finalizers, "must be a list of strings"))
        else:
            for i, fin in enumerate(finalizers):
                errs += [
                    FieldError.invalid(f"metadata.finalizers[{i}]", fin, m)
                    for m in is_qualified_name(str(fin))
                ]
    owners = meta.get("ownerReferences")
    if owners is not None:
        if not isinstance(owners, list):
            errs.append(FieldError.invalid("metadata.ownerReferences", owners, "must be a list"))
        else:
            controllers = 0
            for i, ref in enumerate(owners):
                at = f"metadata.ownerReferences[{i}]"
                if not isinstance(ref, dict):
                    errs.append(FieldError.invalid(at, ref, "must be an object"))
                    continue
                for key in ("apiVersion", "kind", "name", "uid"):
                    if not ref.get(key):
                        errs.append(FieldError.required(f"{at}.{key}"))
                controllers += 1 if ref.get("controller") else 0
            if controllers > 1:
                errs.append(
                    FieldError.invalid(
                        "metadata.ownerReferences",
                        owners,
                        "Only one reference can have Controller set to true",
                    )
                )
    return errs


def validate_meta_update(new: Obj, old: Obj) -> list[FieldError]:
    errs: list[FieldError] = []
    nm, om = new.get("metadata", {}), old.get("metadata", {})
    if om.get("deletionTimestamp"):
        added = set(nm.get("finalizers") or []) - set(om.get("finalizers") or [])
        if added:
            errs.append(
                FieldError.forbidden(
                    "metadata.finalizers",
                    "no new finalizers can be added if the object is being deleted, "
                    f"found new finalizers {sorted(added)!r}",
                )
            )
    return errs
