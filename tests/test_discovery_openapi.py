"""Discovery and OpenAPI documents: their shapes, and what a real kubectl makes of them."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from aggapi import discovery, openapi
from aggapi.apis.nodepool import NODEPOOL
from aggapi.registry.resource import FieldError, Obj, ResourceDef

log = logging.getLogger(__name__)

GROUP, VERSION = "edge.aggapi.io", "v1alpha1"
META = "io.k8s.apimachinery.pkg.apis.meta.v1."


class _NoopStrategy:
    def prepare_for_create(self, obj: Obj) -> None:
        pass

    def prepare_for_update(self, new: Obj, old: Obj) -> None:
        pass

    def validate(self, obj: Obj) -> list[FieldError]:
        return []

    def validate_update(self, new: Obj, old: Obj) -> list[FieldError]:
        return []


GADGET = ResourceDef(
    group=GROUP,
    version=VERSION,
    resource="gadgets",
    kind="Gadget",
    singular="gadget",
    namespaced=True,
    schema={
        "type": "object",
        "properties": {
            "metadata": {"type": "object"},
            "spec": {
                "type": "object",
                "required": ["size", "note"],
                "properties": {
                    "size": {"type": "integer", "description": "How big."},
                    "note": {"type": "string", "nullable": True, "description": "Optional remark."},
                    "choice": {
                        "anyOf": [{"type": "integer"}, {"type": "string"}],
                        "x-kubernetes-int-or-string": True,
                    },
                    "blob": {
                        "type": "object",
                        "x-kubernetes-preserve-unknown-fields": True,
                        "properties": {"a": {}},
                    },
                },
            },
            "status": {"type": "object", "properties": {"ready": {"type": "boolean"}}},
        },
    },
    strategy=_NoopStrategy(),
    status_strategy=_NoopStrategy(),
    extra_subresources=("topology",),
    extra={"subresource_verbs": {"topology": ["get"]}, "subresource_kinds": {"topology": "GadgetTopology"}},
)

# Read-only, with the two subresources that have their own conventions.
WIDGET = ResourceDef(
    group="other.example.io",
    version="v1",
    resource="widgets",
    kind="Widget",
    singular="widget",
    namespaced=False,
    schema={"type": "object", "properties": {"metadata": {"type": "object"}}},
    strategy=_NoopStrategy(),
    extra_subresources=("scale", "proxy"),
    verbs=("get", "list"),
    extra={
        "subresource_verbs": {"proxy": ["get", "create"]},
        "subresource_kinds": {"proxy": "WidgetProxyOptions"},
    },
)

DEFS = [NODEPOOL, GADGET]


# ---------------------------------------------------------------- discovery documents


def test_api_group_list_and_group() -> None:
    doc = discovery.api_group_list([*DEFS, WIDGET])
    assert doc["kind"] == "APIGroupList" and doc["apiVersion"] == "v1"
    assert [g["name"] for g in doc["groups"]] == [GROUP, "other.example.io"]
    gv = {"groupVersion": f"{GROUP}/{VERSION}", "version": VERSION}
    assert doc["groups"][0] == {"name": GROUP, "versions": [gv], "preferredVersion": gv}
    assert discovery.api_group(GROUP, DEFS) == {"kind": "APIGroup", "apiVersion": "v1", **doc["groups"][0]}
    with pytest.raises(KeyError):
        discovery.api_group("nope.io", DEFS)


def test_preferred_version_follows_kube_priority() -> None:
    defs = [
        ResourceDef(**{**_fields(GADGET), "version": v})
        for v in ("v1alpha1", "v2beta1", "v1", "v1beta2", "foo")
    ]
    versions = [v["version"] for v in discovery.api_group(GROUP, defs)["versions"]]
    assert versions == ["v1", "v2beta1", "v1beta2", "v1alpha1", "foo"]
    assert discovery.api_group(GROUP, defs)["preferredVersion"]["version"] == "v1"


def _fields(d: ResourceDef) -> dict[str, Any]:
    return {f: getattr(d, f) for f in d.__dataclass_fields__}


def test_api_resource_list() -> None:
    doc = discovery.api_resource_list(GROUP, VERSION, DEFS)
    assert (doc["kind"], doc["apiVersion"], doc["groupVersion"]) == (
        "APIResourceList",
        "v1",
        f"{GROUP}/{VERSION}",
    )
    by_name = {r["name"]: r for r in doc["resources"]}
    assert list(by_name) == [
        "nodepools",
        "nodepools/status",
        "nodepools/topology",
        "gadgets",
        "gadgets/status",
        "gadgets/topology",
    ]
    np = by_name["nodepools"]
    assert np["singularName"] == "nodepool" and np["namespaced"] is False and np["kind"] == "NodePool"
    assert np["shortNames"] == ["np"] and np["categories"] == ["edge"]
    assert set(np["verbs"]) == {
        "create",
        "delete",
        "deletecollection",
        "get",
        "list",
        "patch",
        "update",
        "watch",
    }
    assert np["storageVersionHash"] == discovery.storage_version_hash(GROUP, VERSION, "NodePool")
    assert by_name["nodepools/status"] == {
        "name": "nodepools/status",
        "singularName": "",
        "namespaced": False,
        "kind": "NodePool",
        "verbs": ["get", "patch", "update"],
    }
    assert "shortNames" not in by_name["gadgets"] and by_name["gadgets"]["namespaced"] is True
    assert by_name["gadgets/topology"]["kind"] == "GadgetTopology"
    assert by_name["gadgets/topology"]["verbs"] == ["get"]
    widget = {
        r["name"]: r for r in discovery.api_resource_list("other.example.io", "v1", [WIDGET])["resources"]
    }
    assert widget["widgets/scale"]["group"] == "autoscaling" and widget["widgets/scale"]["kind"] == "Scale"
    assert widget["widgets/proxy"]["kind"] == "WidgetProxyOptions"
    assert widget["widgets/proxy"]["verbs"] == ["create", "get"]
    assert discovery.api_resource_list("nope.io", "v1", DEFS)["resources"] == []


def test_storage_version_hash_matches_kube() -> None:
    # Values kube-apiserver publishes for core/v1 pods and apps/v1 deployments.
    assert discovery.storage_version_hash("", "v1", "Pod") == "xPOwRZ+Yhw8="
    assert discovery.storage_version_hash("apps", "v1", "Deployment") == "8aSe+NMegvE="


def test_aggregated_discovery() -> None:
    doc = discovery.aggregated_discovery(DEFS)
    assert (doc["kind"], doc["apiVersion"]) == ("APIGroupDiscoveryList", "apidiscovery.k8s.io/v2")
    (item,) = doc["items"]
    assert item["metadata"] == {"name": GROUP}
    (ver,) = item["versions"]
    assert ver["version"] == VERSION and ver["freshness"] == "Current"
    res = {r["resource"]: r for r in ver["resources"]}
    np = res["nodepools"]
    assert np["responseKind"] == {"group": GROUP, "version": VERSION, "kind": "NodePool"}
    assert np["scope"] == "Cluster" and np["singularResource"] == "nodepool"
    assert np["shortNames"] == ["np"] and np["categories"] == ["edge"]
    assert np["subresources"] == [
        {"subresource": "status", "responseKind": np["responseKind"], "verbs": ["get", "patch", "update"]},
        {
            "subresource": "topology",
            "responseKind": {"group": GROUP, "version": VERSION, "kind": "NodePoolTopology"},
            "verbs": ["get"],
        },
    ]
    gadget = res["gadgets"]
    assert gadget["scope"] == "Namespaced"
    topo = gadget["subresources"][1]
    assert topo == {
        "subresource": "topology",
        "responseKind": {"group": GROUP, "version": VERSION, "kind": "GadgetTopology"},
        "verbs": ["get"],
    }
    beta = discovery.aggregated_discovery(DEFS, discovery_version="v2beta1")
    assert beta["apiVersion"] == "apidiscovery.k8s.io/v2beta1" and beta["items"] == doc["items"]
    with pytest.raises(ValueError):
        discovery.aggregated_discovery(DEFS, discovery_version="v3")


def test_discovery_etag() -> None:
    a = discovery.aggregated_discovery(DEFS)
    etag = discovery.discovery_etag(a)
    assert etag.startswith('"') and etag.endswith('"') and len(etag) == 66
    assert etag == discovery.discovery_etag(json.loads(json.dumps(a)))  # stable across copies
    assert etag != discovery.discovery_etag(discovery.aggregated_discovery([NODEPOOL]))


# ---------------------------------------------------------------- OpenAPI documents


def _refs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for k, v in node.items():
            if k == "$ref":
                yield v
            else:
                yield from _refs(v)
    elif isinstance(node, list):
        for v in node:
            yield from _refs(v)


def _keys(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for k, v in node.items():
            yield k
            yield from (
                _keys(v)
                if k not in ("properties", "content")
                else (x for vv in v.values() for x in _keys(vv))
            )
    elif isinstance(node, list):
        for v in node:
            yield from _keys(v)


def test_openapi_v3_group_version() -> None:
    doc = openapi.openapi_v3_group_version(GROUP, VERSION, DEFS)
    assert doc["openapi"].startswith("3.0")
    schemas = doc["components"]["schemas"]
    assert all(r.startswith("#/components/schemas/") for r in _refs(doc))
    assert {r.removeprefix("#/components/schemas/") for r in _refs(doc)} <= set(schemas)  # no dangling refs
    for name in ("ObjectMeta", "ListMeta", "OwnerReference", "ManagedFieldsEntry", "Status", "StatusDetails",
                 "StatusCause", "DeleteOptions", "Preconditions", "WatchEvent", "Time", "Patch"):  # fmt: skip
        assert META + name in schemas, name
    np = schemas["io.aggapi.edge.v1alpha1.NodePool"]
    assert np["x-kubernetes-group-version-kind"] == [{"group": GROUP, "version": VERSION, "kind": "NodePool"}]
    assert np["properties"]["metadata"]["allOf"] == [{"$ref": f"#/components/schemas/{META}ObjectMeta"}]
    assert np["properties"]["spec"]["properties"]["taints"]["items"]["properties"]["effect"]["enum"]
    lst = schemas["io.aggapi.edge.v1alpha1.NodePoolList"]
    assert lst["x-kubernetes-group-version-kind"][0]["kind"] == "NodePoolList"
    assert lst["properties"]["items"]["items"] == {
        "$ref": "#/components/schemas/io.aggapi.edge.v1alpha1.NodePool"
    }
    assert NODEPOOL.schema["properties"]["metadata"] == {"type": "object"}  # the def is left alone

    base = f"/apis/{GROUP}/{VERSION}"
    paths = doc["paths"]
    assert set(paths) == {
        f"{base}/nodepools",
        f"{base}/nodepools/{{name}}",
        f"{base}/nodepools/{{name}}/status",
        f"{base}/nodepools/{{name}}/topology",
        f"{base}/gadgets",
        f"{base}/namespaces/{{namespace}}/gadgets",
        f"{base}/namespaces/{{namespace}}/gadgets/{{name}}",
        f"{base}/namespaces/{{namespace}}/gadgets/{{name}}/status",
        f"{base}/namespaces/{{namespace}}/gadgets/{{name}}/topology",
    }
    actions = {
        p: {m: op["x-kubernetes-action"] for m, op in item.items() if m != "parameters"}
        for p, item in paths.items()
    }
    assert actions[f"{base}/nodepools"] == {"get": "list", "post": "post", "delete": "deletecollection"}
    assert actions[f"{base}/nodepools/{{name}}"] == {
        "get": "get",
        "put": "put",
        "patch": "patch",
        "delete": "delete",
    }
    assert actions[f"{base}/nodepools/{{name}}/status"] == {"get": "get", "put": "put", "patch": "patch"}
    assert actions[f"{base}/gadgets"] == {"get": "list"}
    assert actions[f"{base}/namespaces/{{namespace}}/gadgets/{{name}}/topology"] == {"get": "get"}

    lst_op = paths[f"{base}/nodepools"]["get"]
    assert lst_op["operationId"] == "listEdgeAggapiIoV1alpha1NodePool"
    assert lst_op["x-kubernetes-group-version-kind"] == {
        "group": GROUP,
        "version": VERSION,
        "kind": "NodePool",
    }
    names = {p["name"] for p in lst_op["parameters"]}
    assert names >= {"labelSelector", "fieldSelector", "limit", "continue", "resourceVersion",
                     "resourceVersionMatch", "timeoutSeconds", "watch", "allowWatchBookmarks",
                     "sendInitialEvents"}  # fmt: skip
    assert "application/json;stream=watch" in lst_op["responses"]["200"]["content"]
    assert lst_op["responses"]["401"] == {"description": "Unauthorized"}
    item = paths[f"{base}/namespaces/{{namespace}}/gadgets/{{name}}"]
    assert [(p["name"], p["in"]) for p in item["parameters"]] == [
        ("namespace", "path"),
        ("name", "path"),
        ("pretty", "query"),
    ]
    assert item["delete"]["operationId"] == "deleteEdgeAggapiIoV1alpha1NamespacedGadget"
    assert {p["name"] for p in item["patch"]["parameters"]} == {
        "dryRun",
        "fieldManager",
        "fieldValidation",
        "force",
    }
    assert set(item["patch"]["requestBody"]["content"]) >= {
        "application/merge-patch+json",
        "application/json-patch+json",
    }
    assert paths[f"{base}/gadgets"]["get"]["operationId"] == "listEdgeAggapiIoV1alpha1GadgetForAllNamespaces"
    post = paths[f"{base}/nodepools"]["post"]
    assert {p["name"] for p in post["parameters"]} == {"dryRun", "fieldManager", "fieldValidation"}
    assert set(post["responses"]) == {"200", "201", "202", "401"}
    with pytest.raises(KeyError):
        openapi.openapi_v3_group_version("nope.io", "v1", DEFS)


def test_openapi_v3_subresource_conventions() -> None:
    doc = openapi.openapi_v3_group_version("other.example.io", "v1", [WIDGET])
    base = "/apis/other.example.io/v1/widgets/{name}"
    paths = doc["paths"]
    assert set(paths) == {
        "/apis/other.example.io/v1/widgets",
        base,
        f"{base}/scale",
        f"{base}/proxy",
        f"{base}/proxy/{{path}}",
    }
    assert set(paths["/apis/other.example.io/v1/widgets"]) == {"get", "parameters"}  # read-only: list only
    list_params = {p["name"] for p in paths["/apis/other.example.io/v1/widgets"]["get"]["parameters"]}
    assert "watch" not in list_params  # no watch verb
    scale = paths[f"{base}/scale"]
    assert scale["put"]["requestBody"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/io.k8s.api.autoscaling.v1.Scale"
    }
    assert "io.k8s.api.autoscaling.v1.Scale" in doc["components"]["schemas"]
    proxy = paths[f"{base}/proxy/{{path}}"]
    assert {m for m in proxy if m != "parameters"} == {"get", "head", "options", "post"}
    assert {op["x-kubernetes-action"] for m, op in proxy.items() if m != "parameters"} == {"connect"}
    assert proxy["get"]["operationId"] == "connectGetOtherExampleIoV1WidgetProxyWithPath"
    assert {r.removeprefix("#/components/schemas/") for r in _refs(doc)} <= set(doc["components"]["schemas"])


def test_openapi_v2() -> None:
    doc = openapi.openapi_v2([*DEFS, WIDGET], title="t", version="v9")
    assert doc["swagger"] == "2.0" and doc["info"] == {"title": "t", "version": "v9"}
    defs = doc["definitions"]
    assert all(r.startswith("#/definitions/") for r in _refs(doc))
    assert {r.removeprefix("#/definitions/") for r in _refs(doc)} <= set(defs)
    np = defs["io.aggapi.edge.v1alpha1.NodePool"]
    assert np["properties"]["metadata"] == {
        "$ref": f"#/definitions/{META}ObjectMeta",
        "description": np["properties"]["metadata"]["description"],
    }
    assert "other.example.io" in {
        g["group"] for g in defs[META + "DeleteOptions"]["x-kubernetes-group-version-kind"]
    }
    # Nothing v2 cannot carry, anywhere.
    assert not {"nullable", "anyOf", "oneOf", "allOf", "not"} & set(_keys(defs))
    spec = defs["io.aggapi.edge.v1alpha1.Gadget"]["properties"]["spec"]
    assert spec["required"] == ["size"]  # the nullable one is no longer required
    assert spec["properties"]["note"] == {"description": "Optional remark."}
    assert spec["properties"]["choice"] == {"x-kubernetes-int-or-string": True}
    assert spec["properties"]["blob"] == {"x-kubernetes-preserve-unknown-fields": True}
    create = doc["paths"][f"/apis/{GROUP}/{VERSION}/namespaces/{{namespace}}/gadgets"]["post"]
    gadget_ref = {"$ref": "#/definitions/io.aggapi.edge.v1alpha1.Gadget"}
    assert create["parameters"][0] == {"name": "body", "in": "body", "required": True, "schema": gadget_ref}
    assert create["consumes"] == ["application/json", "application/yaml"]
    assert create["responses"]["201"]["schema"] == {"$ref": "#/definitions/io.aggapi.edge.v1alpha1.Gadget"}
    # The v3 document keeps what v2 drops.
    v3 = openapi.openapi_v3_group_version(GROUP, VERSION, DEFS)["components"]["schemas"]
    assert (
        v3["io.aggapi.edge.v1alpha1.Gadget"]["properties"]["spec"]["properties"]["note"]["nullable"] is True
    )


def test_openapi_v3_index_and_hash() -> None:
    index = openapi.openapi_v3_index([*DEFS, WIDGET])
    assert list(index["paths"]) == [f"apis/{GROUP}/{VERSION}", "apis/other.example.io/v1"]
    doc = openapi.openapi_v3_group_version(GROUP, VERSION, [*DEFS, WIDGET])
    h = openapi.openapi_v3_hash(doc)
    assert len(h) == 128 and h == h.upper()
    assert index["paths"][f"apis/{GROUP}/{VERSION}"] == {
        "serverRelativeURL": f"/openapi/v3/apis/{GROUP}/{VERSION}?hash={h}"
    }
    assert h != openapi.openapi_v3_hash(openapi.openapi_v3_group_version(GROUP, VERSION, [NODEPOOL]))


# ---------------------------------------------------------------- real kubectl against a tiny server

KUBECTL = Path(sys.executable).parent / "kubectl"


@dataclass
class _Served:
    """A test-only plain-HTTP server answering what kubectl asks for discovery and explain."""

    defs: list[ResourceDef]
    aggregated: bool
    requests: list[tuple[str, str, str]] = field(default_factory=list)  # (path_qs, accept, answer)
    unknown: list[str] = field(default_factory=list)

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/api", self.api)
        app.router.add_get("/apis", self.apis)
        app.router.add_get("/apis/{group}", self.group)
        app.router.add_get("/apis/{group}/{version}", self.group_version)
        app.router.add_get("/openapi/v2", self.openapi_v2)
        app.router.add_get("/openapi/v3", self.openapi_v3_index)
        app.router.add_get("/openapi/v3/apis/{group}/{version}", self.openapi_v3_gv)
        app.router.add_route("*", "/{tail:.*}", self.not_found)
        return app

    def json(self, req: web.Request, doc: dict[str, Any], ctype: str = "application/json",
             etag: str | None = None, headers: dict[str, str] | None = None) -> web.Response:  # fmt: skip
        etag = etag or discovery.discovery_etag(doc)
        hdrs = {"ETag": etag, "Vary": "Accept", **(headers or {})}
        if etag in req.headers.get("If-None-Match", ""):
            self.requests.append((req.path_qs, req.headers.get("Accept", ""), "304"))
            return web.Response(status=304, headers=hdrs)
        self.requests.append((req.path_qs, req.headers.get("Accept", ""), ctype))
        return web.Response(body=discovery.canonical_json(doc), headers={**hdrs, "Content-Type": ctype})

    async def api(self, req: web.Request) -> web.Response:
        # No core group here; client-go only trusts aggregated discovery when /api is aggregated too.
        return self.negotiate(
            req, [], {"kind": "APIVersions", "versions": [], "serverAddressByClientCIDRs": []}
        )

    async def apis(self, req: web.Request) -> web.Response:
        return self.negotiate(req, self.defs, discovery.api_group_list(self.defs))

    def negotiate(self, req: web.Request, defs: list[ResourceDef], legacy: dict[str, Any]) -> web.Response:
        for clause in req.headers.get("Accept", "application/json").split(","):
            mtype, *raw = (p.strip() for p in clause.split(";"))
            params = dict(p.split("=", 1) for p in raw if "=" in p)
            if params.get("g") == "apidiscovery.k8s.io" and params.get("as") == "APIGroupDiscoveryList":
                if self.aggregated and params.get("v") in ("v2", "v2beta1"):
                    doc = discovery.aggregated_discovery(defs, discovery_version=params["v"])
                    ctype = (discovery.AGGREGATED_V2_CONTENT_TYPE if params["v"] == "v2"
                             else discovery.AGGREGATED_V2BETA1_CONTENT_TYPE)  # fmt: skip
                    return self.json(req, doc, ctype)
            elif mtype in ("application/json", "application/*", "*/*"):
                return self.json(req, legacy)
        return web.Response(status=406)

    async def group(self, req: web.Request) -> web.Response:
        try:
            return self.json(req, discovery.api_group(req.match_info["group"], self.defs))
        except KeyError:
            return await self.not_found(req)

    async def group_version(self, req: web.Request) -> web.Response:
        doc = discovery.api_resource_list(req.match_info["group"], req.match_info["version"], self.defs)
        return self.json(req, doc) if doc["resources"] else await self.not_found(req)

    async def openapi_v2(self, req: web.Request) -> web.Response:
        # JSON only: kubectl's own v2 client wants gnostic protobuf, which only kube-apiserver serves.
        accept = req.headers.get("Accept", "*/*")
        if not any(t in accept for t in ("application/json", "*/*", "application/*")):
            self.requests.append((req.path_qs, accept, "406"))
            return web.Response(status=406)
        return self.json(req, openapi.openapi_v2(self.defs))

    async def openapi_v3_index(self, req: web.Request) -> web.Response:
        return self.json(req, openapi.openapi_v3_index(self.defs))

    async def openapi_v3_gv(self, req: web.Request) -> web.Response:
        group, version = req.match_info["group"], req.match_info["version"]
        try:
            doc = openapi.openapi_v3_group_version(group, version, self.defs)
        except KeyError:
            return await self.not_found(req)
        h = openapi.openapi_v3_hash(doc)
        asked = req.query.get("hash")
        if asked is not None and asked != h:  # as kube-openapi: point stale links at the current document
            self.requests.append((req.path_qs, req.headers.get("Accept", ""), "301"))
            raise web.HTTPMovedPermanently(f"/openapi/v3/apis/{group}/{version}?hash={h}")
        immutable = {"Cache-Control": "public, immutable"} if asked else {}
        return self.json(req, doc, etag=f'"{h}"', headers=immutable)

    async def not_found(self, req: web.Request) -> web.Response:
        log.info(
            "kubectl asked for unknown %s %s (Accept %s)", req.method, req.path_qs, req.headers.get("Accept")
        )
        self.unknown.append(f"{req.method} {req.path_qs}")
        status = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                  "message": "the server could not find the requested resource", "reason": "NotFound",
                  "details": {}, "code": 404}  # fmt: skip
        return web.json_response(status, status=404)


@dataclass
class _Kubectl:
    served: _Served
    server: str
    env: dict[str, str]

    async def __call__(self, *args: str) -> str:
        proc = await asyncio.create_subprocess_exec(
            str(KUBECTL), *args, env=self.env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
        )
        try:
            async with asyncio.timeout(60):
                out, err = await proc.communicate()
        except TimeoutError:
            proc.kill()
            await proc.wait()
            raise
        log.info("kubectl %s → %s\n%s%s", " ".join(args), proc.returncode, out.decode(), err.decode())
        assert proc.returncode == 0, f"kubectl {' '.join(args)} failed: {err.decode()}"
        return out.decode()


@pytest.fixture(params=[True, False], ids=["aggregated", "legacy"])
async def kubectl(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[_Kubectl]:
    if not KUBECTL.exists():
        pytest.skip("kubectl not installed in the venv")
    served = _Served(defs=[NODEPOOL, GADGET], aggregated=request.param)
    runner = web.AppRunner(served.app(), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        host, port = runner.addresses[0][:2]
        server = f"http://{host}:{port}"
        kubeconfig = tmp_path / "kubeconfig"
        kubeconfig.write_text(
            json.dumps({
                "apiVersion": "v1", "kind": "Config", "current-context": "t",
                "clusters": [{"name": "t", "cluster": {"server": server}}],
                "users": [{"name": "t", "user": {}}],
                "contexts": [{"name": "t", "context": {"cluster": "t", "user": "t"}}],
            })
        )  # fmt: skip
        home = tmp_path / "home"
        home.mkdir()
        # A private HOME keeps kubectl's discovery and HTTP caches per test; no proxy for loopback.
        env = {
            k: v for k, v in os.environ.items() if k.lower() not in ("http_proxy", "https_proxy", "all_proxy")
        }
        env.update(HOME=str(home), KUBECONFIG=str(kubeconfig), NO_PROXY="127.0.0.1,localhost")
        env.pop("KUBECACHEDIR", None)
        yield _Kubectl(served, server, env)
    finally:
        await runner.cleanup()


def _row(table: str, name: str) -> list[str]:
    rows = [line.split() for line in table.splitlines()]
    return next(r for r in rows if r and r[0] == name)


async def test_kubectl_api_resources(kubectl: _Kubectl) -> None:
    out = await kubectl("api-resources")
    assert out.splitlines()[0].split() == ["NAME", "SHORTNAMES", "APIVERSION", "NAMESPACED", "KIND"]
    assert _row(out, "nodepools") == ["nodepools", "np", f"{GROUP}/{VERSION}", "false", "NodePool"]
    assert _row(out, "gadgets") == ["gadgets", f"{GROUP}/{VERSION}", "true", "Gadget"]
    wide = await kubectl("api-resources", "--api-group", GROUP, "-o", "wide")
    assert _row(wide, "nodepools")[-2] == "create,delete,deletecollection,get,list,patch,update,watch"
    assert _row(wide, "nodepools")[-1] == "edge"  # CATEGORIES
    cat = await kubectl("api-resources", "--categories", "edge", "--no-headers")
    assert [r.split()[0] for r in cat.splitlines()] == ["nodepools"]
    answers: dict[str, list[str]] = {}
    for path, _, answer in kubectl.served.requests:
        answers.setdefault(path.split("?")[0], []).append(answer)
    if kubectl.served.aggregated:
        assert answers["/apis"][0] == discovery.AGGREGATED_V2_CONTENT_TYPE
        assert f"/apis/{GROUP}/{VERSION}" not in answers  # everything came from the aggregated document
    else:
        assert answers[f"/apis/{GROUP}/{VERSION}"][0] == "application/json"
    # Later runs revalidate with If-None-Match and are answered 304 from the ETag.
    assert "304" in answers["/apis"]
    log.info("requests: %s; unknown: %s", kubectl.served.requests, kubectl.served.unknown)


async def test_kubectl_explain(kubectl: _Kubectl) -> None:
    taints = await kubectl("explain", "nodepools.spec.taints")
    assert f"GROUP:      {GROUP}" in taints and "KIND:       NodePool" in taints
    assert "FIELD: taints <[]Object>" in taints
    assert "Taints applied to every node of the pool" in taints
    for line in ("key\t<string> -required-", "value\t<string>", "effect\t<string> -required-"):
        assert line in taints, line
    assert "The taint key to be applied to a node." in taints
    assert "The taint value corresponding to the taint key." in taints
    assert "enum: NoSchedule, PreferNoSchedule, NoExecute" in taints

    rec = await kubectl("explain", "nodepools", "--recursive")
    expected = [
        "metadata\t<ObjectMeta>",
        "  creationTimestamp\t<string>",
        "  ownerReferences\t<[]OwnerReference>",
    ]
    expected += ["spec\t<Object>", "  taints\t<[]Object>", "    effect\t<string> -required-"]
    for line in [*expected, "status\t<Object>", "  readyNodeNum\t<integer>"]:
        assert line in rec, line

    md = await kubectl("explain", "np.metadata")
    assert "FIELD: metadata <ObjectMeta>" in md
    assert "ObjectMeta is metadata that all persisted resources must have" in md
    for line in ("name\t<string>", "labels\t<map[string]string>", "creationTimestamp\t<string>",
                 "ownerReferences\t<[]OwnerReference>", "managedFields\t<[]ManagedFieldsEntry>"):  # fmt: skip
        assert line in md, line
    assert "Map of string keys and values that can be used to organize" in md

    ns = await kubectl("explain", "gadgets.spec")
    assert "size\t<integer> -required-" in ns and "How big." in ns
    paths = [p for p, _, _ in kubectl.served.requests]
    assert any(p.split("?")[0] == "/openapi/v3" for p in paths)
    assert any(p.startswith(f"/openapi/v3/apis/{GROUP}/{VERSION}?hash=") for p in paths)
    log.info("requests: %s; unknown: %s", kubectl.served.requests, kubectl.served.unknown)
