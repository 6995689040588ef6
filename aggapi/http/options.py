"""Query parameters of list/watch/delete requests, validated as kube-apiserver validates them."""

from __future__ import annotations

import json
from typing import Any

from aggapi.machinery import apierrors
from aggapi.machinery.fields import parse_field_selector
from aggapi.machinery.labels import SelectorError, parse_label_selector
from aggapi.storage.interface import ListOptions, Preconditions, Predicate, WatchOptions

SELECTABLE = ("metadata.name", "metadata.namespace")


def _invalid(field: str, value: object, msg: str) -> apierrors.StatusError:
    cause = apierrors.Cause("FieldValueInvalid", f"Invalid value: {value!r}: {msg}", field)
    return apierrors.invalid("meta.k8s.io", "ListOptions", "", [cause])


def predicate(query: dict[str, str], *, namespaced: bool) -> Predicate:
    try:
        label = parse_label_selector(query.get("labelSelector", ""))
        field = parse_field_selector(query.get("fieldSelector", ""))
    except (SelectorError, ValueError) as exc:
        raise apierrors.bad_request(f"unable to parse requirement: {exc}") from None
    allowed = SELECTABLE if namespaced else SELECTABLE[:1]
    for f in field.fields():
        if f not in allowed:
            raise apierrors.bad_request(f'"{f}" is not a known field selector: only "{", ".join(allowed)}"')
    return Predicate(label, field)


def _int(query: dict[str, str], name: str) -> int:
    raw = query.get(name, "")
    if raw == "":
        return 0
    try:
        val = int(raw)
    except ValueError:
        raise _invalid(name, raw, "must be an integer") from None
    if val < 0:
        raise _invalid(name, raw, "must be greater than or equal to 0")
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


def list_options(query: dict[str, str], *, namespaced: bool) -> ListOptions:
    rv, match = _rv(query), query.get("resourceVersionMatch", "")
    token = query.get("continue", "")
    if match not in ("", "NotOlderThan", "Exact"):
        raise _invalid("resourceVersionMatch", match, 'supported values: "Exact", "NotOlderThan"')
    if match and rv == "":
        raise _invalid(
            "resourceVersionMatch",
            match,
            "resourceVersionMatch is forbidden unless resourceVersion is provided",
        )
    if match == "Exact" and rv == "0":
        raise _invalid(
            "resourceVersionMatch", match, 'resourceVersionMatch "exact" is forbidden for resourceVersion "0"'
        )
    if token and (match or rv not in ("", "0")):
        raise _invalid("continue", token, "specifying resourceVersion is not allowed when using continue")
    return ListOptions(rv, match, _int(query, "limit"), token, predicate(query, namespaced=namespaced))


def watch_options(query: dict[str, str], *, namespaced: bool) -> tuple[WatchOptions, int]:
    sie_raw = query.get("sendInitialEvents", "")
    sie: bool | None = None if sie_raw == "" else sie_raw in ("true", "True", "1")
    rv = _rv(query)
    if sie is not None and query.get("resourceVersionMatch", "") != "NotOlderThan":
        raise _invalid(
            "resourceVersionMatch",
            query.get("resourceVersionMatch", ""),
            "sendInitialEvents requires setting resourceVersionMatch to NotOlderThan",
        )
    if sie and query.get("allowWatchBookmarks", "") not in ("true", "True", "1"):
        raise _invalid("allowWatchBookmarks", "", "sendInitialEvents requires allowWatchBookmarks=true")
    opts = WatchOptions(
        resource_version=rv,
        predicate=predicate(query, namespaced=namespaced),
        allow_bookmarks=query.get("allowWatchBookmarks", "") in ("true", "True", "1"),
        send_initial_events=sie,
    )
    return opts, _int(query, "timeoutSeconds")


def dry_run(query: dict[str, str]) -> bool:
    value = query.get("dryRun", "")
    if value not in ("", "All"):
        raise apierrors.bad_request(f'unsupported dryRun value "{value}": only "All" is supported')
    return value == "All"


def delete_options(query: dict[str, str], body: Any) -> tuple[Preconditions | None, str, bool]:
    """(preconditions, propagationPolicy, dryRun) from DeleteOptions in the body and/or the query."""
    opts: dict[str, Any] = {}
    if body:
        if not isinstance(body, dict) or body.get("kind", "DeleteOptions") != "DeleteOptions":
            raise apierrors.bad_request("the body of a delete request must be DeleteOptions")
        opts = body
    policy = str(opts.get("propagationPolicy") or query.get("propagationPolicy", ""))
    if policy not in ("", "Orphan", "Background", "Foreground"):
        raise apierrors.bad_request(f'unsupported propagationPolicy "{policy}"')
    if opts.get("orphanDependents") is True and not policy:
        policy = "Orphan"
    run = dry_run(query) or opts.get("dryRun") == ["All"]
    pre = opts.get("preconditions") or {}
    if not isinstance(pre, dict):
        raise apierrors.bad_request("preconditions must be an object")
    preconditions = None
    if pre.get("uid") or pre.get("resourceVersion"):
        preconditions = Preconditions(pre.get("uid"), pre.get("resourceVersion"))
    return preconditions, policy, run


def encode(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()
