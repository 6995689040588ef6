"""Bad requests against a real `aggapi serve`: every one is answered with a kube `Status` carrying the
code and reason kube-apiserver would use, and none of them leaves an object behind."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from multidict import CIMultiDictProxy
from support.aggapi import NP, AggapiServer, Api, api_client, nodepool

GROUP = "edge.aggapi.io"


def uniq(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


@pytest.fixture
async def api(aggapi: AggapiServer) -> AsyncIterator[Api]:
    async with api_client(aggapi) as client:
        yield client


@pytest.fixture
async def anon(aggapi: AggapiServer) -> AsyncIterator[Api]:
    """A client that completes TLS without presenting a client certificate."""
    async with api_client(aggapi, with_cert=False) as client:
        yield client


def assert_status(body: Any, code: int, reason: str) -> dict[str, Any]:
    """`body` is a failure Status with this code and reason (and a message a human can read)."""
    assert isinstance(body, dict), body
    assert body.get("kind") == "Status", body
    assert body.get("apiVersion") == "v1", body
    assert body.get("status") == "Failure", body
    assert body.get("code") == code, body
    assert body.get("reason") == reason, body
    assert isinstance(body.get("message"), str) and body["message"], body
    return body


def causes(body: dict[str, Any]) -> list[dict[str, Any]]:
    return list(body.get("details", {}).get("causes", []))


def cause_fields(body: dict[str, Any]) -> set[str]:
    return {c.get("field", "") for c in causes(body)}


async def assert_absent(api: Api, name: str) -> None:
    status, body = await api.get(f"{NP}/{name}")
    assert status == 404, body


async def send(
    api: Api,
    method: str,
    path: str,
    body: Any = None,
    *,
    content_type: str = "application/json",
    params: dict[str, str] | None = None,
) -> tuple[int, CIMultiDictProxy[str], Any]:
    """Like Api.request, but also returns the response headers (for `Warning`)."""
    data = json.dumps(body).encode() if body is not None else None
    async with api.session.request(
        method, api.base + path, data=data, headers={"Content-Type": content_type}, params=params
    ) as r:
        text = await r.read()
        return r.status, r.headers, json.loads(text) if text else None


# ---- the body is not a NodePool -------------------------------------------------------------------


async def test_malformed_json_is_bad_request(api: Api) -> None:
    status, body = await api.post(NP, None, raw=b'{"apiVersion": "edge.aggapi.io/v1alpha1", "kind": ')
    assert status == 400
    assert_status(body, 400, "BadRequest")


@pytest.mark.parametrize("raw", [b"[1, 2, 3]", b'"a-string"', b"42", b"null"])
async def test_body_that_is_not_an_object_is_bad_request(api: Api, raw: bytes) -> None:
    status, body = await api.post(NP, None, raw=raw)
    assert status == 400
    assert_status(body, 400, "BadRequest")


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("kind", "Node"),
        ("apiVersion", "edge.aggapi.io/v1"),
        ("apiVersion", "v1"),
        ("kind", None),
        ("apiVersion", None),
    ],
)
async def test_wrong_or_missing_type_meta_is_bad_request(api: Api, field: str, value: str | None) -> None:
    name = uniq("typemeta")
    obj = nodepool(name, type="Edge")
    if value is None:
        del obj[field]
    else:
        obj[field] = value
    status, body = await api.post(NP, obj)
    assert status == 400, body
    assert_status(body, 400, "BadRequest")
    await assert_absent(api, name)


# ---- validation: 422 Invalid with causes ------------------------------------------------------------


@pytest.mark.parametrize("name", ["Bad_Name", "a" * 64, "dots.are.not.ok-in-a-label"])
async def test_invalid_name_is_invalid_with_metadata_name_cause(api: Api, name: str) -> None:
    status, body = await api.post(NP, nodepool(name, type="Edge"))
    assert status == 422, body
    assert_status(body, 422, "Invalid")
    assert body["details"]["kind"] == "NodePool"
    assert body["details"]["group"] == GROUP
    assert body["details"]["name"] == name
    assert cause_fields(body) == {"metadata.name"}
    await assert_absent(api, name)


async def test_invalid_taint_effect_is_not_supported(api: Api) -> None:
    name = uniq("taint")
    pool = nodepool(name, type="Edge", taints=[{"key": "edge", "effect": "Sometimes"}])
    status, body = await api.post(NP, pool)
    assert_status(body, 422, "Invalid")
    assert status == 422
    (cause,) = [c for c in causes(body) if c.get("field") == "spec.taints[0].effect"]
    assert cause["reason"] == "FieldValueNotSupported"
    assert "NoSchedule" in cause["message"]
    await assert_absent(api, name)


async def test_pool_type_must_be_edge_or_cloud(api: Api) -> None:
    name = uniq("fog")
    status, body = await api.post(NP, nodepool(name, type="Fog"))
    assert status == 422
    assert_status(body, 422, "Invalid")
    (cause,) = causes(body)
    assert cause == {**cause, "field": "spec.type", "reason": "FieldValueNotSupported"}
    await assert_absent(api, name)


async def test_host_network_is_refused_on_a_cloud_pool(api: Api) -> None:
    name = uniq("cloudhn")
    status, body = await api.post(NP, nodepool(name, type="Cloud", hostNetwork=True))
    assert status == 422
    assert_status(body, 422, "Invalid")
    assert cause_fields(body) == {"spec.hostNetwork"}
    await assert_absent(api, name)


async def test_invalid_label_key_in_spec_labels(api: Api) -> None:
    name = uniq("labels")
    status, body = await api.post(NP, nodepool(name, type="Edge", labels={"not a key!": "v"}))
    assert status == 422
    assert_status(body, 422, "Invalid")
    assert all(f.startswith("spec.labels") for f in cause_fields(body)), body
    assert "not a key!" in body["message"]
    await assert_absent(api, name)


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        ({"hostNetwork": "yes"}, "spec.hostNetwork"),
        ({"interConnectivity": 3}, "spec.interConnectivity"),
        ({"taints": [{"key": "k", "effect": "NoSchedule", "value": 5}]}, "spec.taints[0].value"),
    ],
)
async def test_values_of_the_wrong_type_are_invalid(api: Api, spec: dict[str, Any], field: str) -> None:
    name = uniq("types")
    status, body = await api.post(NP, nodepool(name, type="Edge", **spec))
    assert status == 422, body
    assert_status(body, 422, "Invalid")
    (cause,) = [c for c in causes(body) if c.get("field") == field]
    assert cause["reason"] == "FieldValueTypeInvalid"
    await assert_absent(api, name)


async def test_status_subresource_validates_status(api: Api) -> None:
    name = uniq("status")
    status, created = await api.post(NP, nodepool(name, type="Edge"))
    assert status == 201, created
    for bad, field in (({"readyNodeNum": -1}, "status.readyNodeNum"), ({"nodes": "n1"}, "status.nodes")):
        status, body = await api.patch(f"{NP}/{name}/status", {"status": bad})
        assert status == 422, body
        assert_status(body, 422, "Invalid")
        assert field in cause_fields(body)
    status, body = await api.patch(f"{NP}/{name}/status", {"status": {"readyNodeNum": 2, "nodes": ["n1"]}})
    assert status == 200, body
    assert body["status"]["readyNodeNum"] == 2


async def test_every_problem_is_reported_at_once(api: Api) -> None:
    name = uniq("many")
    pool = nodepool(name, type="Fog", taints=[{"key": "k", "effect": "Never"}], labels={"-x-": "v"})
    status, body = await api.post(NP, pool)
    assert status == 422
    assert {"spec.type", "spec.taints[0].effect"} <= cause_fields(body)
    assert any(f.startswith("spec.labels") for f in cause_fields(body))


# ---- size limit -------------------------------------------------------------------------------------


async def test_oversized_body_is_413_and_the_server_stays_healthy(api: Api, aggapi: AggapiServer) -> None:
    name = uniq("huge")
    pool = nodepool(name, type="Edge")
    pool["metadata"]["annotations"] = {"big": "x" * (4 * 1024 * 1024)}
    status, body = await api.post(NP, pool)
    assert status == 413
    assert_status(body, 413, "RequestEntityTooLarge")
    await assert_absent(api, name)
    # The connection pool and the server both recover: ordinary requests work afterwards.
    assert aggapi.readyz()[0] == 200
    status, body = await api.post(NP, nodepool(name, type="Edge"))
    assert status == 201, body


async def test_oversized_chunked_body_is_413(api: Api) -> None:
    """No Content-Length: the limit is enforced while reading."""

    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"apiVersion":"edge.aggapi.io/v1alpha1","kind":"NodePool","metadata":{"name":"chunky"},'
        for _ in range(4 * 16):
            yield b" " * 65536
        yield b"}"

    async with api.session.post(
        api.base + NP, data=chunks(), headers={"Content-Type": "application/json"}
    ) as r:
        body = await r.json(content_type=None)
        assert r.status == 413
    assert_status(body, 413, "RequestEntityTooLarge")


# ---- immutable fields -------------------------------------------------------------------------------


async def test_pool_type_is_immutable_via_put_and_patch(api: Api) -> None:
    name = uniq("immut")
    status, created = await api.post(NP, nodepool(name, type="Edge"))
    assert status == 201, created

    changed = {**created, "spec": {**created["spec"], "type": "Cloud"}}
    status, body = await api.put(f"{NP}/{name}", changed)
    assert status == 422
    assert_status(body, 422, "Invalid")
    assert "spec.type" in cause_fields(body)

    for patch, kind in (
        ({"spec": {"type": "Cloud"}}, "merge"),
        ([{"op": "replace", "path": "/spec/type", "value": "Cloud"}], "json"),
    ):
        status, body = await api.patch(f"{NP}/{name}", patch, kind)
        assert status == 422, (kind, body)
        assert_status(body, 422, "Invalid")
        assert "spec.type" in cause_fields(body)

    status, current = await api.get(f"{NP}/{name}")
    assert current["spec"]["type"] == "Edge"
    assert current["metadata"]["resourceVersion"] == created["metadata"]["resourceVersion"]


# ---- authentication ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "params"),
    [
        ("GET", NP, None),
        ("GET", NP, {"watch": "true"}),
        ("GET", f"{NP}/anything", None),
        ("POST", NP, None),
        ("GET", "/apis", None),
        ("GET", "/apis/edge.aggapi.io/v1alpha1", None),
        ("GET", "/openapi/v2", None),
        ("GET", "/metrics", None),
    ],
)
async def test_no_client_certificate_is_unauthorized(
    anon: Api, method: str, path: str, params: dict[str, str] | None
) -> None:
    payload = nodepool(uniq("anon"), type="Edge") if method == "POST" else None
    status, body = await anon.request(method, path, payload, params=params)
    assert status == 401
    assert_status(body, 401, "Unauthorized")


@pytest.mark.parametrize("path", ["/healthz", "/livez", "/readyz"])
async def test_health_endpoints_need_no_certificate(anon: Api, path: str) -> None:
    status, body = await anon.get(path)
    assert status == 200
    assert body == "ok"


# ---- content types ----------------------------------------------------------------------------------


async def test_create_with_unsupported_content_type_is_415(api: Api) -> None:
    name = uniq("plain")
    status, body = await api.post(NP, nodepool(name, type="Edge"), content_type="text/plain")
    assert status == 415
    assert_status(body, 415, "UnsupportedMediaType")
    assert "application/json" in body["message"]
    await assert_absent(api, name)


async def test_create_accepts_yaml(api: Api) -> None:
    name = uniq("yaml")
    doc = f"apiVersion: {GROUP}/v1alpha1\nkind: NodePool\nmetadata:\n  name: {name}\nspec:\n  type: Cloud\n"
    status, body = await api.post(NP, None, raw=doc.encode(), content_type="application/yaml")
    assert status == 201, body
    assert body["spec"]["type"] == "Cloud"


@pytest.mark.parametrize(
    "ctype", ["application/strategic-merge-patch+json", "application/apply-patch+yaml", "text/plain"]
)
async def test_unsupported_patch_types_are_415_naming_the_accepted_ones(api: Api, ctype: str) -> None:
    name = uniq("smp")
    status, created = await api.post(NP, nodepool(name, type="Edge"))
    assert status == 201, created
    status, body = await api.patch(f"{NP}/{name}", {"spec": {"labels": {"a": "b"}}}, ctype)
    assert status == 415
    assert_status(body, 415, "UnsupportedMediaType")
    assert "application/json-patch+json" in body["message"]
    assert "application/merge-patch+json" in body["message"]
    status, current = await api.get(f"{NP}/{name}")
    assert current["metadata"]["resourceVersion"] == created["metadata"]["resourceVersion"]


async def test_json_patch_with_failing_test_op_changes_nothing(api: Api) -> None:
    name = uniq("jptest")
    status, created = await api.post(NP, nodepool(name, type="Edge", labels={"zone": "a"}))
    assert status == 201, created
    patch = [
        {"op": "replace", "path": "/spec/labels/zone", "value": "b"},
        {"op": "test", "path": "/spec/type", "value": "Cloud"},
    ]
    status, body = await api.patch(f"{NP}/{name}", patch, "json")
    assert status == 422
    assert_status(body, 422, "Invalid")
    status, current = await api.get(f"{NP}/{name}")
    assert current["spec"]["labels"] == {"zone": "a"}
    assert current["metadata"]["resourceVersion"] == created["metadata"]["resourceVersion"]


async def test_json_patch_that_is_not_a_list_is_bad_request(api: Api) -> None:
    name = uniq("jpbad")
    status, created = await api.post(NP, nodepool(name, type="Edge"))
    assert status == 201, created
    status, body = await api.patch(f"{NP}/{name}", {"op": "replace"}, "json")
    assert status == 400
    assert_status(body, 400, "BadRequest")


# ---- methods, paths and existence -------------------------------------------------------------------


async def test_put_on_the_collection_is_method_not_allowed(api: Api) -> None:
    status, body = await api.put(NP, nodepool(uniq("coll"), type="Edge"))
    assert status == 405
    assert_status(body, 405, "MethodNotAllowed")


async def test_get_missing_object_is_not_found_with_details(api: Api) -> None:
    name = uniq("missing")
    status, body = await api.get(f"{NP}/{name}")
    assert status == 404
    assert_status(body, 404, "NotFound")
    assert body["details"] == {"name": name, "group": GROUP, "kind": "nodepools"}
    assert body["message"] == f'nodepools.{GROUP} "{name}" not found'


async def test_create_twice_is_already_exists(api: Api) -> None:
    name = uniq("twice")
    status, first = await api.post(NP, nodepool(name, type="Edge"))
    assert status == 201, first
    status, body = await api.post(NP, nodepool(name, type="Cloud"))
    assert status == 409
    assert_status(body, 409, "AlreadyExists")
    assert body["details"] == {"name": name, "group": GROUP, "kind": "nodepools"}
    status, current = await api.get(f"{NP}/{name}")
    assert current["metadata"]["uid"] == first["metadata"]["uid"]
    assert current["spec"]["type"] == "Edge"


@pytest.mark.parametrize(
    "path",
    [
        "/apis/edge.aggapi.io/v1alpha1/widgets",
        "/apis/edge.aggapi.io/v1alpha1/widgets/w1",
        "/apis/edge.aggapi.io/v9/nodepools",
        "/apis/nope.example.com/v1/nodepools",
        "/apis/edge.aggapi.io/v1alpha1/nodepools/x/nosuchsubresource",
    ],
)
async def test_unknown_resource_is_not_found(api: Api, path: str) -> None:
    status, body = await api.get(path)
    assert status == 404
    assert_status(body, 404, "NotFound")


async def test_namespaced_paths_do_not_exist_for_a_cluster_scoped_kind(api: Api) -> None:
    name = uniq("scoped")
    status, created = await api.post(NP, nodepool(name, type="Edge"))
    assert status == 201, created
    ns_np = "/apis/edge.aggapi.io/v1alpha1/namespaces/default/nodepools"
    for method, path, payload in (
        ("GET", ns_np, None),
        ("GET", f"{ns_np}/{name}", None),
        ("DELETE", f"{ns_np}/{name}", None),
        ("POST", ns_np, nodepool(uniq("scoped"), type="Edge")),
    ):
        status, body = await api.request(method, path, payload)
        assert status == 404, (method, path, body)
        assert_status(body, 404, "NotFound")
    status, _ = await api.get(f"{NP}/{name}")
    assert status == 200


# ---- list options -----------------------------------------------------------------------------------


async def test_unparsable_label_selector_is_bad_request(api: Api) -> None:
    status, body = await api.get(NP, params={"labelSelector": "a in ("})
    assert status == 400
    assert_status(body, 400, "BadRequest")


@pytest.mark.parametrize("selector", ["spec.type=Edge", "metadata.labels=x", "nonsense"])
async def test_unsupported_field_selector_is_bad_request(api: Api, selector: str) -> None:
    for params in ({"fieldSelector": selector}, {"fieldSelector": selector, "watch": "true"}):
        status, body = await api.get(NP, params=params)
        assert status == 400, (params, body)
        assert_status(body, 400, "BadRequest")


async def test_limit_must_be_a_non_negative_integer(api: Api) -> None:
    status, body = await api.get(NP, params={"limit": "abc"})
    assert status == 400  # a query parameter that does not decode: kube's DecodeParameters → BadRequest
    assert_status(body, 400, "BadRequest")
    status, body = await api.get(NP, params={"limit": "-1"})
    assert 400 <= status < 500
    assert body["kind"] == "Status" and body["code"] == status


async def test_resource_version_match_without_resource_version_is_invalid(api: Api) -> None:
    status, body = await api.get(NP, params={"resourceVersionMatch": "Exact"})
    assert status == 422
    assert_status(body, 422, "Invalid")
    assert body["details"]["kind"] == "ListOptions"
    assert body["details"]["group"] == "meta.k8s.io"
    assert cause_fields(body) == {"resourceVersionMatch"}


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"sendInitialEvents": "true"}, "sendInitialEvents"),
        ({"resourceVersionMatch": "Sometimes", "resourceVersion": "1"}, "resourceVersionMatch"),
        ({"watch": "true", "resourceVersionMatch": "NotOlderThan"}, "resourceVersionMatch"),
        ({"watch": "true", "sendInitialEvents": "true"}, "resourceVersionMatch"),
        (
            {"watch": "true", "sendInitialEvents": "true", "resourceVersionMatch": "NotOlderThan"},
            "allowWatchBookmarks",
        ),
    ],
)
async def test_inconsistent_list_and_watch_options_are_invalid(
    api: Api, params: dict[str, str], field: str
) -> None:
    status, body = await api.get(NP, params=params)
    assert status == 422, body
    assert_status(body, 422, "Invalid")
    assert body["details"]["kind"] == "ListOptions"
    assert field in cause_fields(body)


async def test_continue_with_a_resource_version_is_bad_request(api: Api) -> None:
    status, body = await api.get(NP, params={"continue": "x", "resourceVersion": "5"})
    assert status == 400
    assert_status(body, 400, "BadRequest")


async def test_bad_timeout_seconds_is_bad_request(api: Api) -> None:
    status, body = await api.get(NP, params={"watch": "true", "timeoutSeconds": "soon"})
    assert status == 400
    assert_status(body, 400, "BadRequest")


# ---- unknown fields ---------------------------------------------------------------------------------


def with_unknown_field(name: str) -> dict[str, Any]:
    pool = nodepool(name, type="Edge")
    pool["spec"]["foo"] = "bar"
    return pool


async def test_strict_field_validation_refuses_unknown_fields(api: Api) -> None:
    name = uniq("strict")
    status, body = await api.post(NP, with_unknown_field(name), params={"fieldValidation": "Strict"})
    assert status == 400
    assert_status(body, 400, "BadRequest")
    assert "spec.foo" in body["message"]
    await assert_absent(api, name)


@pytest.mark.parametrize("mode", ["Warn", None])
async def test_warn_field_validation_prunes_and_warns(api: Api, mode: str | None) -> None:
    name = uniq("warn")
    params = {"fieldValidation": mode} if mode else None
    status, headers, body = await send(api, "POST", NP, with_unknown_field(name), params=params)
    assert status == 201, body
    warnings = headers.getall("Warning", [])
    assert any(w.startswith("299 - ") and "spec.foo" in w for w in warnings), warnings
    assert "foo" not in body["spec"]
    status, stored = await api.get(f"{NP}/{name}")
    assert status == 200
    assert "foo" not in stored["spec"]


async def test_warn_on_patch_and_put_too(api: Api) -> None:
    name = uniq("warnupd")
    status, created = await api.post(NP, nodepool(name, type="Edge"))
    assert status == 201, created
    status, headers, body = await send(
        api, "PATCH", f"{NP}/{name}", {"spec": {"bar": 1}}, content_type="application/merge-patch+json"
    )
    assert status == 200, body
    assert any("spec.bar" in w for w in headers.getall("Warning", []))
    assert "bar" not in body["spec"]
    put = {**body, "spec": {**body["spec"], "baz": True}}
    status, headers, body = await send(api, "PUT", f"{NP}/{name}", put)
    assert status == 200, body
    assert any("spec.baz" in w for w in headers.getall("Warning", []))
    assert "baz" not in body["spec"]


async def test_ignore_field_validation_prunes_silently(api: Api) -> None:
    name = uniq("ignore")
    status, headers, body = await send(
        api, "POST", NP, with_unknown_field(name), params={"fieldValidation": "Ignore"}
    )
    assert status == 201, body
    assert "Warning" not in headers
    assert "foo" not in body["spec"]


# kube validates CreateOptions/UpdateOptions/PatchOptions with field.NotSupported and answers
# NewInvalid(meta.k8s.io CreateOptions) — a 422, not a 400 (apimachinery meta/v1/validation).
@pytest.mark.parametrize(
    ("param", "value", "field"),
    [("fieldValidation", "Nope", "fieldValidation"), ("dryRun", "Bogus", "dryRun")],
)
async def test_bogus_create_options_are_invalid(api: Api, param: str, value: str, field: str) -> None:
    name = uniq("opts")
    status, body = await api.post(NP, nodepool(name, type="Edge"), params={param: value})
    assert status == 422
    assert_status(body, 422, "Invalid")
    assert body["details"]["kind"] == "CreateOptions"
    assert body["details"]["group"] == "meta.k8s.io"
    (cause,) = causes(body)
    assert cause["field"] == field
    assert cause["reason"] == "FieldValueNotSupported"
    await assert_absent(api, name)


async def test_bogus_update_and_patch_options_are_invalid(api: Api) -> None:
    name = uniq("updopts")
    status, created = await api.post(NP, nodepool(name, type="Edge"))
    assert status == 201, created
    status, body = await api.put(f"{NP}/{name}", created, params={"dryRun": "Bogus"})
    assert_status(body, 422, "Invalid")
    assert body["details"]["kind"] == "UpdateOptions"
    status, body = await api.patch(f"{NP}/{name}", {"spec": {}}, params={"fieldValidation": "Nope"})
    assert_status(body, 422, "Invalid")
    assert body["details"]["kind"] == "PatchOptions"
    status, body = await api.delete(f"{NP}/{name}", params={"dryRun": "Bogus"})
    assert_status(body, 422, "Invalid")
    assert body["details"]["kind"] == "DeleteOptions"
    status, current = await api.get(f"{NP}/{name}")
    assert status == 200
    assert current["metadata"]["resourceVersion"] == created["metadata"]["resourceVersion"]


@pytest.mark.parametrize(
    ("params", "body", "field"),
    [
        ({"propagationPolicy": "Sideways"}, None, "propagationPolicy"),
        (
            {},
            {"kind": "DeleteOptions", "apiVersion": "v1", "propagationPolicy": "Sideways"},
            "propagationPolicy",
        ),
        ({}, {"kind": "DeleteOptions", "apiVersion": "v1", "dryRun": ["Bogus"]}, "dryRun"),
        (
            {},
            {"kind": "DeleteOptions", "orphanDependents": True, "propagationPolicy": "Background"},
            "propagationPolicy",
        ),
    ],
)
async def test_bad_delete_options_are_invalid(
    api: Api, params: dict[str, str], body: Any, field: str
) -> None:
    name = uniq("delopts")
    status, created = await api.post(NP, nodepool(name, type="Edge"))
    assert status == 201, created
    status, answer = await api.delete(f"{NP}/{name}", body, params=params)
    assert status == 422, answer
    assert_status(answer, 422, "Invalid")
    assert answer["details"]["kind"] == "DeleteOptions"
    assert field in cause_fields(answer)
    status, _ = await api.get(f"{NP}/{name}")
    assert status == 200


async def test_delete_body_that_is_not_delete_options_is_bad_request(api: Api) -> None:
    name = uniq("delbody")
    status, created = await api.post(NP, nodepool(name, type="Edge"))
    assert status == 201, created
    for raw in (b"{", b'{"kind": "NodePool"}', b"[1]"):
        status, body = await api.request("DELETE", f"{NP}/{name}", raw=raw)
        assert status == 400, (raw, body)
        assert_status(body, 400, "BadRequest")
    status, _ = await api.get(f"{NP}/{name}")
    assert status == 200


async def test_dry_run_all_validates_but_stores_nothing(api: Api) -> None:
    name = uniq("dry")
    status, body = await api.post(NP, nodepool(name, type="Edge"), params={"dryRun": "All"})
    assert status == 201, body
    assert body["metadata"]["name"] == name
    await assert_absent(api, name)
    status, body = await api.post(NP, nodepool(name, type="Fog"), params={"dryRun": "All"})
    assert_status(body, 422, "Invalid")
    status, created = await api.post(NP, nodepool(name, type="Edge"))
    assert status == 201, created
    status, body = await api.delete(f"{NP}/{name}", params={"dryRun": "All"})
    assert status == 200, body
    status, body = await api.patch(f"{NP}/{name}", {"spec": {"labels": {"a": "b"}}}, params={"dryRun": "All"})
    assert status == 200, body
    assert body["spec"]["labels"] == {"a": "b"}
    status, current = await api.get(f"{NP}/{name}")
    assert status == 200
    assert current["metadata"]["resourceVersion"] == created["metadata"]["resourceVersion"]


async def test_client_errors_never_drop_the_connection(aggapi: AggapiServer) -> None:
    """A handful of bad requests on one keep-alive connection, then a good one on the same connection."""
    async with api_client(aggapi) as one:
        await one.post(NP, None, raw=b"{")
        await one.get(f"{NP}/{uniq('nope')}")
        await one.put(NP, {})
        await one.patch(f"{NP}/{uniq('nope')}", {}, "application/strategic-merge-patch+json")
        status, body = await one.get(NP)
        assert status == 200, body
