"""Run the real `aggapi serve` as a subprocess (so tests can restart it) and talk to it as clients do:
an aiohttp client with the admin client certificate, and the real kubectl."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from aggapi.devlab import LabPKI
from aggapi.kubeconfig import write_kubeconfig
from support.etcd import free_port

KUBECTL = Path(sys.executable).parent / "kubectl"


@dataclass
class AggapiServer:
    pki: LabPKI
    etcd_servers: str
    workdir: Path
    prefix: str = field(default_factory=lambda: f"/t-{uuid.uuid4().hex[:8]}")
    port: int = field(default_factory=free_port)
    extra_args: tuple[str, ...] = ()
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    @property
    def log_file(self) -> Path:
        return self.workdir / f"aggapi-{self.port}.log"

    def start(self, *, wait: bool = True) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        log = self.log_file.open("ab")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "aggapi",
                "serve",
                "--bind-address=127.0.0.1",
                f"--secure-port={self.port}",
                f"--tls-cert-file={self.pki.serving_cert}",
                f"--tls-private-key-file={self.pki.serving_key}",
                f"--client-ca-file={self.pki.ca}",
                f"--etcd-servers={self.etcd_servers}",
                f"--etcd-prefix={self.prefix}",
                *self.extra_args,
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        if wait:
            self.wait_ready()

    def readyz(self) -> tuple[int, str]:
        ctx = ssl.create_default_context(cafile=str(self.pki.ca))
        try:
            with urllib.request.urlopen(f"{self.url}/readyz?verbose", timeout=5, context=ctx) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode()

    def wait_ready(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"aggapi exited: {self.log_file.read_text()[-3000:]}")
            try:
                if self.readyz()[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"aggapi not ready in {timeout}s: {self.log_file.read_text()[-3000:]}")

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)

    def kubeconfig(self, path: Path) -> Path:
        write_kubeconfig(
            path,
            server=self.url,
            ca_pem=self.pki.ca.read_bytes(),
            cert_path=self.pki.admin_cert,
            key_path=self.pki.admin_key,
        )
        return path


def client_ssl(pki: LabPKI, *, with_cert: bool = True) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(pki.ca))
    if with_cert:
        ctx.load_cert_chain(str(pki.admin_cert), str(pki.admin_key))
    return ctx


NP = "/apis/edge.aggapi.io/v1alpha1/nodepools"


def nodepool(name: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "edge.aggapi.io/v1alpha1",
        "kind": "NodePool",
        "metadata": {"name": name},
        "spec": spec,
    }


class Api:
    """A thin JSON client: returns (status, body) and never raises on HTTP errors."""

    def __init__(self, base: str, session: aiohttp.ClientSession) -> None:
        self.base = base
        self.session = session

    async def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        raw: bytes | None = None,
        content_type: str = "application/json",
        headers: dict[str, str] | None = None,
        params: dict[str, str] | None = None,
    ) -> tuple[int, Any]:
        hdrs = {"Content-Type": content_type, **(headers or {})}
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        async with self.session.request(
            method, self.base + path, data=data, headers=hdrs, params=params
        ) as r:
            text = await r.read()
            try:
                return r.status, json.loads(text) if text else None
            except ValueError:
                return r.status, text.decode(errors="replace")

    async def get(self, path: str, **kw: Any) -> tuple[int, Any]:
        return await self.request("GET", path, **kw)

    async def post(self, path: str, body: Any, **kw: Any) -> tuple[int, Any]:
        return await self.request("POST", path, body, **kw)

    async def put(self, path: str, body: Any, **kw: Any) -> tuple[int, Any]:
        return await self.request("PUT", path, body, **kw)

    async def patch(self, path: str, body: Any, kind: str = "merge", **kw: Any) -> tuple[int, Any]:
        ctype = {"merge": "application/merge-patch+json", "json": "application/json-patch+json"}.get(
            kind, kind
        )
        return await self.request("PATCH", path, body, content_type=ctype, **kw)

    async def delete(self, path: str, body: Any = None, **kw: Any) -> tuple[int, Any]:
        return await self.request("DELETE", path, body, **kw)

    @asynccontextmanager
    async def watch(self, path: str, params: dict[str, str]) -> AsyncIterator[asyncio.Queue[dict[str, Any]]]:
        """Events of one watch stream, decoded, in a queue that the caller drains."""
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        q = {"watch": "true", **params}
        async with self.session.get(
            self.base + path, params=q, timeout=aiohttp.ClientTimeout(total=None)
        ) as r:
            assert r.status == 200, await r.text()

            async def pump() -> None:
                async for line in r.content:
                    if line.strip():
                        await queue.put(json.loads(line))

            task = asyncio.create_task(pump(), name="test-watch")
            try:
                yield queue
            finally:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, aiohttp.ClientError):
                    await task


@asynccontextmanager
async def api_client(server: AggapiServer, *, with_cert: bool = True) -> AsyncIterator[Api]:
    conn = aiohttp.TCPConnector(ssl=client_ssl(server.pki, with_cert=with_cert), limit=100)
    async with aiohttp.ClientSession(connector=conn) as session:
        yield Api(server.url, session)


def kubectl(
    kubeconfig: Path,
    *args: str,
    input: str | None = None,
    env: dict[str, str] | None = None,
    timeout: float = 60,
) -> subprocess.CompletedProcess[str]:
    """Run the real kubectl (blocking: use only from sync tests or via asyncio.to_thread)."""
    full_env = {**os.environ, "KUBECONFIG": str(kubeconfig), "HOME": str(kubeconfig.parent), **(env or {})}
    return subprocess.run(
        [str(KUBECTL), *args],
        check=False,
        input=input,
        capture_output=True,
        text=True,
        env=full_env,
        timeout=timeout,
    )
