"""The informer's transport: raw JSON list and watch against kube-apiserver through a kubernetes-asyncio
ApiClient (its kubeconfig / in-cluster credentials, token refresh and TLS), without model classes:
objects stay plain dicts exactly as the API serves them."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp

from aggapi.controllers.informer import Expired, ListWatchError, Obj

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ListWatchConfig:
    path: str  # a collection, e.g. /api/v1/nodes
    label_selector: str = ""
    field_selector: str = ""
    page_size: int = 500
    request_timeout: float = 60.0  # one list page, start to end
    connect_timeout: float = 10.0
    # Server-side timeoutSeconds of a watch, times a random factor in [1, 2) (client-go's minWatchTimeout
    # spreading); the client gives up on a silent stream `watch_slack` seconds after that.
    watch_timeout: float = 300.0
    watch_slack: float = 30.0


class KubeListWatcher:
    def __init__(
        self, api: Any, config: ListWatchConfig, *, rng: Callable[[], float] = random.random
    ) -> None:
        self._api = api  # kubernetes_asyncio.client.ApiClient
        self.config = config
        self._rng = rng

    def _selectors(self) -> list[tuple[str, str]]:
        q = []
        if self.config.label_selector:
            q.append(("labelSelector", self.config.label_selector))
        if self.config.field_selector:
            q.append(("fieldSelector", self.config.field_selector))
        return q

    async def _get(self, query: list[tuple[str, str]], timeout: aiohttp.ClientTimeout) -> Any:
        try:
            return await self._api.call_api(
                self.config.path,
                "GET",
                query_params=query,
                header_params={"Accept": "application/json"},
                auth_settings=["BearerToken"],
                _preload_content=False,
                _request_timeout=timeout,
            )
        except (aiohttp.ClientError, OSError) as exc:
            raise ListWatchError(f"GET {self.config.path}: {exc or type(exc).__name__}") from exc

    async def list(self) -> tuple[list[Obj], str]:
        c = self.config
        items: list[Obj] = []
        token, rv = "", ""
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=c.connect_timeout)
        while True:
            query = [*self._selectors(), ("limit", str(c.page_size))]
            if token:
                query.append(("continue", token))
            try:
                async with asyncio.timeout(c.request_timeout):
                    resp = await self._get(query, timeout)
                    try:
                        await _check(resp, c.path)
                        body = await resp.json(loads=json.loads, content_type=None)
                    finally:
                        resp.release()
            except TimeoutError:
                raise ListWatchError(f"GET {c.path}: no answer within {c.request_timeout:g}s") from None
            except (aiohttp.ClientError, ValueError) as exc:
                raise ListWatchError(f"GET {c.path}: {exc or type(exc).__name__}") from exc
            items.extend(body.get("items") or [])
            meta = body.get("metadata") or {}
            token, rv = str(meta.get("continue") or ""), str(meta.get("resourceVersion") or "")
            if not token:
                return items, rv

    @contextlib.asynccontextmanager
    async def watch(self, resource_version: str) -> AsyncIterator[AsyncIterator[Obj]]:
        c = self.config
        seconds = int(c.watch_timeout * (1 + self._rng()))
        query = [
            *self._selectors(),
            ("watch", "true"),
            ("resourceVersion", resource_version),
            ("allowWatchBookmarks", "true"),
            ("timeoutSeconds", str(seconds)),
        ]
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=c.connect_timeout)
        try:
            async with asyncio.timeout(c.request_timeout):
                resp = await self._get(query, timeout)
        except TimeoutError:
            raise ListWatchError(f"watch {c.path}: no answer within {c.request_timeout:g}s") from None
        events = _events(resp, c.path, asyncio.get_running_loop().time() + seconds + c.watch_slack)
        try:
            await _check(resp, c.path)
            yield events
        finally:
            await events.aclose()
            resp.release()


async def _events(resp: Any, path: str, deadline: float) -> AsyncGenerator[Obj, None]:
    loop = asyncio.get_running_loop()
    while True:
        left = deadline - loop.time()
        if left <= 0:
            log.info("watch %s: the server did not end the watch in time; restarting it", path)
            return
        try:
            async with asyncio.timeout(left):
                line = await resp.content.readline()
        except TimeoutError:
            continue  # the deadline check above ends it
        except (aiohttp.ClientError, OSError, ValueError) as exc:
            raise ListWatchError(f"watch {path}: {exc or type(exc).__name__}") from exc
        if not line:
            return  # the server ended the watch (timeoutSeconds): resume from the last resourceVersion
        if not line.strip():
            continue
        try:
            ev = json.loads(line)
        except ValueError as exc:
            raise ListWatchError(f"watch {path}: undecodable event: {exc}") from exc
        if not isinstance(ev, dict):
            raise ListWatchError(f"watch {path}: an event that is not an object")
        yield ev


async def _check(resp: Any, path: str) -> None:
    if resp.status == 200:
        return
    try:
        async with asyncio.timeout(10):
            text = await resp.text()
    except (TimeoutError, aiohttp.ClientError, OSError, ValueError):
        text = ""
    message = text.strip()
    with contextlib.suppress(ValueError, AttributeError):
        message = json.loads(text).get("message", message)
    if resp.status == 410:
        raise Expired(f"GET {path}: {message or 'resourceVersion expired'}")
    raise ListWatchError(f"GET {path}: {resp.status} {message}")
