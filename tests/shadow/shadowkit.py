"""Helpers for the shadow-apiserver tests: a TCP relay between the shadow and the devcluster that a test
can cut (a real network cut: connections reset, new ones refused), stall (accepted, never forwarded),
freeze (open connections go silent) and restore; an async JSON client; polling without timing assertions."""

from __future__ import annotations

import asyncio
import contextlib
import json
import ssl
import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from dataclasses import replace
from pathlib import Path
from typing import Any, TypeVar

import aiohttp

from edge.shadow.config import ShadowConfig
from edge.shadow.server import Shadow

T = TypeVar("T")
KUBELET_UA = "kubelet/v1.37.0 (linux/amd64) kubernetes/shadowtest"
NODE = "edge-1"


async def eventually(what: str, probe: Callable[[], Awaitable[T | None]], timeout: float = 20.0) -> T:
    deadline = time.monotonic() + timeout
    while True:
        got = await probe()
        if got is not None:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout:.0f}s: {what}")
        await asyncio.sleep(0.05)


class Relay:
    """127.0.0.1:<port> → target, byte for byte. `accepted` counts the connections it accepted and `sent`
    the bytes it forwarded towards the target (what reached upstream through it), across cuts."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = 0
        self._flowing = asyncio.Event()
        self._flowing.set()
        self._moving = asyncio.Event()  # cleared: open connections stop forwarding (gone silent)
        self._moving.set()
        self._server: asyncio.Server | None = None
        self._conns: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self.accepted = 0
        self.sent = 0

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def cut(self) -> None:
        """Stop listening (new connections are refused) and reset every open connection."""
        if self._server is not None:
            self._server.close()
            self._server = None
        for w in list(self._conns):
            w.transport.abort()
        self._conns.clear()
        for t in list(self._tasks):
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def stall(self, stalled: bool) -> None:
        """While stalled, new connections are accepted but not forwarded (a black hole)."""
        if stalled:
            self._flowing.clear()
        else:
            self._flowing.set()

    def freeze(self, frozen: bool) -> None:
        """While frozen, open connections stay open but forward nothing (a link gone silent)."""
        if frozen:
            self._moving.clear()
        else:
            self._moving.set()

    async def restore(self) -> None:
        self._flowing.set()
        self._moving.set()
        if self._server is None:
            await self.start()

    async def close(self) -> None:
        await self.cut()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self._conns.add(writer)
        self.accepted += 1
        try:
            await self._flowing.wait()
            up_r, up_w = await asyncio.open_connection("127.0.0.1", self.target_port)
            self._conns.add(up_w)
            await asyncio.gather(self._pipe(reader, up_w, upward=True), self._pipe(up_r, writer))
        except (OSError, asyncio.CancelledError):
            pass
        finally:
            writer.transport.abort()
            self._conns.discard(writer)
            self._tasks.discard(task)

    async def _pipe(self, r: asyncio.StreamReader, w: asyncio.StreamWriter, *, upward: bool = False) -> None:
        try:
            while data := await r.read(65536):
                await self._moving.wait()
                if upward:
                    self.sent += len(data)
                w.write(data)
                await w.drain()
        finally:
            w.transport.abort()


class Kube:
    """A small async JSON client (admin against the devcluster, or anyone against the shadow)."""

    def __init__(
        self, base: str, session: aiohttp.ClientSession, ua: str = KUBELET_UA, token: str = ""
    ) -> None:
        self.base = base.rstrip("/")
        self.session = session
        self.ua = ua
        self.token = token

    async def req(
        self, method: str, path: str, body: Any = None, ctype: str = "application/json", accept: str = ""
    ) -> tuple[int, Any]:
        headers = {"User-Agent": self.ua, "Accept": accept or "application/json"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        data = None
        if body is not None:
            headers["Content-Type"] = ctype
            data = json.dumps(body)
        async with self.session.request(method, self.base + path, data=data, headers=headers) as r:
            raw = await r.read()
            try:
                return r.status, json.loads(raw) if raw else None
            except ValueError:
                return r.status, raw.decode(errors="replace")

    async def get(self, path: str, **kw: Any) -> tuple[int, Any]:
        return await self.req("GET", path, **kw)

    async def watch(self, path: str) -> AsyncGenerator[dict[str, Any], None]:
        """Events of a watch until the server ends the stream."""
        headers = {"User-Agent": self.ua, "Accept": "application/json"}
        async with self.session.get(self.base + path, headers=headers) as r:
            assert r.status == 200, await r.text()
            buf = b""
            async for chunk in r.content.iter_any():
                buf += chunk
                while b"\n" in buf:
                    line, buf = buf.split(b"\n", 1)
                    if line.strip():
                        yield json.loads(line)


def names(listobj: dict[str, Any]) -> list[str]:
    return sorted(i["metadata"]["name"] for i in listobj["items"])


def pod(name: str, ns: str, labels: dict[str, str], node: str = NODE, **extra: Any) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": ns, "labels": labels},
        "spec": {"nodeName": node, "containers": [{"name": "c", "image": "busybox"}], **extra},
    }


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


def shadow_config(base: ShadowConfig, **overrides: Any) -> ShadowConfig:
    return replace(base, **overrides)


@contextlib.asynccontextmanager
async def running(cfg: ShadowConfig, **kw: Any) -> AsyncIterator[Shadow]:
    shadow = Shadow(cfg, **kw)
    await shadow.start()
    try:
        yield shadow
    finally:
        await shadow.stop()


async def wait_mode(shadow: Shadow, online: bool) -> None:
    async def probe() -> bool | None:
        return True if shadow.proxy.online is online and shadow.health.decided.is_set() else None

    await eventually(f"shadow {'online' if online else 'offline'}", probe)


def admin_ssl(ca: Path, cert: Path, key: Path) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(ca))
    ctx.load_cert_chain(str(cert), str(key))
    return ctx
