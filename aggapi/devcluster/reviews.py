"""TokenReview, SubjectAccessReview and their self-service twins: create-only virtual resources that
are never stored, answered from the token file and the policy. Served through the routes' Delegate
hook and listed in discovery and OpenAPI like kube's own."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from aiohttp import web

from aggapi import discovery, openapi
from aggapi.auth.authn import UserInfo
from aggapi.auth.authz import Attributes
from aggapi.devcluster import protobuf
from aggapi.devcluster.kinds import SCHEMALESS, Passthrough
from aggapi.devcluster.policy import PolicyAuthorizer
from aggapi.http import body as bodies
from aggapi.http.handlers import respond
from aggapi.http.middleware import USER_KEY
from aggapi.http.requestinfo import RequestInfo
from aggapi.machinery import apierrors
from aggapi.registry.resource import FieldError, Obj, ResourceDef

AUTHN, AUTHZ = "authentication.k8s.io", "authorization.k8s.io"


def _review(group: str, resource: str, kind: str) -> ResourceDef:
    return ResourceDef(
        group=group,
        version="v1",
        resource=resource,
        kind=kind,
        singular=kind.lower(),
        namespaced=False,
        schema=SCHEMALESS,
        strategy=Passthrough(False),
        verbs=("create",),
        description=f"{kind} is answered by the devcluster and never stored.",
    )


DEFS: tuple[ResourceDef, ...] = (
    _review(AUTHN, "tokenreviews", "TokenReview"),
    _review(AUTHN, "selfsubjectreviews", "SelfSubjectReview"),
    _review(AUTHZ, "subjectaccessreviews", "SubjectAccessReview"),
    _review(AUTHZ, "selfsubjectaccessreviews", "SelfSubjectAccessReview"),
)


def user_status(u: UserInfo) -> dict[str, Any]:
    out: dict[str, Any] = {"username": u.name, "groups": list(u.groups)}
    if u.uid:
        out["uid"] = u.uid
    if u.extra:
        out["extra"] = {k: list(v) for k, v in u.extra.items()}
    return out


def attributes(user: UserInfo, spec: Mapping[str, Any]) -> Attributes:
    """kube's ResourceAttributesFrom/NonResourceAttributesFrom, after validation."""
    ra, nra = spec.get("resourceAttributes"), spec.get("nonResourceAttributes")
    errs: list[FieldError] = []
    if bool(ra) == bool(nra):
        errs.append(
            FieldError.invalid(
                "spec.resourceAttributes", ra, "exactly one of nonResourceAttributes or resourceAttributes"
            )
        )
    if errs:
        raise _invalid(errs)
    if isinstance(nra, Mapping):
        return Attributes(user, str(nra.get("verb", "")), False, str(nra.get("path", "")))
    assert isinstance(ra, Mapping)
    return Attributes(
        user,
        str(ra.get("verb", "")),
        True,
        "",
        str(ra.get("group", "")),
        str(ra.get("version", "")),
        str(ra.get("namespace", "")),
        str(ra.get("resource", "")),
        str(ra.get("subresource", "")),
        str(ra.get("name", "")),
    )


def _invalid(errs: list[FieldError]) -> apierrors.StatusError:
    return apierrors.invalid(
        AUTHZ, "SubjectAccessReview", "", [apierrors.Cause(e.reason, e.message, e.field) for e in errs]
    )


class Reviews:
    """The Delegate for authentication.k8s.io/v1 and authorization.k8s.io/v1."""

    def __init__(self, lookup_token: Callable[[str], UserInfo | None], authorizer: PolicyAuthorizer) -> None:
        self._lookup = lookup_token
        self._authz = authorizer
        self._openapi = {
            (g, v): openapi.openapi_v3_group_version(g, v, DEFS, title="devcluster")
            for g, v in discovery.served_group_versions(DEFS)
        }

    def serves(self, group: str, version: str) -> bool:
        return (group, version) in self._openapi

    def discovery(self, aggregated_version: str) -> list[dict[str, Any]]:
        if not aggregated_version:
            groups: list[dict[str, Any]] = discovery.api_group_list(DEFS)["groups"]
            return [{"kind": "APIGroup", "apiVersion": "v1", **g} for g in groups]
        items: list[dict[str, Any]] = discovery.aggregated_discovery(
            DEFS, discovery_version=aggregated_version
        )["items"]
        return items

    def openapi_v3_paths(self) -> dict[str, Any]:
        return {
            f"apis/{g}/{v}": {
                "serverRelativeURL": f"/openapi/v3/apis/{g}/{v}?hash={openapi.openapi_v3_hash(d)}"
            }
            for (g, v), d in self._openapi.items()
        }

    async def handle(self, request: web.Request, info: RequestInfo) -> web.StreamResponse:
        if request.path.startswith("/openapi/v3/"):
            return respond(self._openapi[(info.group, info.version)])
        if not info.resource:
            if request.method not in ("GET", "HEAD"):
                raise apierrors.method_not_allowed(request.method, request.path)
            return respond(discovery.api_resource_list(info.group, info.version, DEFS))
        rdef = self.find(info.group, info.resource)
        if rdef is None or info.name or info.namespace:
            raise apierrors.StatusError(404, "NotFound", "the server could not find the requested resource")
        if request.method != "POST":
            raise apierrors.method_not_allowed(request.method, rdef.resource)
        if protobuf.is_protobuf(request):  # kubectl auth can-i|whoami send these
            doc: Any = await protobuf.read_object(request)
        else:
            ctype = request.headers.get("Content-Type", "")
            doc = bodies.parse_document(await bodies.read_body(request), ctype)
        return respond(self.create(rdef, doc, request[USER_KEY]), status=201)

    def create(self, rdef: ResourceDef, doc: Any, caller: UserInfo) -> Obj:
        """The created review: the request with its status filled in (never stored)."""
        if not isinstance(doc, dict):
            raise apierrors.bad_request(f"the body must be a {rdef.kind} object")
        if doc.get("kind", rdef.kind) != rdef.kind:
            raise apierrors.bad_request(f"the body's kind {doc.get('kind')!r} is not {rdef.kind}")
        spec = doc.get("spec") or {}
        if not isinstance(spec, dict):
            raise apierrors.bad_request("spec must be an object")
        return {
            "kind": rdef.kind,
            "apiVersion": rdef.api_version,
            "metadata": doc.get("metadata") or {},
            "spec": spec,
            "status": self._answer(rdef.resource, spec, caller),
        }

    def find(self, group: str, resource: str) -> ResourceDef | None:
        return next((d for d in DEFS if d.group == group and d.resource == resource), None)

    def _answer(self, resource: str, spec: dict[str, Any], caller: UserInfo) -> dict[str, Any]:
        if resource == "tokenreviews":
            token = spec.get("token")
            if not token or not isinstance(token, str):
                raise apierrors.bad_request("token is required for TokenReview in authentication")
            user = self._lookup(token)
            if user is None:
                return {"user": {}}
            status: dict[str, Any] = {"authenticated": True, "user": user_status(user)}
            if spec.get("audiences"):
                status["audiences"] = list(spec["audiences"])
            return status
        if resource == "selfsubjectreviews":
            return {"userInfo": user_status(caller)}
        if resource == "selfsubjectaccessreviews":
            subject = caller
        else:
            name, groups = str(spec.get("user") or ""), spec.get("groups") or []
            if not name and not groups:
                raise _invalid(
                    [FieldError.required("spec.user", "at least one of user or group must be specified")]
                )
            extra = {str(k): tuple(v) for k, v in (spec.get("extra") or {}).items()}
            subject = UserInfo(name, tuple(str(g) for g in groups), str(spec.get("uid") or ""), extra)
        decision, denied = self._authz.review(attributes(subject, spec))
        out: dict[str, Any] = {"allowed": decision.allowed}
        if denied:
            out["denied"] = True
        if decision.reason:
            out["reason"] = decision.reason
        return out
