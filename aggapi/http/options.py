"""Query parameters of list/watch/delete requests, validated as kube-apiserver validates them."""

from __future__ import annotations

import json
from typing import Any

import orjson
from multidict import MultiMapping

from aggapi.machinery import apierrors
from aggapi.machinery.fields import parse_field_selector
from aggapi.machinery.labels import SelectorError, parse_label_selector
from aggapi.storage.interface import ListOptions, Preconditions, Predicate, WatchOptions

SELECTABLE = ("metadata.name", "metadata.namespace")


def _quote(value: object) -> str:
    return json.dumps(value) if isinstance(value, str | list) else str(value)


def _invalid(field: str, value: object, msg: str) -> apierrors.StatusError:
    cause = apierrors.Cause("FieldValueInvalid", f"Invalid value: {_quote(value)}: {msg}", field)
    return apierrors.invalid("meta.k8s.io", "ListOptions", "", [cause])


def _forbidden(field: str, msg: str) -> apierrors.Cause:
    return apierrors.Cause("FieldValueForbidden", f"Forbidden: {msg}", field)


def _not_supported(field: str, value: object, allowed: tuple[str, ...]) -> apierrors.Cause:
    vals = ", ".join(f'"{a}"' for a in allowed)
    return apierrors.Cause(
        "FieldValueNotSupported", f"Unsupported value: {_quote(value)}: supported values: {vals}", field
    )


def _check(kind: str, causes: list[apierrors.Cause]) -> None:
    """kube validates ListOptions/CreateOptions/... and answers NewInvalid(meta.k8s.io <kind>): a 422."""
    if causes:
        raise apierrors.invalid("meta.k8s.io", kind, "", causes)


def predicate(query: dict[str, str], *, namespaced: bool, selectable: tuple[str, ...] = ()) -> Predicate:
    try:
        label = parse_label_selector(query.get("labelSelector", ""))
        field = parse_field_selector(query.get("fieldSelector", ""))
    except (SelectorError, ValueError) as exc:
        raise apierrors.bad_request(f"unable to parse requirement: {exc}") from None
    allowed = (*(SELECTABLE if namespaced else SELECTABLE[:1]), *selectable)
    for f in field.fields():
        if f not in allowed:
            raise apierrors.bad_request(f'"{f}" is not a known field selector: only "{", ".join(allowed)}"')
    used = tuple(f for f in selectable if f in field.fields())
    return Predicate(label, field, used)


def _int(query: dict[str, str], name: str) -> int:
    raw = query.get(name, "")
    if raw == "":
        return 0
    try:
        val = int(raw)
    except ValueError:
        # A parameter that does not decode is a 400 in kube (ParameterCodec.DecodeParameters).
        raise apierrors.bad_request(f'{name}: invalid value "{raw}": must be an integer') from None
    if val < 0:  # kube treats a negative limit as "no limit"; we refuse it (a client bug either way)
        raise _invalid(name, val, "must be greater than or equal to 0")
    return val


def _rv(query: dict[str, str]) -> str:
    rv = query.get("resourceVersion", "")
    if rv not in ("", "0"):
        try:
            if int(rv) <= 0:
                raise ValueError
        except ValueError:
            raise apierrors.bad_request(f'invalid resource version "{rv}"') from None
    return rv


def list_options(query: dict[str, str], *, namespaced: bool, selectable: tuple[str, ...] = ()) -> ListOptions:
    """ListOptions as kube's ValidateListOptions (422) and the storage layer (400) check them."""
    rv, match = _rv(query), query.get("resourceVersionMatch", "")
    token = query.get("continue", "")
    causes: list[apierrors.Cause] = []
    if match:
        if rv == "":
            causes.append(
                _forbidden(
                    "resourceVersionMatch",
                    "resourceVersionMatch is forbidden unless resourceVersion is provided",
                )
            )
        if token:
            causes.append(
                _forbidden(
                    "resourceVersionMatch", "resourceVersionMatch is forbidden when continue is provided"
                )
            )
        if match not in ("Exact", "NotOlderThan"):
            causes.append(_not_supported("resourceVersionMatch", match, ("Exact", "NotOlderThan", "")))
        if match == "Exact" and rv == "0":
            causes.append(
                _forbidden(
                    "resourceVersionMatch",
                    'resourceVersionMatch "exact" is forbidden for resourceVersion "0"',
                )
            )
    if "sendInitialEvents" in query:
        causes.append(_forbidden("sendInitialEvents", "sendInitialEvents is forbidden for list"))
    _check("ListOptions", causes)
    if token and rv not in ("", "0"):
        raise apierrors.bad_request("specifying resource version is not allowed when using continue")
    return ListOptions(
        rv, match, _int(query, "limit"), token, predicate(query, namespaced=namespaced, selectable=selectable)
    )


def _bool(query: dict[str, str], name: str) -> bool | None:
    """Go's strconv.ParseBool, which kube's query-parameter decoding uses."""
    raw = query.get(name, "")
    if raw == "":
        return None
    if raw in ("1", "t", "T", "true", "TRUE", "True"):
        return True
    if raw in ("0", "f", "F", "false", "FALSE", "False"):
        return False
    raise apierrors.bad_request(f'{name}: invalid value "{raw}": must be a boolean')


def watch_options(
    query: dict[str, str], *, namespaced: bool, selectable: tuple[str, ...] = ()
) -> tuple[WatchOptions, int]:
    """WatchOptions as kube's validateWatchOptions checks them."""
    sie = _bool(query, "sendInitialEvents")
    bookmarks = bool(_bool(query, "allowWatchBookmarks"))
    rv, match = _rv(query), query.get("resourceVersionMatch", "")
    causes: list[apierrors.Cause] = []
    if sie is not None:
        if match != "NotOlderThan":
            causes.append(
                _forbidden(
                    "resourceVersionMatch",
                    "sendInitialEvents requires setting resourceVersionMatch to NotOlderThan",
                )
            )
        if sie and not bookmarks:
            causes.append(
                _forbidden("allowWatchBookmarks", "sendInitialEvents requires allowWatchBookmarks=true")
            )
    if match:
        if sie is None:
            causes.append(
                _forbidden(
                    "resourceVersionMatch",
                    "resourceVersionMatch is forbidden for watch unless sendInitialEvents is provided",
                )
            )
        if match != "NotOlderThan":
            causes.append(_not_supported("resourceVersionMatch", match, ("NotOlderThan",)))
    _check("ListOptions", causes)
    opts = WatchOptions(
        resource_version=rv,
        predicate=predicate(query, namespaced=namespaced, selectable=selectable),
        allow_bookmarks=bookmarks,
        send_initial_events=sie,
    )
    return opts, _int(query, "timeoutSeconds")


FIELD_VALIDATION = ("", "Ignore", "Strict", "Warn")
FIELD_MANAGER_MAX = 128


def _dry_run_causes(values: list[str]) -> list[apierrors.Cause]:
    if all(v == "All" for v in values):
        return []
    return [_not_supported("dryRun", values, ("All",))]


def write_options(query: MultiMapping[str], kind: str) -> tuple[bool, str]:
    """(dryRun, fieldValidation) of a create/update/patch, validated as kube's Validate<kind> does: a bad
    value is a 422 Invalid for meta.k8s.io <kind> (CreateOptions, UpdateOptions, PatchOptions)."""
    dry = list(query.getall("dryRun", []))
    mode = query.get("fieldValidation", "")
    manager = query.get("fieldManager", "")
    causes = _dry_run_causes(dry)
    if mode not in FIELD_VALIDATION:
        causes.append(_not_supported("fieldValidation", mode, FIELD_VALIDATION))
    if len(manager) > FIELD_MANAGER_MAX:
        causes.append(
            apierrors.Cause(
                "FieldValueTooLong",
                f"Too long: may not be more than {FIELD_MANAGER_MAX} bytes",
                "fieldManager",
            )
        )
    _check(kind, causes)
    return bool(dry), mode or "Warn"  # Warn is kube's default when the client does not say


def delete_options(query: MultiMapping[str], body: Any) -> tuple[Preconditions | None, str, bool]:
    """(preconditions, propagationPolicy, dryRun) from DeleteOptions in the body and/or the query,
    validated as kube's ValidateDeleteOptions does (422 Invalid for meta.k8s.io DeleteOptions)."""
    opts: dict[str, Any] = {}
    if body:
        if not isinstance(body, dict) or body.get("kind", "DeleteOptions") != "DeleteOptions":
            raise apierrors.bad_request("the body of a delete request must be DeleteOptions")
        opts = body
    raw_policy = opts.get("propagationPolicy") or query.get("propagationPolicy", "")
    policy = str(raw_policy)
    dry = list(query.getall("dryRun", []))
    body_dry = opts.get("dryRun") or []
    if not isinstance(body_dry, list):
        raise apierrors.bad_request("dryRun must be a list of strings")
    dry += [str(v) for v in body_dry]
    causes = _dry_run_causes(dry)
    if policy not in ("", "Orphan", "Background", "Foreground"):
        causes.append(
            _not_supported("propagationPolicy", policy, ("Foreground", "Background", "Orphan", "nil"))
        )
    orphan = opts.get("orphanDependents", query.get("orphanDependents"))
    if orphan is not None and policy:
        causes.append(
            apierrors.Cause(
                "FieldValueInvalid",
                f"Invalid value: {_quote(policy)}: "
                "orphanDependents and deletionPropagation cannot be both set",
                "propagationPolicy",
            )
        )
    _check("DeleteOptions", causes)
    if orphan in (True, "true", "True", "1") and not policy:
        policy = "Orphan"
    pre = opts.get("preconditions") or {}
    if not isinstance(pre, dict):
        raise apierrors.bad_request("preconditions must be an object")
    preconditions = None
    if pre.get("uid") or pre.get("resourceVersion"):
        preconditions = Preconditions(pre.get("uid"), pre.get("resourceVersion"))
    return preconditions, policy, bool(dry)


def encode(obj: Any) -> bytes:
    return orjson.dumps(obj)
