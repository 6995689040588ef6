"""The shadow's request router: decides where each request goes (remote or local) and records what the
cache keeps. Caching (cache.py), offline answers (local.py), filters and cloud health are separate
pieces it is given.

Online, reads (get/list/watch) of cached components are asked upstream as JSON (client-go's default
Accept `application/vnd.kubernetes.protobuf,application/json` allows it), recorded, filtered and
answered; a client that accepts only protobuf is proxied uncached (metric + one warning per component).
Watch events are written to disk before they are forwarded, so whatever a client saw survives kill -9.
Everything else streams through untouched. Non-watch requests beyond max_requests_inflight get 429."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterator, Sequence
from dataclasses import replace
from typing import Any

import aiohttp
import orjson
from aiohttp import web
from multidict import CIMultiDict

from edge.aio import within
from edge.shadow.cache import Cache, nonresource_key
from edge.shadow.config import ShadowConfig
from edge.shadow.filters import FilterRequest, ObjectFilter
from edge.shadow.local import Local, filter_request, run_filters
from edge.shadow.metrics import ShadowMetrics
from edge.shadow.remote import HOP_BY_HOP, Upstream, UpstreamUnavailable
from edge.shadow.requestinfo import ANONYMOUS_SCOPE, TOKEN_SCOPE, RequestInfo, parse
from edge.shadow.status import accepts_json, json_response, status_response, wants_transform

log = logging.getLogger(__name__)

LONG_RUNNING_SUBRESOURCES = frozenset({"log", "exec", "attach", "portforward", "proxy"})


def _discovery(path: str) -> bool:
    return path in ("/api", "/apis", "/version") or path.startswith(("/api/", "/apis/"))


class Proxy:
    def __init__(
        self,
        cfg: ShadowConfig,
        cache: Cache,
        upstream: Upstream,
        local: Local,
        metrics: ShadowMetrics,
        filters: Sequence[ObjectFilter],
        decided: asyncio.Event,
    ) -> None:
        self.cfg = cfg
        self.cache = cache
        self.upstream = upstream
        self.local = local
        self.metrics = metrics
        self.filters = tuple(filters)
        self.decided = decided
        self.online = False
        self.inflight = 0
        self._online_watches: set[aiohttp.ClientResponse] = set()
        self._warned_protobuf: set[str] = set()

    def set_online(self, online: bool) -> None:
        """Switch where new requests go. Online: every watch still held open offline is closed, and one
        that registers later is closed at once (Local.serving_watches). Offline: proxied watches are cut
        (clients re-watch and are served locally) and requests still waiting for upstream's headers
        are answered as if upstream were unreachable."""
        self.online = online
        self.local.serving_watches = not online
        self.metrics.cloud_healthy.set(1.0 if online else 0.0)
        if online:
            self.local.close_watches()
            return
        for resp in list(self._online_watches):
            resp.close()
        cut = self.upstream.cut_waiting()
        if cut:
            log.info("shadow: %d upstream requests still waiting for an answer cut", cut)

    @contextlib.contextmanager
    def online_watch(self, resp: aiohttp.ClientResponse) -> Iterator[None]:
        """While inside, `resp` (an upstream watch stream) is cut when the cloud becomes unreachable."""
        self._online_watches.add(resp)
        try:
            yield
        finally:
            self._online_watches.discard(resp)

    def close_watches(self) -> None:
        for resp in list(self._online_watches):
            resp.close()
        self.local.close_watches()

    async def handle(self, request: web.Request) -> web.StreamResponse:
        """A request on the loopback HTTP port."""
        return await self._handle(request, secure=False)

    async def handle_secure(self, request: web.Request) -> web.StreamResponse:
        """A request on the HTTPS port: pods. Without a bearer token it is never given the node's
        credentials (docs/shadow.md, "Credentials")."""
        return await self._handle(request, secure=True)

    async def _handle(self, request: web.Request, *, secure: bool) -> web.StreamResponse:
        info = parse(request.method, request.path, request.query, request.headers.get("User-Agent", ""))
        if "Authorization" in request.headers:
            info = replace(info, component=info.component + TOKEN_SCOPE)
        elif secure:
            info = replace(info, component=info.component + ANONYMOUS_SCOPE)
        long_running = info.verb == "watch" or info.subresource in LONG_RUNNING_SUBRESOURCES
        limit = self.cfg.max_requests_inflight
        if not long_running and limit and self.inflight >= limit:
            self.metrics.rejected.inc()
            return status_response(
                429, "Too many requests, please try again later.", info=info, headers={"Retry-After": "1"}
            )
        if not long_running:
            self.inflight += 1
            self.metrics.inflight.inc()
        try:
            return await self._route(request, info)
        finally:
            if not long_running:
                self.inflight -= 1
                self.metrics.inflight.dec()

    async def _route(self, request: web.Request, info: RequestInfo) -> web.StreamResponse:
        if request.headers.get("Upgrade"):
            return status_response(
                400, "upgrade requests (exec, attach, port-forward) are not proxied by the shadow"
            )
        body = await request.read()
        if not self.decided.is_set():  # the first health probe is still out (start-up)
            with contextlib.suppress(TimeoutError):
                await within(self.decided.wait(), self.cfg.probe_timeout + 1)
        if self.online:
            try:
                resp = await self._remote(request, info, body)
                self.metrics.requests.labels(info.client, info.verb, "remote").inc()
                return resp
            except UpstreamUnavailable as e:
                readable = request.method == "GET" and info.verb != "watch"
                if self.online and not readable:  # (went offline meanwhile: answered as offline)
                    return status_response(503, f"cloud unreachable: {e}", info=info)
                log.info("shadow: %s %s: upstream unreachable, answering from cache", info.verb, request.path)
        if info.component.endswith(ANONYMOUS_SCOPE):
            self.metrics.requests.labels(info.client, info.verb, "local").inc()
            return status_response(
                401, "Unauthorized: the cloud is unreachable and no bearer token was given"
            )
        resp, source = await self.local.handle(request, info, body)
        self.metrics.requests.labels(info.client, info.verb, source).inc()
        return resp

    # ---- online -----------------------------------------------------------------------------------

    async def _remote(self, request: web.Request, info: RequestInfo, body: bytes) -> web.StreamResponse:
        headers: CIMultiDict[str] = CIMultiDict(request.headers)
        accept = request.headers.get("Accept", "")
        plain_read = info.is_resource and info.is_read and not info.subresource
        cacheable = plain_read and self.cache.caches(info.component)
        freq = filter_request(info) if plain_read else None
        chosen = [f for f in self.filters if f.wants(freq)] if freq is not None else []
        if (cacheable or chosen) and (wants_transform(accept) or not accepts_json(accept)):
            if cacheable and not wants_transform(accept):
                self.metrics.protobuf_passthrough.labels(info.client).inc()
                if info.client not in self._warned_protobuf:
                    self._warned_protobuf.add(info.client)
                    log.warning(
                        "shadow: %s accepts only protobuf (Accept: %s): proxied but NOT cached; configure it "
                        "for JSON (kubelet: --kube-api-content-type=application/json), see docs/shadow.md",
                        info.client,
                        accept,
                    )
            cacheable, chosen = False, []
        records_write = (
            info.is_resource
            and info.verb in ("create", "update", "patch")
            and info.subresource in ("", "status")
            and self.cache.caches(info.component)
            and self.cache.get(info) is not None  # keeps cached copies current; caches nothing new
        )
        nonres = not info.is_resource and request.method == "GET" and self.cache.caches(info.component)
        nonres = nonres and _discovery(request.path)
        buffered = cacheable or bool(chosen) or nonres or records_write
        if cacheable or chosen:
            headers["Accept"] = "application/json"
        if buffered:
            headers.pop("Accept-Encoding", None)
        long_running = info.verb == "watch" or info.subresource in LONG_RUNNING_SUBRESOURCES
        anonymous = info.component.endswith(ANONYMOUS_SCOPE)
        resp = await self.upstream.request(
            request.method,
            request.path_qs,
            headers,
            body or None,
            streaming=long_running,
            anonymous=anonymous,
        )
        try:
            if 200 <= resp.status < 300 and info.component == info.client:  # the node's credentials
                await self._supersede(info)
            if info.verb == "watch" and (cacheable or chosen) and resp.status == 200:
                return await self._watch(request, info, resp, cacheable, chosen, freq)
            if not buffered or info.verb == "watch":
                return await self._stream(request, resp)
            raw = await within(resp.read(), self.cfg.request_timeout)
        finally:
            resp.release()
        ctype = resp.headers.get("Content-Type", "")
        if nonres and resp.status == 200:
            key = nonresource_key(info.component, request.path_qs, accept)
            await self.cache.record_nonresource(key, request.path, ctype, raw)
        if (cacheable or chosen or records_write) and ctype.startswith("application/json"):
            return await self._json_answer(
                request, info, resp.status, raw, cacheable, records_write, chosen, freq
            )
        return web.Response(status=resp.status, body=raw, headers=_copy_headers(resp))

    async def _supersede(self, info: RequestInfo) -> None:
        """The node's own status or Lease written upstream (a reconnect may still be pushing the one
        accepted offline): the offline one is older; it is dropped rather than pushed after this."""
        which = self.local.own_write(info)
        if which is None or (info.resource == "nodes" and info.subresource != "status"):
            return  # (a write of the Node object itself leaves its status alone)
        if await self.local.pending.clear(which):
            log.info("shadow: %s accepted offline superseded by %s's own write upstream", which, info.client)
            self.metrics.local_writes.labels("superseded").inc()

    async def _json_answer(
        self,
        request: web.Request,
        info: RequestInfo,
        code: int,
        raw: bytes,
        cacheable: bool,
        records_write: bool,
        chosen: list[ObjectFilter],
        freq: FilterRequest | None,
    ) -> web.StreamResponse:
        try:
            obj: Any = orjson.loads(raw)
        except orjson.JSONDecodeError:
            return web.Response(status=code, body=raw, content_type="application/json")
        if not isinstance(obj, dict) or obj.get("kind") == "Status":
            if cacheable and code == 404 and info.verb == "get":
                await self.cache.record_not_found(info)
            return web.Response(status=code, body=raw, content_type="application/json")
        if 200 <= code < 300:
            if cacheable and info.verb == "get":
                await self.cache.record_get(info, obj)
            elif cacheable and info.verb == "list":
                await self.cache.record_list(info, obj, request.query.get("continue", ""))
            elif records_write:
                await self.cache.record_get(info, obj)
        if not chosen or freq is None:
            return web.Response(status=code, body=raw, content_type="application/json")
        # A filter returns the very object it was given when it changes nothing: then the upstream bytes
        # are the answer, and the JSON is not serialized again.
        if info.verb == "list":
            given = obj.get("items") or []
            outs = [run_filters(chosen, freq, i) for i in given]
            if all(o is i for o, i in zip(outs, given, strict=True)):
                return web.Response(status=code, body=raw, content_type="application/json")
            return json_response({**obj, "items": [o for o in outs if o is not None]}, status=code)
        out = run_filters(chosen, freq, obj)
        if out is None:
            return status_response(404, f'{info.group_resource} "{info.name}" not found', info=info)
        if out is obj:
            return web.Response(status=code, body=raw, content_type="application/json")
        return json_response(out, status=code)

    async def _stream(self, request: web.Request, resp: aiohttp.ClientResponse) -> web.StreamResponse:
        out = web.StreamResponse(status=resp.status, headers=_copy_headers(resp))
        await out.prepare(request)
        self._online_watches.add(resp)
        try:
            async for chunk in resp.content.iter_any():
                await out.write(chunk)
        except (aiohttp.ClientError, ConnectionError, TimeoutError) as e:
            log.debug("shadow: stream %s ended: %r", request.path, e)
        finally:
            self._online_watches.discard(resp)
        return out

    async def _watch(
        self,
        request: web.Request,
        info: RequestInfo,
        resp: aiohttp.ClientResponse,
        cacheable: bool,
        chosen: list[ObjectFilter],
        freq: FilterRequest | None,
    ) -> web.StreamResponse:
        out = web.StreamResponse(status=200, headers=_copy_headers(resp))
        await out.prepare(request)
        self._online_watches.add(resp)
        buf = bytearray()
        try:
            async for chunk in resp.content.iter_any():
                buf += chunk
                while (i := buf.find(b"\n")) >= 0:
                    line = bytes(buf[:i])
                    del buf[: i + 1]
                    if line.strip():
                        data = await self._event(info, line, cacheable, chosen, freq)
                        if data is not None:
                            await out.write(data)
        except (aiohttp.ClientError, ConnectionError, TimeoutError) as e:
            log.debug("shadow: watch %s ended: %r", request.path, e)
        finally:
            self._online_watches.discard(resp)
        return out

    async def _event(
        self,
        info: RequestInfo,
        line: bytes,
        cacheable: bool,
        chosen: list[ObjectFilter],
        freq: FilterRequest | None,
    ) -> bytes | None:
        try:
            event = orjson.loads(line)
            etype, obj = event["type"], event["object"]
        except (orjson.JSONDecodeError, KeyError, TypeError):
            return line + b"\n"
        if not isinstance(obj, dict) or etype in ("BOOKMARK", "ERROR"):
            return line + b"\n"
        if cacheable:
            await self.cache.record_event(info, etype, obj, str(obj.get("kind", "")))
        if not chosen or freq is None:
            return line + b"\n"
        filtered = run_filters(chosen, freq, obj)
        if filtered is None:
            return None  # dropped (docs/shadow.md: a filtered-out object's events are not sent)
        if filtered is obj:
            return line + b"\n"
        return orjson.dumps({"type": etype, "object": filtered}) + b"\n"


def _copy_headers(resp: aiohttp.ClientResponse) -> CIMultiDict[str]:
    out: CIMultiDict[str] = CIMultiDict()
    for k, v in resp.headers.items():
        if k.lower() not in HOP_BY_HOP:
            out.add(k, v)
    return out
