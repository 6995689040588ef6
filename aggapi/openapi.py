"""OpenAPI v2 and v3 documents built from `ResourceDef`s, shaped like kube's CRD builder output.

v2 (`/openapi/v2`) is what kube-aggregator merges into the cluster's swagger; v3 (`/openapi/v3`
index plus one document per group version) is what `kubectl explain` reads. Pure functions.
"""

from __future__ import annotations

import copy
import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from aggapi import openapi_meta as meta
from aggapi.discovery import (
    canonical_json,
    defs_in,
    served_group_versions,
    subresource_kind,
    subresource_verbs,
)
from aggapi.registry.resource import ResourceDef

JSON, YAML = "application/json", "application/yaml"
WATCH_JSON = "application/json;stream=watch"
PATCH_TYPES = ["application/json-patch+json", "application/merge-patch+json", "application/apply-patch+yaml"]

# OpenAPI 2.0 has no equivalent for these; kube's CRD builder drops them from v2 too.
_V2_UNSUPPORTED = frozenset({"nullable", "oneOf", "anyOf", "allOf", "not", "writeOnly", "deprecated"})

# fmt: off
_WATCH_PARAMS = ("allowWatchBookmarks", "sendInitialEvents", "watch")
_LIST = ("allowWatchBookmarks", "continue", "fieldSelector", "labelSelector", "limit", "resourceVersion",
         "resourceVersionMatch", "sendInitialEvents", "timeoutSeconds", "watch")
_DELETE = ("dryRun", "gracePeriodSeconds", "orphanDependents", "propagationPolicy")
_DELETECOLLECTION = ("continue", "dryRun", "fieldSelector", "gracePeriodSeconds", "labelSelector", "limit",
                     "orphanDependents", "propagationPolicy", "resourceVersion", "resourceVersionMatch",
                     "timeoutSeconds")
_WRITE = ("dryRun", "fieldManager", "fieldValidation")
# fmt: on


@dataclass(frozen=True, slots=True)
class _OpSpec:
    """One operation kube installs for a verb (registerResourceHandlers, condensed)."""

    verb: str  # discovery verb that enables it
    method: str  # HTTP method, as the OpenAPI path-item key
    action: str  # x-kubernetes-action
    op_verb: str  # operationId prefix
    desc: str  # {kind} and {sub} are filled in
    query: tuple[str, ...]
    body: str  # "" (none) | "self" | "patch" | "delete"
    codes: tuple[str, ...]
    returns: str  # "self" | "list" | "status"


# fmt: off
_COLLECTION_OPS = (
    _OpSpec("list", "get", "list", "list", "list or watch objects of kind {kind}", _LIST, "", ("200",),
            "list"),
    _OpSpec("create", "post", "post", "create", "create a {kind}", _WRITE, "self", ("200", "201", "202"),
            "self"),
    _OpSpec("deletecollection", "delete", "deletecollection", "deleteCollection",
            "delete collection of {kind}", _DELETECOLLECTION, "delete", ("200",), "status"),
)
# The first four serve the object itself; subresources may use all five.
_ITEM_OPS = (
    _OpSpec("get", "get", "get", "read", "read {sub}the specified {kind}", (), "", ("200",), "self"),
    _OpSpec("update", "put", "put", "replace", "replace {sub}the specified {kind}", _WRITE, "self",
            ("200", "201"), "self"),
    _OpSpec("patch", "patch", "patch", "patch", "partially update {sub}the specified {kind}",
            (*_WRITE, "force"), "patch", ("200", "201"), "self"),
    _OpSpec("delete", "delete", "delete", "delete", "delete {sub}a {kind}", _DELETE, "delete", ("200", "202"),
            "status"),
    _OpSpec("create", "post", "post", "create", "create {sub}of a {kind}", _WRITE, "self",
            ("200", "201", "202"), "self"),
)
_CONNECT_METHODS = {"get": ("get", "head", "options"), "create": ("post",), "update": ("put",),
                    "patch": ("patch",), "delete": ("delete",)}
# fmt: on
_CODE_DESC = {"200": "OK", "201": "Created", "202": "Accepted"}


def model_name(group: str, version: str, kind: str) -> str:
    """kube's reverse-domain name: (edge.aggapi.io, v1alpha1, NodePool) → io.aggapi.edge.v1alpha1.NodePool."""
    prefix = ".".join(reversed(group.split("."))) if group else "io.k8s.api.core"
    return f"{prefix}.{version}.{kind}"


def _gvk(group: str, version: str, kind: str) -> dict[str, str]:
    return {"group": group, "version": version, "kind": kind}


def _to_v2(s: Any) -> Any:
    """Drop what OpenAPI v2 cannot say, with kube's fallbacks for nullable and preserve-unknown-fields."""
    if not isinstance(s, Mapping):
        return s
    out = {k: v for k, v in s.items() if k not in _V2_UNSUPPORTED}
    if isinstance(out.get("properties"), Mapping):
        out["properties"] = {k: _to_v2(v) for k, v in out["properties"].items()}
    if isinstance(out.get("items"), Mapping):
        out["items"] = _to_v2(out["items"])
    if isinstance(out.get("additionalProperties"), Mapping):
        out["additionalProperties"] = _to_v2(out["additionalProperties"])
    nullable = s.get("nullable") is True
    preserve = s.get("x-kubernetes-preserve-unknown-fields") is True
    if nullable or preserve:  # v2 clients mis-validate untyped values that still list fields
        out.pop("items", None)
        out.pop("properties", None)
    typ = out.get("type")
    if nullable or (preserve and typ == "object") or (typ == "array" and "items" not in out):
        out.pop("type", None)
    # A nullable field can be null, which v2 can only express by not requiring it.
    props = s.get("properties")
    props = props if isinstance(props, Mapping) else {}
    nullable_props = {k for k, v in props.items() if isinstance(v, Mapping) and v.get("nullable") is True}
    addl = s.get("additionalProperties")
    if isinstance(addl, Mapping) and addl.get("nullable") is True:
        out.pop("required", None)
    elif nullable_props and isinstance(out.get("required"), list):
        out["required"] = [r for r in out["required"] if r not in nullable_props]
        if not out["required"]:
            del out["required"]
    return out


def kind_schema(d: ResourceDef, *, v3: bool) -> dict[str, Any]:
    """The kind's model: its own schema with metadata → ObjectMeta and the GVK extension."""
    schema: dict[str, Any] = copy.deepcopy(dict(d.schema))
    if not v3:
        if schema.get("x-kubernetes-preserve-unknown-fields") is True:
            # kube publishes such kinds to v2 as a bare object: listed fields would make v2 clients
            # reject everything else.
            schema = {"type": "object"}
        else:
            schema = _to_v2(schema)
    props = schema.get("properties")
    if isinstance(props, dict):
        props["metadata"] = meta.ref_field(meta.OBJECT_META, meta.OBJECT_META_DESC, v3=v3)
        props.setdefault("apiVersion", {"type": "string", "description": meta.API_VERSION_DESC})
        props.setdefault("kind", {"type": "string", "description": meta.KIND_DESC})
    if d.description and not schema.get("description"):
        schema["description"] = d.description
    schema["x-kubernetes-group-version-kind"] = [_gvk(d.group, d.version, d.kind)]
    return schema


def list_schema(d: ResourceDef, *, v3: bool) -> dict[str, Any]:
    return {
        "type": "object",
        "description": f"{d.list_kind} is a list of {d.kind}",
        "required": ["items"],
        "properties": {
            "apiVersion": {"type": "string", "description": meta.API_VERSION_DESC},
            "kind": {"type": "string", "description": meta.KIND_DESC},
            "items": {
                "type": "array",
                "description": f"List of {d.resource}.",
                "items": meta.ref(model_name(d.group, d.version, d.kind), v3=v3),
            },
            "metadata": meta.ref_field(meta.LIST_META, meta.LIST_META_DESC, v3=v3),
        },
        "x-kubernetes-group-version-kind": [_gvk(d.group, d.version, d.list_kind)],
    }


class _Builder:
    """Paths and models of one document (v2 or v3)."""

    def __init__(self, *, v3: bool) -> None:
        self.v3 = v3
        self.paths: dict[str, dict[str, Any]] = {}
        self.models: dict[str, dict[str, Any]] = {}

    def ref(self, name: str) -> dict[str, Any]:
        return meta.ref(name, v3=self.v3)

    def param(self, name: str, where: str = "query") -> dict[str, Any]:
        typ, desc = ("string", meta.PATH_PARAMS[name]) if where == "path" else meta.QUERY_PARAMS[name]
        p: dict[str, Any] = {"name": name, "in": where, "description": desc}
        if where == "path":
            p["required"] = True
        if self.v3:
            p["schema"] = {"type": typ}
        else:
            p["type"] = typ
        return p

    def op(
        self,
        d: ResourceDef,
        *,
        op_id: str,
        desc: str,
        action: str,
        gvk: dict[str, str],
        query: Sequence[str],
        body: dict[str, Any] | None,
        consumes: Sequence[str],
        produces: Sequence[str],
        responses: Mapping[str, dict[str, Any]],
    ) -> dict[str, Any]:
        out: dict[str, Any] = {"description": desc, "operationId": op_id, "tags": [_tag(d)]}
        params = [self.param(q) for q in query if q not in _WATCH_PARAMS or "watch" in d.verbs]
        resp: dict[str, Any] = {}
        for code, schema in responses.items():
            payload = {"content": _content(produces, schema)} if self.v3 else {"schema": schema}
            resp[code] = {"description": _CODE_DESC[code], **payload}
        resp["401"] = {"description": "Unauthorized"}
        if self.v3 and body is not None:
            out["requestBody"] = {"content": _content(consumes, body), "required": True}
        if not self.v3:
            if body is not None:
                params.insert(0, {"name": "body", "in": "body", "required": True, "schema": body})
            out.update(consumes=list(consumes or ["*/*"]), produces=list(produces), schemes=["https"])
        if params:
            out["parameters"] = params
        out["responses"] = resp
        out["x-kubernetes-action"] = action
        out["x-kubernetes-group-version-kind"] = gvk
        return out

    def add_path(self, path: str, path_params: Sequence[str], ops: dict[str, dict[str, Any]]) -> None:
        if ops:
            params = [self.param(p, "path") for p in path_params] + [self.param("pretty")]
            self.paths[path] = {**ops, "parameters": params}

    def ops(
        self,
        d: ResourceDef,
        specs: Sequence[_OpSpec],
        verbs: Sequence[str],
        *,
        stem: str,
        sub: str,
        gvk: dict[str, str],
        returns: dict[str, Any],
    ) -> dict[str, dict[str, Any]]:
        refs = {
            "self": returns,
            "list": self.ref(model_name(d.group, d.version, d.list_kind)),
            "status": self.ref(meta.STATUS),
            "patch": self.ref(meta.PATCH),
            "delete": self.ref(meta.DELETE_OPTIONS),
        }
        out: dict[str, dict[str, Any]] = {}
        for s in specs:
            if s.verb not in verbs or s.method in out:
                continue
            produces = (JSON, YAML, WATCH_JSON) if s.action == "list" and "watch" in verbs else (JSON, YAML)
            consumes = PATCH_TYPES if s.body == "patch" else (JSON, YAML) if s.body else ()
            title = sub[:1].upper() + sub[1:]
            out[s.method] = self.op(
                d,
                op_id=f"{s.op_verb}{stem}{title}",
                action=s.action,
                gvk=gvk,
                query=s.query,
                desc=s.desc.format(kind=d.kind, sub=f"{sub} of " if sub else ""),
                body=refs[s.body] if s.body else None,
                consumes=consumes,
                produces=produces,
                responses={c: refs[s.returns] for c in s.codes},
            )
        return out

    def add_resource(self, d: ResourceDef) -> None:
        own = model_name(d.group, d.version, d.kind)
        self.models[own] = kind_schema(d, v3=self.v3)
        self.models[model_name(d.group, d.version, d.list_kind)] = list_schema(d, v3=self.v3)
        base = f"/apis/{d.group}/{d.version}" if d.group else f"/api/{d.version}"
        root = f"{base}/namespaces/{{namespace}}/{d.resource}" if d.namespaced else f"{base}/{d.resource}"
        scope = ["namespace"] if d.namespaced else []
        tag = _tag(d)[0].upper() + _tag(d)[1:]
        stem = tag + ("Namespaced" if d.namespaced else "") + d.kind  # as in listEdgeAggapiIoV1alpha1NodePool
        kw: dict[str, Any] = {"sub": "", "gvk": _gvk(d.group, d.version, d.kind), "returns": self.ref(own)}
        if d.namespaced:
            every = self.ops(d, _COLLECTION_OPS[:1], d.verbs, stem=tag + d.kind, **kw)
            if every:
                every["get"]["operationId"] += "ForAllNamespaces"
            self.add_path(f"{base}/{d.resource}", [], every)
        self.add_path(root, scope, self.ops(d, _COLLECTION_OPS, d.verbs, stem=stem, **kw))
        item_ops = self.ops(d, _ITEM_OPS[:4], d.verbs, stem=stem, **kw)
        self.add_path(f"{root}/{{name}}", [*scope, "name"], item_ops)
        for sub in d.subresources:
            path, sgvk, verbs = f"{root}/{{name}}/{sub}", subresource_kind(d, sub), subresource_verbs(d, sub)
            if sub == "proxy":
                self.add_connect(d, path, [*scope, "name"], verbs, stem=stem, gvk=sgvk)
                continue
            returns = self.subresource_model(d, sub, sgvk)
            ops = self.ops(d, _ITEM_OPS, verbs, stem=stem, sub=sub, gvk=sgvk, returns=returns)
            self.add_path(path, [*scope, "name"], ops)

    def add_connect(
        self,
        d: ResourceDef,
        path: str,
        path_params: list[str],
        verbs: Sequence[str],
        *,
        stem: str,
        gvk: dict[str, str],
    ) -> None:
        """kube's shape for proxy subresources: connect operations at …/proxy and …/proxy/{path}."""
        plain: dict[str, dict[str, Any]] = {}
        with_path: dict[str, dict[str, Any]] = {}
        for method in [m for v in verbs for m in _CONNECT_METHODS.get(v, ())]:
            op_id = f"connect{method.capitalize()}{stem}Proxy"
            kw: dict[str, Any] = {
                "desc": f"connect {method.upper()} requests to proxy of {d.kind}",
                "action": "connect",
                "gvk": gvk,
                "body": None,
                "consumes": ("*/*",),
                "produces": ("*/*",),
                "responses": {"200": {"type": "string"}},
            }
            plain[method] = self.op(d, op_id=op_id, query=("path",), **kw)
            with_path[method] = self.op(d, op_id=op_id + "WithPath", query=(), **kw)
        self.add_path(path, path_params, plain)
        self.add_path(path + "/{path}", [*path_params, "path"], with_path)

    def subresource_model(self, d: ResourceDef, sub: str, sgvk: dict[str, str]) -> dict[str, Any]:
        if sgvk == _gvk(d.group, d.version, d.kind):
            return self.ref(model_name(d.group, d.version, d.kind))
        if sgvk == _gvk("autoscaling", "v1", "Scale"):
            self.models.update(meta.scale_definitions(v3=self.v3))
            return self.ref(meta.SCALE)
        extra_schema = (d.extra.get("subresource_schemas") or {}).get(sub)
        if isinstance(extra_schema, Mapping):
            name = model_name(sgvk["group"], sgvk["version"], sgvk["kind"])
            model = copy.deepcopy(dict(extra_schema)) if self.v3 else _to_v2(extra_schema)
            self.models[name] = {**model, "x-kubernetes-group-version-kind": [sgvk]}
            return self.ref(name)
        return {"type": "object"}  # served by a custom handler that publishes no schema


def _content(types: Sequence[str], schema: dict[str, Any]) -> dict[str, Any]:
    return {t: {"schema": schema} for t in types}


def _tag(d: ResourceDef) -> str:
    """kube's tag/operation-id stem: edge.aggapi.io/v1alpha1 → edgeAggapiIoV1alpha1."""
    parts = [p for p in d.group.replace("-", ".").split(".") if p] + [d.version]
    return parts[0] + "".join(p[0].upper() + p[1:] for p in parts[1:])


_SECURITY = {"BearerToken": {"type": "apiKey", "name": "authorization", "in": "header"}}


def _build(defs: Sequence[ResourceDef], gvs: list[tuple[str, str]], *, v3: bool) -> _Builder:
    b = _Builder(v3=v3)
    b.models.update(meta.meta_definitions(v3=v3, group_versions=gvs))
    for d in defs:
        b.add_resource(d)
    return b


def openapi_v2(
    defs: Sequence[ResourceDef], *, title: str = "aggapi", version: str = "v0.1.0"
) -> dict[str, Any]:
    """GET /openapi/v2 (JSON; kube-aggregator downloads it with Accept: application/json)."""
    b = _build(defs, served_group_versions(defs), v3=False)
    return {
        "swagger": "2.0",
        "info": {"title": title, "version": version},
        "paths": dict(sorted(b.paths.items())),
        "definitions": dict(sorted(b.models.items())),
        "securityDefinitions": _SECURITY,
        "security": [{"BearerToken": []}],
    }


def openapi_v3_group_version(
    group: str,
    version: str,
    defs: Sequence[ResourceDef],
    *,
    title: str = "aggapi",
    info_version: str = "v0.1.0",
) -> dict[str, Any]:
    """GET /openapi/v3/apis/<group>/<version>. Raises KeyError when nothing is served there."""
    served = defs_in(group, version, defs)
    if not served:
        raise KeyError(f"{group}/{version}")
    b = _build(served, [(group, version)], v3=True)
    return {
        "openapi": "3.0.0",
        "info": {"title": title, "version": info_version},
        "paths": dict(sorted(b.paths.items())),
        "components": {"schemas": dict(sorted(b.models.items())), "securitySchemes": _SECURITY},
    }


def openapi_v3_hash(doc: dict[str, Any]) -> str:
    """Content hash used in `?hash=` and as ETag: upper-case hex SHA-512, kube-openapi's format."""
    return hashlib.sha512(canonical_json(doc)).hexdigest().upper()


def openapi_v3_index(
    defs: Sequence[ResourceDef], *, title: str = "aggapi", info_version: str = "v0.1.0"
) -> dict[str, Any]:
    """GET /openapi/v3: one entry per served group version, URL pinned to the document's hash
    (pass the same title/info_version as to `openapi_v3_group_version`, or the hashes differ)."""
    paths: dict[str, Any] = {}
    for group, version in served_group_versions(defs):
        doc = openapi_v3_group_version(group, version, defs, title=title, info_version=info_version)
        key = f"apis/{group}/{version}" if group else f"api/{version}"
        paths[key] = {"serverRelativeURL": f"/openapi/v3/{key}?hash={openapi_v3_hash(doc)}"}
    return {"paths": paths}
