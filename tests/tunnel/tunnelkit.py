"""Shared by the tunnel tests and bench/tunnel.py: PKI on disk, local targets, running server/agent/egress."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import socket
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from aggapi.tunnel import EgressConfig, EgressServer, TunnelServer, TunnelServerConfig
from certs.files import write_pair
from certs.pki import CertKeyPair, issue_client, issue_serving, new_ca
from edge.tunnel.agent import TunnelAgent
from edge.tunnel.config import AgentConfig

CHUNK = 64 * 1024


# --- PKI ------------------------------------------------------------------------------------------


@dataclass
class PKI:
    dir: Path
    agent_ca: CertKeyPair
    server_ca: CertKeyPair
    egress_ca: CertKeyPair
    files: dict[str, Path] = field(default_factory=dict)

    def write(self, name: str, pair: CertKeyPair) -> tuple[Path, Path]:
        cert, key = self.dir / f"{name}.crt", self.dir / f"{name}.key"
        write_pair(pair, cert, key)
        return cert, key

    def node_cert(
        self, node: str, name: str | None = None, ca: CertKeyPair | None = None
    ) -> tuple[Path, Path]:
        pair = issue_client(
            ca or self.agent_ca, common_name=f"system:node:{node}", organizations=["system:nodes"]
        )
        return self.write(name or f"node-{node}", pair)


def make_pki(directory: Path) -> PKI:
    directory.mkdir(parents=True, exist_ok=True)
    pki = PKI(directory, new_ca("agent-ca"), new_ca("tunnel-server-ca"), new_ca("egress-client-ca"))
    for name, ca in (("agent-ca", pki.agent_ca), ("server-ca", pki.server_ca), ("egress-ca", pki.egress_ca)):
        (directory / f"{name}.crt").write_bytes(ca.cert_pem())
        pki.files[name] = directory / f"{name}.crt"
    serving = issue_serving(pki.server_ca, common_name="tunnel", dns_names=["localhost"], ips=["127.0.0.1"])
    pki.files["server.crt"], pki.files["server.key"] = pki.write("server", serving)
    kas = issue_client(pki.egress_ca, common_name="kube-apiserver")
    pki.files["kas.crt"], pki.files["kas.key"] = pki.write("kas", kas)
    return pki


# --- nodes and targets ----------------------------------------------------------------------------


class StaticNodes:
    """NodeAddresses from a dict (what the cluster's Node objects would say)."""

    def __init__(self, nodes: dict[str, set[str]]) -> None:
        self.nodes = nodes

    async def addresses(self, node: str) -> set[str] | None:
        return self.nodes.get(node)


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        port: int = s.getsockname()[1]
        return port


async def _target_handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """First line picks the mode: ECHO (default; echoes the line too), FIRE (send forever), SEND n (send n
    bytes, close), SINK n (read n, answer sha256), STALL (never read), PING (answer each PING line: ok)."""
    try:
        line = await reader.readline()
        mode = line.strip().split()
        if mode[:1] == [b"FIRE"]:
            block = b"f" * CHUNK
            while True:
                writer.write(block)
                await writer.drain()
        elif mode[:1] == [b"SINK"]:
            want, h = int(mode[1]), hashlib.sha256()
            while want > 0:
                data = await reader.read(min(16 * CHUNK, want))
                if not data:
                    break
                h.update(data)
                want -= len(data)
            writer.write(h.hexdigest().encode() + b"\n")
            await writer.drain()
        elif mode[:1] == [b"SEND"]:
            left, block = int(mode[1]), b"d" * (4 * CHUNK)
            while left > 0:
                writer.write(block[: min(left, len(block))])
                left -= min(left, len(block))
                await writer.drain()
        elif mode[:1] == [b"STALL"]:
            await asyncio.Event().wait()  # never read: the sender's window fills and stays full
        elif mode[:1] == [b"PING"]:
            writer.write(b"ok\n")
            await writer.drain()
            while (await reader.readline()).strip() == b"PING":
                writer.write(b"ok\n")
                await writer.drain()
        else:
            writer.write(line)
            while data := await reader.read(CHUNK):
                writer.write(data)
                await writer.drain()
            if writer.can_write_eof():
                writer.write_eof()
    except (ConnectionError, asyncio.CancelledError):
        pass
    finally:
        writer.close()


@contextlib.asynccontextmanager
async def target_server(host: str, port: int = 0) -> AsyncIterator[tuple[str, int]]:
    """A local TCP target speaking the tiny protocol above; connections are cancelled on exit."""
    handlers: set[asyncio.Task[None]] = set()

    async def handle(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        handlers.add(task)
        try:
            await _target_handler(r, w)
        finally:
            handlers.discard(task)

    server = await asyncio.start_server(handle, host, port, limit=16 * CHUNK)
    try:
        yield host, server.sockets[0].getsockname()[1]
    finally:
        server.close()
        for t in list(handlers):
            t.cancel()
        await asyncio.gather(*handlers, return_exceptions=True)
        await server.wait_closed()


# --- running things -------------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def running(coro: Coroutine[Any, Any, None], name: str) -> AsyncIterator[asyncio.Task[None]]:
    task = asyncio.create_task(coro, name=name)
    try:
        yield task
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def eventually(pred: Callable[[], bool | Awaitable[bool]], what: str, timeout: float = 30.0) -> None:
    """Poll until pred() holds; bounded, so a broken tunnel fails the test instead of hanging it."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        result = pred()
        if not isinstance(result, bool):
            result = await result
        if result:
            return
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for: {what}")
        await asyncio.sleep(0.02)


def server_config(pki: PKI, **kw: Any) -> TunnelServerConfig:
    base = TunnelServerConfig(
        cert_file=pki.files["server.crt"],
        key_file=pki.files["server.key"],
        agent_ca_file=pki.files["agent-ca"],
        port=0,
        shutdown_grace=0.5,
    )
    return replace(base, **kw)


def agent_config(pki: PKI, node: str, address: str, servers: list[str], **kw: Any) -> AgentConfig:
    cert = kw.pop("cert", None) or pki.node_cert(node)
    base = AgentConfig(
        node_name=node,
        servers=tuple(servers),
        cert_file=cert[0],
        key_file=cert[1],
        ca_file=pki.files["server-ca"],
        addresses=(address,),
        backoff_initial=0.05,
        backoff_max=0.5,
    )
    return replace(base, **kw)


def egress_config(pki: PKI, uds: Path | None, tls: bool = False, **kw: Any) -> EgressConfig:
    base = EgressConfig(
        uds_path=uds,
        tls_port=0 if tls else None,
        tls_cert_file=pki.files["server.crt"] if tls else None,
        tls_key_file=pki.files["server.key"] if tls else None,
        client_ca_file=pki.files["egress-ca"] if tls else None,
    )
    return replace(base, **kw)


def client_tls(pki: PKI, with_cert: bool = True) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(pki.files["server-ca"]))
    if with_cert:
        ctx.load_cert_chain(str(pki.files["kas.crt"]), str(pki.files["kas.key"]))
    return ctx


async def connect_via_proxy(
    open_conn: Callable[[], Awaitable[tuple[asyncio.StreamReader, asyncio.StreamWriter]]], target: str
) -> tuple[int, bytes, asyncio.StreamReader, asyncio.StreamWriter]:
    """Send CONNECT target; return (status, body-or-empty, reader, writer)."""
    reader, writer = await open_conn()
    writer.write(f"CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n".encode())
    await writer.drain()
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    status = int(head.split(b" ", 2)[1])
    body = b""
    if status != 200:
        body = await asyncio.wait_for(reader.read(), 10)
    return status, body, reader, writer


def fd_count() -> int:
    return len(os.listdir("/proc/self/fd"))


def rss_bytes(pid: int | str = "self") -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


__all__ = [
    "EgressServer",
    "TunnelAgent",
    "TunnelServer",
]
