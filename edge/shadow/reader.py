"""The shadow reading the cluster for itself: a `KubeReader` (edge.shadow.filters.topology) whose lists and
watches take the shadow's own caching path, as component `aggapi-edge` with the node's credentials.

Online they go upstream and are recorded in the disk cache under `aggapi-edge/` exactly like a client's
reads (views, watch events on disk before they are used, relisted on reconnect); when the cloud is
unreachable they are answered from that cache, and a watch is held open until the reconnect closes it
with what changed meanwhile. So what the filters know (Services, this Node, NodePools) survives a reboot
offline. In-process rather than through the shadow's own port: no loopback hop, no in-flight slot, and
never filtered (the filters must see the real objects)."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

import aiohttp
import orjson

from edge.aio import within
from edge.shadow.local import OfflineWatch
from edge.shadow.proxy import Proxy
from edge.shadow.remote import UpstreamUnavailable
from edge.shadow.requestinfo import RequestInfo, parse
from edge.shadow.selectors import Selection

log = logging.getLogger(__name__)

USER_AGENT = "aggapi-edge/0.1.0 (shadow topology)"  # component "aggapi-edge"
HEADERS = {"Accept": "application/json", "User-Agent": USER_AGENT}
WATCH_ERRORS = (aiohttp.ClientError, ConnectionError, TimeoutError)
Items = list[dict[str, Any]]  # (`list` is a method name below)


class ReadError(Exception):
    """Upstream refused the read, or (offline) the shadow has not cached it."""


class Unavailable(ReadError):
    """Upstream answered 429 or 5xx (an aggregated API whose server is down answers 503)."""


class ShadowReader:
    def __init__(self, proxy: Proxy, *, watch_seconds: int = 300) -> None:
        self.proxy = proxy
        self.watch_seconds = watch_seconds  # server-side timeoutSeconds of an upstream watch

    async def list(self, path: str) -> tuple[Items, str]:
        base, query = _split(path)
        info = parse("GET", base, query, USER_AGENT)
        await self._decided()
        view = self.proxy.cache.covering_view(info)
        if self.proxy.online:
            try:
                return await self._list_remote(info, base, query)
            except UpstreamUnavailable as e:  # as for clients: an unreachable upstream → the cache
                log.debug("shadow: %s: upstream unreachable (%s), reading the cache", path, e)
            except Unavailable as e:  # e.g. aggapi down behind kube-apiserver: the last known is better
                if view is None:
                    raise
                log.info("shadow: %s, using the cached list until it answers", e)
        self.proxy.metrics.requests.labels(info.client, "list", "cache").inc()
        view = self.proxy.cache.covering_view(info)
        if view is None:
            raise ReadError(f"list {path}: the cloud is unreachable and the shadow has not cached it")
        items = self.proxy.cache.select(view, _selection(info))
        return items, self.proxy.cache.newest_rv(view, items)

    async def watch(self, path: str, rv: str) -> AsyncIterator[tuple[str, dict[str, Any]]]:
        base, query = _split(path)
        query = {**query, "watch": "1", "resourceVersion": rv, "allowWatchBookmarks": "true"}
        query["timeoutSeconds"] = str(self.watch_seconds)
        info = parse("GET", base, query, USER_AGENT)
        await self._decided()
        if self.proxy.online:  # an unreachable upstream is raised (a client's watch gets 503 then)
            path_qs = f"{base}?{urlencode(query)}"
            resp = await self.proxy.upstream.request("GET", path_qs, HEADERS, None, streaming=True)
            self.proxy.metrics.requests.labels(info.client, "watch", "remote").inc()
            try:
                async for event in self._watch_remote(info, resp):
                    yield event
            finally:
                resp.release()
            return
        self.proxy.metrics.requests.labels(info.client, "watch", "cache").inc()
        async for event in self._watch_cached(info):
            yield event

    # ---- online -----------------------------------------------------------------------------------

    async def _list_remote(self, info: RequestInfo, base: str, query: dict[str, str]) -> tuple[Items, str]:
        path_qs = f"{base}?{urlencode(query)}" if query else base
        resp = await self.proxy.upstream.request("GET", path_qs, HEADERS, None)
        try:
            raw = await within(resp.read(), self.proxy.cfg.request_timeout)
        finally:
            resp.release()
        self.proxy.metrics.requests.labels(info.client, "list", "remote").inc()
        body = _json(raw)
        if resp.status != 200 or body is None:
            error = Unavailable if resp.status == 429 or resp.status >= 500 else ReadError
            raise error(f"list {path_qs}: upstream answered {resp.status}: {_message(body, raw)}")
        if self.proxy.cache.caches(info.component):
            await self.proxy.cache.record_list(info, body, "")
        meta = body.get("metadata") or {}
        items = [i for i in body.get("items") or [] if isinstance(i, dict)]
        return items, str(meta.get("resourceVersion") or "")

    async def _watch_remote(
        self, info: RequestInfo, resp: aiohttp.ClientResponse
    ) -> AsyncIterator[tuple[str, dict[str, Any]]]:
        if resp.status != 200:
            raw = b""
            with contextlib.suppress(*WATCH_ERRORS):
                raw = await within(resp.read(), self.proxy.cfg.request_timeout)
            raise ReadError(
                f"watch {info.path}: upstream answered {resp.status}: {_message(_json(raw), raw)}"
            )
        caching = self.proxy.cache.caches(info.component)
        buf = bytearray()
        with self.proxy.online_watch(resp):  # cut when the cloud goes away; then the cache answers
            try:
                async for chunk in resp.content.iter_any():
                    buf += chunk
                    while (i := buf.find(b"\n")) >= 0:
                        event = _json(bytes(buf[:i]))
                        del buf[: i + 1]
                        obj = event.get("object") if event is not None else None
                        if event is None or not isinstance(obj, dict):
                            continue
                        etype = str(event.get("type", ""))
                        if caching and etype in ("ADDED", "MODIFIED", "DELETED"):  # on disk before use
                            await self.proxy.cache.record_event(info, etype, obj, str(obj.get("kind", "")))
                        yield etype, obj
            except WATCH_ERRORS as e:
                log.debug("shadow: watch %s ended: %r", info.path, e)

    # ---- offline ----------------------------------------------------------------------------------

    async def _watch_cached(self, info: RequestInfo) -> AsyncIterator[tuple[str, dict[str, Any]]]:
        """Nothing changes while offline: held open until the reconnect sends what changed and closes it
        (reconcile.py), exactly as a client's offline watch."""
        view = self.proxy.cache.covering_view(info)
        if view is None:
            raise ReadError(f"watch {info.path}: the cloud is unreachable and the shadow has not cached it")
        watch = OfflineWatch(info, _selection(info), view, bookmarks=True)
        self.proxy.local.register(watch)
        try:
            while (item := await watch.queue.get()) is not None:
                yield item
        finally:
            self.proxy.local.watches.discard(watch)

    async def _decided(self) -> None:
        """At start-up, wait (bounded) for the first health probe, as the proxy does for clients."""
        if not self.proxy.decided.is_set():
            with contextlib.suppress(TimeoutError):
                await within(self.proxy.decided.wait(), self.proxy.cfg.probe_timeout + 1)


def _split(path: str) -> tuple[str, dict[str, str]]:
    u = urlsplit(path)
    return u.path, dict(parse_qsl(u.query))


def _selection(info: RequestInfo) -> Selection:
    return Selection.parse(info.namespace, info.label_selector, info.field_selector)


def _json(raw: bytes) -> dict[str, Any] | None:
    try:
        out = orjson.loads(raw) if raw.strip() else None
    except orjson.JSONDecodeError:
        return None
    return out if isinstance(out, dict) else None


def _message(body: dict[str, Any] | None, raw: bytes) -> str:
    if body is not None and isinstance(body.get("message"), str):
        return str(body["message"])
    return raw[:200].decode(errors="replace")
