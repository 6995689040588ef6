"""The request pipeline, outermost first: metrics → errors → authentication → authorization.
Every error anywhere below becomes a kube Status here, in one place."""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Sequence

from aiohttp import web
from aiohttp.typedefs import Middleware

from aggapi.auth.authn import Authenticator, UserInfo
from aggapi.auth.authz import ALWAYS_ALLOW_PATHS, Attributes, Authorizer, path_allowed
from aggapi.http.requestinfo import RequestInfo, parse
from aggapi.machinery import apierrors
from aggapi.metrics import Metrics

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

INFO_KEY = web.RequestKey("request_info", RequestInfo)
USER_KEY = web.RequestKey("user", UserInfo)
ANONYMOUS = UserInfo("system:anonymous", ("system:unauthenticated",))


def status_response(err: apierrors.StatusError) -> web.Response:
    from aggapi.http.options import encode

    resp = web.Response(body=encode(err.status()), status=err.code, content_type="application/json")
    if err.retry_after:
        resp.headers["Retry-After"] = str(err.retry_after)
    return resp


def request_info(request: web.Request) -> RequestInfo:
    info = request.get(INFO_KEY)
    if info is None:
        info = parse(request.method, request.path, dict(request.query))
        request[INFO_KEY] = info
    return info


def metrics_mw(metrics: Metrics) -> Middleware:
    @web.middleware
    async def mw(request: web.Request, handler: Handler) -> web.StreamResponse:
        info = request_info(request)
        verb = info.verb.upper()
        resource = info.resource or request.path
        started = time.monotonic()
        metrics.inflight.inc()
        code = 500
        try:
            resp = await handler(request)
            code = resp.status
            return resp
        except web.HTTPException as exc:
            code = exc.status
            raise
        finally:
            metrics.inflight.dec()
            if info.is_resource:
                metrics.requests.labels(verb, resource, str(code)).inc()
                metrics.latency.labels(verb, resource).observe(time.monotonic() - started)
            else:
                metrics.requests.labels(verb, "", str(code)).inc()

    return mw


@web.middleware
async def errors_mw(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except apierrors.StatusError as err:
        return status_response(err)
    except web.HTTPNotFound:
        return status_response(
            apierrors.StatusError(404, "NotFound", "the server could not find the requested resource")
        )
    except web.HTTPMethodNotAllowed:
        return status_response(apierrors.method_not_allowed(request.method, request.path))
    except web.HTTPException:
        raise
    except Exception as exc:  # the one place a bug turns into a 500 instead of a dropped connection
        log.exception("internal error serving %s %s", request.method, request.path)
        return status_response(apierrors.internal(type(exc).__name__))


def authn_mw(authenticator: Authenticator, anonymous_paths: Sequence[str] = ALWAYS_ALLOW_PATHS) -> Middleware:
    @web.middleware
    async def mw(request: web.Request, handler: Handler) -> web.StreamResponse:
        user = await authenticator.authenticate(request)
        if user is None:
            if not path_allowed(request.path, anonymous_paths):
                raise apierrors.unauthorized()
            user = ANONYMOUS
        request[USER_KEY] = user
        return await handler(request)

    return mw


def authz_mw(authorizer: Authorizer, always_allow: Sequence[str] = ALWAYS_ALLOW_PATHS) -> Middleware:
    @web.middleware
    async def mw(request: web.Request, handler: Handler) -> web.StreamResponse:
        info = request_info(request)
        user = request[USER_KEY]
        if not path_allowed(request.path, always_allow):
            attrs = Attributes(
                user,
                info.verb,
                info.is_resource,
                request.path,
                info.group,
                info.version,
                info.namespace,
                info.resource,
                info.subresource,
                info.name,
            )
            decision = await authorizer.authorize(attrs)
            if not decision.allowed:
                raise apierrors.forbidden(_forbidden_message(attrs, decision.reason))
        return await handler(request)

    return mw


def _forbidden_message(a: Attributes, reason: str) -> str:
    if not a.is_resource:
        msg = f'User "{a.user.name}" cannot {a.verb} path "{a.path}"'
    else:
        res = f"{a.resource}/{a.subresource}" if a.subresource else a.resource
        qualified = f"{a.resource}.{a.group}" if a.group else a.resource
        msg = f'{qualified} "{a.name}" is forbidden: ' if a.name else f"{qualified} is forbidden: "
        msg += f'User "{a.user.name}" cannot {a.verb} resource "{res}" in API group "{a.group}"'
        msg += f' in the namespace "{a.namespace}"' if a.namespace else " at the cluster scope"
    return msg + (f": {reason}" if reason else "")
