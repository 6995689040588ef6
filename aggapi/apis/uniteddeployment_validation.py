"""Validation of a UnitedDeployment, as 422 causes that name the field: the selector, the template (what
kube-apiserver would refuse in every generated workload: a selector not matching the pod labels, a
container without a name or image), the targets and the tweaks (each tweak is tried on the template, so
a patch whose path does not exist is refused when the UnitedDeployment is written, not later per pool)."""

from __future__ import annotations

from typing import Any

from aggapi.apis.uniteddeployment_render import (
    NODEPOOL_LABEL,
    POOL_NAME_LABEL,
    TEMPLATE_FIELDS,
    RenderError,
    apply_tweak,
    base_object,
    pod_containers,
    template_of,
)
from aggapi.machinery.gofmt import invalid_body
from aggapi.machinery.labels import SelectorError, selector_from_object
from aggapi.machinery.validation import is_dns1123_label, validate_annotations, validate_labels
from aggapi.registry.resource import FieldError, Obj

PATCH_OPS = ["add", "remove", "replace", "move", "copy", "test"]


def _invalid(path: str, value: Any, detail: str) -> FieldError:
    """FieldValueInvalid with the value shown as kube shows it (Go quoting, JSON for maps and lists)."""
    return FieldError(path, "FieldValueInvalid", invalid_body(value, detail))


def _int_errors(value: Any, path: str) -> list[FieldError]:
    if value is None:
        return []
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        return [_invalid(path, value, "must be greater than or equal to 0")]
    return []


def _selector(value: Any, path: str, *, non_empty: bool) -> list[FieldError]:
    if not isinstance(value, dict):
        return [_invalid(path, value, "must be a label selector")]
    try:
        sel = selector_from_object(value)
    except SelectorError as exc:
        return [_invalid(path, value, str(exc))]
    if non_empty and sel.empty():
        return [_invalid(path, value, "empty selector is invalid for deployment")]
    return []


def _meta(meta: Any, path: str) -> list[FieldError]:
    if meta is None:
        return []
    if not isinstance(meta, dict):
        return [_invalid(path, meta, "must be an object")]
    labels = validate_labels(meta.get("labels"), f"{path}.labels")
    errs = [FieldError(p, "FieldValueInvalid", m) for p, m in labels]
    errs += [
        FieldError(p, "FieldValueInvalid", m)
        for p, m in validate_annotations(meta.get("annotations"), f"{path}.annotations")
    ]
    return errs


def _containers(pod: dict[str, Any], path: str) -> list[FieldError]:
    errs: list[FieldError] = []
    containers = pod.get("containers")
    if not isinstance(containers, list) or not containers:
        return [FieldError.required(f"{path}.containers")]
    seen: set[str] = set()
    for field in ("initContainers", "containers"):
        for i, c in enumerate(pod.get(field) or []):
            at = f"{path}.{field}[{i}]"
            if not isinstance(c, dict):
                errs.append(_invalid(at, c, "must be an object"))
                continue
            name = c.get("name")
            if not name:
                errs.append(FieldError.required(f"{at}.name"))
            elif not isinstance(name, str):
                errs.append(_invalid(f"{at}.name", name, "must be a string"))
            else:
                errs += [_invalid(f"{at}.name", name, m) for m in is_dns1123_label(name)]
                if name in seen:
                    errs.append(FieldError(f"{at}.name", "FieldValueDuplicate", f'Duplicate value: "{name}"'))
                seen.add(name)
            if field == "containers" and not c.get("image"):
                errs.append(FieldError.required(f"{at}.image"))
    return errs


def _template(spec: dict[str, Any]) -> list[FieldError]:
    wt = spec.get("workloadTemplate")
    path = "spec.workloadTemplate"
    if not isinstance(wt, dict):
        return [FieldError.required(path)]
    given = [f for f in TEMPLATE_FIELDS.values() if wt.get(f) is not None]
    if not given:
        return [FieldError.required(path, "one of deploymentTemplate or statefulSetTemplate")]
    if len(given) > 1:
        return [FieldError.forbidden(path, "deploymentTemplate and statefulSetTemplate are exclusive")]
    path = f"{path}.{given[0]}"
    _, tpl = template_of(spec)
    errs = _meta(tpl.get("metadata"), f"{path}.metadata")
    wspec = tpl.get("spec")
    if not isinstance(wspec, dict):
        return [*errs, FieldError.required(f"{path}.spec")]
    errs += _int_errors(wspec.get("replicas"), f"{path}.spec.replicas")
    if wspec.get("selector") is not None and wspec.get("selector") != spec.get("selector"):
        errs.append(
            _invalid(
                f"{path}.spec.selector", wspec.get("selector"), "must be left out or equal spec.selector"
            )
        )
    template = wspec.get("template")
    if not isinstance(template, dict):
        return [*errs, FieldError.required(f"{path}.spec.template")]
    tmeta = template.get("metadata") or {}
    errs += _meta(tmeta, f"{path}.spec.template.metadata")
    labels = tmeta.get("labels") if isinstance(tmeta, dict) else None
    selector = spec.get("selector")
    if isinstance(selector, dict):
        try:
            sel = selector_from_object(selector)
        except SelectorError:
            sel = None  # reported on spec.selector
        if sel is not None and not (isinstance(labels, dict) and sel.matches(labels)):
            errs.append(
                _invalid(
                    f"{path}.spec.template.metadata.labels",
                    labels,
                    "`selector` does not match template `labels`",
                )
            )
    pod = template.get("spec")
    if not isinstance(pod, dict):
        return [*errs, FieldError.required(f"{path}.spec.template.spec")]
    errs += _containers(pod, f"{path}.spec.template.spec")
    node_selector = pod.get("nodeSelector")
    if isinstance(node_selector, dict) and NODEPOOL_LABEL in node_selector:
        errs.append(
            FieldError.forbidden(
                f"{path}.spec.template.spec.nodeSelector",
                f"{NODEPOOL_LABEL} is set per pool by the controller",
            )
        )
    return errs


def _pool_names(value: Any, path: str) -> list[FieldError]:
    if value is None:
        return []
    if not isinstance(value, list):
        return [_invalid(path, value, "must be a list of pool names")]
    errs: list[FieldError] = []
    for i, name in enumerate(value):
        if not isinstance(name, str):
            errs.append(_invalid(f"{path}[{i}]", name, "must be a string"))
            continue
        errs += [_invalid(f"{path}[{i}]", name, m) for m in is_dns1123_label(name)]
        if name in value[:i]:
            errs.append(FieldError(f"{path}[{i}]", "FieldValueDuplicate", f'Duplicate value: "{name}"'))
    return errs


def _patch_ops(ops: Any, path: str) -> list[FieldError]:
    if not isinstance(ops, list):
        return [_invalid(path, ops, "must be a list of JSON patch operations")]
    errs: list[FieldError] = []
    for j, op in enumerate(ops):
        at = f"{path}[{j}]"
        if not isinstance(op, dict):
            errs.append(_invalid(at, op, "must be an object"))
            continue
        if op.get("op") not in PATCH_OPS:
            errs.append(FieldError.not_supported(f"{at}.op", op.get("op"), PATCH_OPS))
        if not isinstance(op.get("path"), str):
            errs.append(FieldError.required(f"{at}.path"))
        if op.get("op") in ("add", "replace", "test") and "value" not in op:
            errs.append(FieldError.required(f"{at}.value"))
        if op.get("op") in ("move", "copy") and not isinstance(op.get("from"), str):
            errs.append(FieldError.required(f"{at}.from"))
    return errs


def _try_tweak(base: Obj, tweak: dict[str, Any], at: str) -> list[FieldError]:
    """The tweak alone on the template (combinations of tweaks are checked per pool by the controller)."""
    names = {c.get("name") for c in pod_containers(base)}
    errs = [
        _invalid(f"{at}.containerImages[{j}].name", ci.get("name"), "the template has no such container")
        for j, ci in enumerate(tweak.get("containerImages") or [])
        if isinstance(ci, dict) and ci.get("name") not in names
    ]
    if errs:
        return errs
    try:
        apply_tweak(base, tweak)
    except RenderError as exc:
        detail = str(exc).removeprefix("patches: ")
        return [_invalid(f"{at}.patches", tweak.get("patches"), detail)]
    return []


def _tweaks(spec: dict[str, Any], base: Obj | None) -> list[FieldError]:
    tweaks = spec.get("workloadTweaks")
    if tweaks is None:
        return []
    if not isinstance(tweaks, list):
        return [_invalid("spec.workloadTweaks", tweaks, "must be a list")]
    errs: list[FieldError] = []
    for i, tweak in enumerate(tweaks):
        at = f"spec.workloadTweaks[{i}]"
        if not isinstance(tweak, dict):
            errs.append(_invalid(at, tweak, "must be an object"))
            continue
        own: list[FieldError] = []
        if tweak.get("pools") is None and tweak.get("nodepoolSelector") is None:
            own.append(FieldError.required(f"{at}.pools", "name pools or set nodepoolSelector"))
        own += _pool_names(tweak.get("pools"), f"{at}.pools")
        if tweak.get("nodepoolSelector") is not None:
            own += _selector(tweak["nodepoolSelector"], f"{at}.nodepoolSelector", non_empty=False)
        own += _int_errors(tweak.get("replicas"), f"{at}.replicas")
        for j, ci in enumerate(tweak.get("containerImages") or []):
            if isinstance(ci, dict) and not ci.get("image"):
                own.append(FieldError.required(f"{at}.containerImages[{j}].image"))
        if tweak.get("patches") is not None:
            own += _patch_ops(tweak["patches"], f"{at}.patches")
        if not own and base is not None:
            own += _try_tweak(base, tweak, at)
        errs += own
    return errs


def validate_spec(spec: dict[str, Any]) -> list[FieldError]:
    errs: list[FieldError] = []
    selector = spec.get("selector")
    if selector is None:
        errs.append(FieldError.required("spec.selector"))
    else:
        errs += _selector(selector, "spec.selector", non_empty=True)
        if isinstance(selector, dict) and POOL_NAME_LABEL in (selector.get("matchLabels") or {}):
            errs.append(
                FieldError.forbidden("spec.selector", f"{POOL_NAME_LABEL} is set per pool by the controller")
            )
    errs += _template(spec)
    if spec.get("pools") is None and spec.get("nodepoolSelector") is None:
        errs.append(FieldError.required("spec.pools", "name pools or set nodepoolSelector"))
    errs += _pool_names(spec.get("pools"), "spec.pools")
    if spec.get("nodepoolSelector") is not None:
        errs += _selector(spec["nodepoolSelector"], "spec.nodepoolSelector", non_empty=False)
    errs += _int_errors(spec.get("revisionHistoryLimit"), "spec.revisionHistoryLimit")
    kind, tpl = template_of(spec)
    base = base_object({"spec": spec})[1] if kind and isinstance(tpl.get("spec"), dict) else None
    errs += _tweaks(spec, base)
    return errs


def validate_update(new: dict[str, Any], old: dict[str, Any]) -> list[FieldError]:
    errs: list[FieldError] = []
    if new.get("selector") != old.get("selector"):
        errs.append(FieldError.immutable("spec.selector", new.get("selector")))
    new_kind, old_kind = template_of(new)[0], template_of(old)[0]
    if new_kind and old_kind and new_kind != old_kind:
        errs.append(
            _invalid(
                "spec.workloadTemplate",
                new_kind,
                f"the workload kind cannot change from {old_kind}: create another UnitedDeployment",
            )
        )
    return errs


def validate_status(status: Any) -> list[FieldError]:
    if not isinstance(status, dict):
        return []
    errs: list[FieldError] = []
    for field in ("replicas", "readyReplicas", "updatedReplicas"):
        errs += _int_errors(status.get(field), f"status.{field}")
    return errs
