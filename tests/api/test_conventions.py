"""kube API conventions a client relies on, checked against a real `aggapi serve`: server-side Table and
metadata-only output, content negotiation, watch parameters, paging, discovery, OpenAPI, generateName,
the operational endpoints, and what DELETE answers."""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from multidict import CIMultiDictProxy
from support.aggapi import NP, AggapiServer, Api, api_client, nodepool

GROUP, VERSION = "edge.aggapi.io", "v1alpha1"
GV = f"/apis/{GROUP}/{VERSION}"
TABLE_V1 = "application/json;as=Table;v=v1;g=meta.k8s.io"
TABLE_V1BETA1 = "application/json;as=Table;v=v1beta1;g=meta.k8s.io"
PARTIAL_LIST = "application/json;as=PartialObjectMetadataList;v=v1;g=meta.k8s.io"
PARTIAL = "application/json;as=PartialObjectMetadata;v=v1;g=meta.k8s.io"
DISCOVERY_V2 = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList"
COLUMNS = ["Name", "Type", "ReadyNodes", "NotReadyNodes", "Age"]
EVENT_WAIT = 10.0  # seconds to wait for an expected watch event before failing (never a timing assertion)


def uniq(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


@pytest.fixture
async def api(aggapi: AggapiServer) -> AsyncIterator[Api]:
    async with api_client(aggapi) as client:
        yield client


async def create(api: Api, name: str, **spec: Any) -> dict[str, Any]:
    status, body = await api.post(NP, nodepool(name, **spec))
    assert status == 201, body
    return dict(body)


async def fetch(
    api: Api, path: str, *, headers: dict[str, str] | None = None, params: dict[str, str] | None = None
) -> tuple[int, CIMultiDictProxy[str], bytes]:
    """A GET that also returns headers and the raw body; it reads until the server ends the response."""
    async with asyncio.timeout(60):  # a hang fails this test instead of the whole run
        async with api.session.get(api.base + path, headers=headers, params=params) as r:
            return r.status, r.headers, await r.read()


def events(raw: bytes) -> list[dict[str, Any]]:
    return [json.loads(line) for line in raw.splitlines() if line.strip()]


async def next_event(queue: asyncio.Queue[dict[str, Any]]) -> dict[str, Any]:
    return await asyncio.wait_for(queue.get(), EVENT_WAIT)


def by_name(name: str) -> dict[str, str]:
    return {"fieldSelector": f"metadata.name={name}"}


# ---- Table --------------------------------------------------------------------------------------------


def assert_table(body: dict[str, Any], version: str = "v1") -> None:
    assert body["kind"] == "Table"
    assert body["apiVersion"] == f"meta.k8s.io/{version}"
    assert [c["name"] for c in body["columnDefinitions"]] == COLUMNS
    assert body["columnDefinitions"][0]["format"] == "name"
    assert {c["type"] for c in body["columnDefinitions"]} <= {"string", "integer", "date"}


async def test_table_list_and_get(api: Api) -> None:
    name = uniq("tbl")
    await create(api, name, type="Cloud")
    status, headers, raw = await fetch(api, NP, headers={"Accept": TABLE_V1}, params=by_name(name))
    assert status == 200
    assert headers["Content-Type"].startswith("application/json")
    assert "as=Table" in headers["Content-Type"]
    body = json.loads(raw)
    assert_table(body)
    assert body["metadata"]["resourceVersion"]
    (row,) = body["rows"]
    assert row["cells"][:2] == [name, "Cloud"]
    assert len(row["cells"]) == len(COLUMNS)
    assert row["object"]["kind"] == "PartialObjectMetadata"
    assert row["object"]["apiVersion"] == "meta.k8s.io/v1"
    assert row["object"]["metadata"]["name"] == name
    assert "spec" not in row["object"]

    status, body = await api.get(f"{NP}/{name}", headers={"Accept": TABLE_V1})
    assert status == 200
    assert_table(body)
    assert [r["cells"][0] for r in body["rows"]] == [name]


@pytest.mark.parametrize("include", ["Object", "None", "Metadata"])
async def test_table_include_object(api: Api, include: str) -> None:
    name = uniq("tblinc")
    await create(api, name, type="Edge")
    status, body = await api.get(
        f"{NP}/{name}", headers={"Accept": TABLE_V1}, params={"includeObject": include}
    )
    assert status == 200
    (row,) = body["rows"]
    if include == "Object":
        assert row["object"]["kind"] == "NodePool"
        assert row["object"]["spec"]["type"] == "Edge"
    elif include == "None":
        assert "object" not in row
    else:
        assert row["object"]["kind"] == "PartialObjectMetadata"


async def test_table_v1beta1(api: Api) -> None:
    name = uniq("tblb1")
    await create(api, name, type="Edge")
    status, body = await api.get(NP, headers={"Accept": TABLE_V1BETA1}, params=by_name(name))
    assert status == 200
    assert_table(body, "v1beta1")
    assert body["rows"][0]["object"]["apiVersion"] == "meta.k8s.io/v1beta1"


async def test_table_watch_streams_tables(api: Api) -> None:
    name = uniq("tblw")
    await create(api, name, type="Edge")
    params = {"watch": "true", "timeoutSeconds": "1", **by_name(name)}
    status, headers, raw = await fetch(api, NP, headers={"Accept": TABLE_V1}, params=params)
    assert status == 200
    assert "as=Table" in headers["Content-Type"]
    (ev,) = events(raw)
    assert ev["type"] == "ADDED"
    assert_table(ev["object"])
    assert ev["object"]["rows"][0]["cells"][0] == name


# ---- metadata-only --------------------------------------------------------------------------------------


async def test_partial_object_metadata_list_and_get(api: Api) -> None:
    name = uniq("pom")
    created = await create(api, name, type="Edge", labels={"zone": "a"})
    status, body = await api.get(NP, headers={"Accept": PARTIAL_LIST}, params=by_name(name))
    assert status == 200
    assert body["kind"] == "PartialObjectMetadataList"
    assert body["apiVersion"] == "meta.k8s.io/v1"
    assert body["metadata"]["resourceVersion"]
    (item,) = body["items"]
    assert set(item) == {"kind", "apiVersion", "metadata"}
    assert item["kind"] == "PartialObjectMetadata"
    assert item["metadata"]["uid"] == created["metadata"]["uid"]

    status, body = await api.get(f"{NP}/{name}", headers={"Accept": PARTIAL})
    assert status == 200
    assert body["kind"] == "PartialObjectMetadata"
    assert set(body) == {"kind", "apiVersion", "metadata"}
    assert body["metadata"]["name"] == name


# ---- content negotiation -----------------------------------------------------------------------------


async def test_accept_the_server_cannot_produce_is_406(api: Api) -> None:
    status, body = await api.get(NP, headers={"Accept": "application/vnd.kubernetes.protobuf"})
    assert status == 406
    assert body["kind"] == "Status"
    assert body["reason"] == "NotAcceptable"
    assert body["code"] == 406


async def test_json_is_picked_when_listed_after_protobuf(api: Api) -> None:
    status, headers, raw = await fetch(
        api, NP, headers={"Accept": "application/vnd.kubernetes.protobuf, application/json"}
    )
    assert status == 200
    assert headers["Content-Type"].startswith("application/json")
    assert json.loads(raw)["kind"] == "NodePoolList"


# ---- watch --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("spelling", ["true", "True", "1"])
async def test_watch_spellings_stream_and_timeout_ends_the_stream(api: Api, spelling: str) -> None:
    name = uniq("wspell")
    await create(api, name, type="Edge")
    params = {"watch": spelling, "timeoutSeconds": "1", **by_name(name)}
    status, headers, raw = await fetch(api, NP, params=params)
    assert status == 200
    assert headers["Content-Type"] == "application/json"
    (ev,) = events(raw)
    assert ev["type"] == "ADDED"
    assert ev["object"]["kind"] == "NodePool"
    assert ev["object"]["metadata"]["name"] == name


async def test_watch_sees_changes_and_deletion(api: Api) -> None:
    name = uniq("wlive")
    async with api.watch(NP, by_name(name)) as queue:
        created = await create(api, name, type="Edge")
        ev = await next_event(queue)
        assert (ev["type"], ev["object"]["metadata"]["uid"]) == ("ADDED", created["metadata"]["uid"])
        status, patched = await api.patch(f"{NP}/{name}", {"spec": {"labels": {"z": "1"}}})
        assert status == 200, patched
        ev = await next_event(queue)
        assert ev["type"] == "MODIFIED"
        assert ev["object"]["metadata"]["resourceVersion"] == patched["metadata"]["resourceVersion"]
        status, _ = await api.delete(f"{NP}/{name}")
        assert status == 200
        ev = await next_event(queue)
        assert ev["type"] == "DELETED"


async def test_watch_list_sends_initial_events_then_a_bookmark(api: Api) -> None:
    name = uniq("wlist")
    created = await create(api, name, type="Edge")
    params = {
        "sendInitialEvents": "true",
        "resourceVersionMatch": "NotOlderThan",
        "allowWatchBookmarks": "true",
        **by_name(name),
    }
    async with api.watch(NP, params) as queue:
        ev = await next_event(queue)
        assert ev["type"] == "ADDED"
        assert ev["object"]["metadata"]["name"] == name
        ev = await next_event(queue)
        assert ev["type"] == "BOOKMARK"
        meta = ev["object"]["metadata"]
        assert meta["annotations"]["k8s.io/initial-events-end"] == "true"
        assert int(meta["resourceVersion"]) >= int(created["metadata"]["resourceVersion"])
        assert ev["object"]["kind"] == "NodePool"


async def test_watch_with_an_unparsable_resource_version_is_refused(api: Api) -> None:
    status, body = await api.get(NP, params={"watch": "true", "resourceVersion": "abc"})
    assert 400 <= status < 500, body
    assert body["kind"] == "Status"
    assert body["code"] == status


# ---- list and paging ----------------------------------------------------------------------------------


async def test_list_has_a_resource_version(api: Api) -> None:
    status, body = await api.get(NP)
    assert status == 200
    assert body["kind"] == "NodePoolList"
    assert body["apiVersion"] == f"{GROUP}/{VERSION}"
    assert int(body["metadata"]["resourceVersion"]) > 0
    assert "continue" not in body["metadata"]


async def test_paging_with_limit_and_continue(api: Api) -> None:
    prefix = uniq("page")
    mine = {f"{prefix}-{i}" for i in range(5)}
    for name in sorted(mine):
        await create(api, name, type="Edge")

    status, first = await api.get(NP, params={"limit": "2"})
    assert status == 200
    assert len(first["items"]) == 2
    assert first["metadata"]["continue"]
    assert first["metadata"]["remainingItemCount"] >= 3

    seen = [i["metadata"]["name"] for i in first["items"]]
    token = first["metadata"]["continue"]
    rv = first["metadata"]["resourceVersion"]
    pages = 1
    while token:
        status, page = await api.get(NP, params={"limit": "2", "continue": token})
        assert status == 200, page
        assert page["metadata"]["resourceVersion"] == rv  # every page is the same snapshot
        seen += [i["metadata"]["name"] for i in page["items"]]
        token = page["metadata"].get("continue", "")
        pages += 1
        assert pages < 1000
    assert len(seen) == len(set(seen)), "an item came twice"
    assert mine <= set(seen)
    assert seen == sorted(seen)  # etcd key order


async def test_paging_with_a_selector_has_no_remaining_count(api: Api) -> None:
    prefix = uniq("pagesel")
    for i in range(3):
        pool = nodepool(f"{prefix}-{i}", type="Edge")
        pool["metadata"]["labels"] = {"suite": prefix}
        status, body = await api.post(NP, pool)
        assert status == 201, body
    status, body = await api.get(NP, params={"limit": "2", "labelSelector": f"suite={prefix}"})
    assert status == 200
    assert len(body["items"]) == 2
    assert body["metadata"]["continue"]
    assert "remainingItemCount" not in body["metadata"]
    params = {"limit": "2", "labelSelector": f"suite={prefix}", "continue": body["metadata"]["continue"]}
    status, rest = await api.get(NP, params=params)
    assert [i["metadata"]["name"] for i in rest["items"]] == [f"{prefix}-2"]
    assert "continue" not in rest["metadata"]


@pytest.mark.parametrize("token", ["garbage", "eyJ2IjoibWV0YS5rOHMuaW8vdjEiLCJydiI6LTF9", "%%%"])
async def test_garbage_continue_token_is_refused(api: Api, token: str) -> None:
    status, body = await api.get(NP, params={"limit": "2", "continue": token})
    assert status in (400, 410), body
    assert body["kind"] == "Status"
    assert body["code"] == status
    assert body["reason"] in ("BadRequest", "Expired", "Gone")


# ---- discovery -------------------------------------------------------------------------------------


async def test_legacy_group_list(api: Api) -> None:
    status, body = await api.get("/apis")
    assert status == 200
    doc = dict(body)
    assert doc["kind"] == "APIGroupList"
    (group,) = [g for g in doc["groups"] if g["name"] == GROUP]
    assert group["preferredVersion"] == {"groupVersion": f"{GROUP}/{VERSION}", "version": VERSION}
    assert {"groupVersion": f"{GROUP}/{VERSION}", "version": VERSION} in group["versions"]


async def test_aggregated_discovery(api: Api) -> None:
    status, headers, raw = await fetch(api, "/apis", headers={"Accept": DISCOVERY_V2})
    assert status == 200
    assert headers["Content-Type"] == DISCOVERY_V2
    doc = json.loads(raw)
    assert doc["kind"] == "APIGroupDiscoveryList"
    assert doc["apiVersion"] == "apidiscovery.k8s.io/v2"
    (group,) = [g for g in doc["items"] if g["metadata"]["name"] == GROUP]
    (ver,) = [v for v in group["versions"] if v["version"] == VERSION]
    (res,) = [r for r in ver["resources"] if r["resource"] == "nodepools"]
    assert res["scope"] == "Cluster"
    assert res["shortNames"] == ["np"]
    assert res["responseKind"]["kind"] == "NodePool"
    assert "status" in [s["subresource"] for s in res.get("subresources", [])]


async def test_group_version_resource_list(api: Api) -> None:
    status, body = await api.get(GV)
    assert status == 200
    assert body["kind"] == "APIResourceList"
    assert body["groupVersion"] == f"{GROUP}/{VERSION}"
    resources = {r["name"]: r for r in body["resources"]}
    np = resources["nodepools"]
    assert np["namespaced"] is False
    assert np["kind"] == "NodePool"
    assert np["shortNames"] == ["np"]
    assert {"create", "delete", "get", "list", "patch", "update", "watch"} <= set(np["verbs"])
    status_sub = resources["nodepools/status"]
    assert status_sub["kind"] == "NodePool"
    assert set(status_sub["verbs"]) == {"get", "patch", "update"}


@pytest.mark.parametrize(
    ("path", "accept"), [("/apis", ""), ("/apis", DISCOVERY_V2), (GV, ""), ("/openapi/v2", "")]
)
async def test_discovery_etag_and_if_none_match(api: Api, path: str, accept: str) -> None:
    hdrs = {"Accept": accept} if accept else {}
    status, headers, _ = await fetch(api, path, headers=hdrs)
    assert status == 200
    etag = headers["ETag"]
    assert etag.startswith('"') and etag.endswith('"')
    status, headers, raw = await fetch(api, path, headers={**hdrs, "If-None-Match": etag})
    assert status == 304
    assert raw == b""
    status, _, _ = await fetch(api, path, headers={**hdrs, "If-None-Match": '"stale"'})
    assert status == 200


# ---- OpenAPI -----------------------------------------------------------------------------------------


async def test_openapi_v2_has_the_nodepool_definition(api: Api) -> None:
    status, body = await api.get("/openapi/v2")
    assert status == 200
    definition = body["definitions"]["io.aggapi.edge.v1alpha1.NodePool"]
    assert definition["x-kubernetes-group-version-kind"] == [
        {"group": GROUP, "kind": "NodePool", "version": VERSION}
    ]
    assert "spec" in definition["properties"]


async def test_openapi_v3_index_points_at_a_document_that_resolves(api: Api) -> None:
    status, index = await api.get("/openapi/v3")
    assert status == 200
    url = index["paths"][f"apis/{GROUP}/{VERSION}"]["serverRelativeURL"]
    assert re.fullmatch(rf"/openapi/v3/apis/{re.escape(GROUP)}/{VERSION}\?hash=[0-9A-Fa-f]+", url), url
    status, doc = await api.get(url)
    assert status == 200
    assert doc["openapi"].startswith("3.")
    schemas = doc["components"]["schemas"]
    assert schemas["io.aggapi.edge.v1alpha1.NodePool"]["x-kubernetes-group-version-kind"] == [
        {"group": GROUP, "kind": "NodePool", "version": VERSION}
    ]


# ---- generateName ------------------------------------------------------------------------------------


async def test_generate_name(api: Api) -> None:
    prefix = f"gen-{uuid.uuid4().hex[:6]}-"
    pool = nodepool("", type="Edge")
    pool["metadata"] = {"generateName": prefix}
    names = set()
    for _ in range(2):
        status, body = await api.post(NP, pool)
        assert status == 201, body
        name = body["metadata"]["name"]
        assert name.startswith(prefix) and len(name) > len(prefix)
        assert body["metadata"]["generateName"] == prefix
        names.add(name)
    assert len(names) == 2
    for name in names:
        status, _ = await api.get(f"{NP}/{name}")
        assert status == 200


# ---- operational endpoints ---------------------------------------------------------------------------


async def test_version(api: Api) -> None:
    status, body = await api.get("/version")
    assert status == 200
    assert {"major", "minor", "gitVersion", "goVersion", "platform"} <= set(body)
    assert body["gitVersion"].startswith("v")


def metric_samples(text: str, name: str) -> list[tuple[dict[str, str], float]]:
    """(labels, value) of every sample of `name` in Prometheus text format."""
    out = []
    for line in text.splitlines():
        m = re.fullmatch(rf"{re.escape(name)}(?:\{{(.*)\}})? (\S+)", line)
        if m:
            labels = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', m.group(1) or ""))
            out.append((labels, float(m.group(2))))
    return out


async def test_metrics(api: Api) -> None:
    name = uniq("metrics")
    await create(api, name, type="Edge")
    await api.get(f"{NP}/{name}")
    await api.get(f"{NP}/{uniq('absent')}")
    await api.get(NP)
    async with api.watch(NP, by_name(name)) as queue:
        await next_event(queue)  # the watch is registered and serving
        status, text = await api.get("/metrics")
    assert status == 200
    assert isinstance(text, str)

    requests = metric_samples(text, "apiserver_request_total")
    seen = {(lbl["verb"], lbl["resource"], lbl["code"]) for lbl, _ in requests}
    assert {("CREATE", "nodepools", "201"), ("GET", "nodepools", "200"), ("GET", "nodepools", "404")} <= seen
    assert ("LIST", "nodepools", "200") in seen

    (inflight,) = metric_samples(text, "apiserver_current_inflight_requests")
    assert inflight[1] >= 1  # at least the /metrics request itself
    watchers = {lbl.get("resource"): v for lbl, v in metric_samples(text, "apiserver_registered_watchers")}
    assert watchers["nodepools"] >= 1
    assert metric_samples(text, "etcd_request_duration_seconds_count")


async def test_readyz_verbose_lists_the_checks(api: Api) -> None:
    status, text = await api.get("/readyz", params={"verbose": ""})
    assert status == 200
    lines = text.splitlines()
    assert "[+]etcd ok" in lines
    assert "[+]watch-caches-synced ok" in lines
    assert lines[-1] == "readyz check passed"


async def test_livez_and_healthz(api: Api) -> None:
    for path in ("/livez", "/healthz"):
        status, text = await api.get(path)
        assert (status, text) == (200, "ok")


# ---- DELETE -----------------------------------------------------------------------------------------


async def test_delete_answers_a_success_status(api: Api) -> None:
    name = uniq("del")
    created = await create(api, name, type="Edge")
    status, body = await api.delete(f"{NP}/{name}")
    assert status == 200
    assert body["kind"] == "Status"
    assert body["apiVersion"] == "v1"
    assert body["status"] == "Success"
    assert body["details"]["name"] == name
    assert body["details"]["uid"] == created["metadata"]["uid"]
    assert body["details"]["group"] == GROUP
    assert body["details"]["kind"] == "nodepools"
    status, _ = await api.get(f"{NP}/{name}")
    assert status == 404


async def test_delete_of_a_missing_object_is_not_found(api: Api) -> None:
    name = uniq("delmissing")
    status, body = await api.delete(f"{NP}/{name}")
    assert status == 404
    assert body["kind"] == "Status"
    assert body["reason"] == "NotFound"
    assert body["details"] == {"name": name, "group": GROUP, "kind": "nodepools"}


async def test_delete_with_a_finalizer_marks_then_finishes(api: Api) -> None:
    name = uniq("delfin")
    pool = nodepool(name, type="Edge")
    pool["metadata"]["finalizers"] = ["edge.aggapi.io/test"]
    status, created = await api.post(NP, pool)
    assert status == 201, created
    status, body = await api.delete(f"{NP}/{name}")
    assert status == 200
    assert body["kind"] == "NodePool"
    assert body["metadata"]["deletionTimestamp"]
    status, body = await api.patch(f"{NP}/{name}", {"metadata": {"finalizers": None}})
    assert status == 200, body
    status, _ = await api.get(f"{NP}/{name}")
    assert status == 404


async def test_delete_with_preconditions(api: Api) -> None:
    name = uniq("delpre")
    created = await create(api, name, type="Edge")
    wrong = {"kind": "DeleteOptions", "apiVersion": "v1", "preconditions": {"uid": str(uuid.uuid4())}}
    status, body = await api.delete(f"{NP}/{name}", wrong)
    assert status == 409, body
    assert body["reason"] == "Conflict"
    right = {**wrong, "preconditions": {"uid": created["metadata"]["uid"]}}
    status, body = await api.delete(f"{NP}/{name}", right)
    assert status == 200, body


async def test_watch_without_a_cert_is_refused_before_streaming(aggapi: AggapiServer) -> None:
    async with api_client(aggapi, with_cert=False) as anon:
        status, body = await anon.get(NP, params={"watch": "true"})
    assert status == 401
    assert body["reason"] == "Unauthorized"


async def test_keep_alive_survives_a_finished_watch(aggapi: AggapiServer) -> None:
    async with api_client(aggapi) as client:
        status, _, _ = await fetch(client, NP, params={"watch": "1", "timeoutSeconds": "1", **by_name("x")})
        assert status == 200
        status, body = await client.get(NP)
        assert status == 200, body
