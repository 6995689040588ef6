"""Helpers for the kubelet-sim tests (imported by conftest.py and the test modules; a unique module name
so it never collides with another directory's conftest)."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import random
import socket
import ssl
import struct
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from certs.files import write_pair
from certs.pki import CertKeyPair, issue_serving
from edge.kubelet_sim import (
    KUBELET_PORT,
    KubeletSim,
    KubeletSimConfig,
    NodeIdentity,
    PortMapping,
    Timeouts,
    spdy,
)

SAMPLE_PORT = 8080


@dataclass(frozen=True)
class SimPKI:
    directory: Path
    ca: CertKeyPair
    ca_file: Path
    client_cert: Path
    client_key: Path

    def serving(self, address: str) -> tuple[Path, Path]:
        pair = issue_serving(self.ca, common_name=f"kubelet-{address}", ips=[address])
        cert, key = self.directory / f"kubelet-{address}.crt", self.directory / f"kubelet-{address}.key"
        write_pair(pair, cert, key)
        return cert, key

    def client_context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=str(self.ca_file))
        ctx.load_cert_chain(str(self.client_cert), str(self.client_key))
        return ctx


_random = random.SystemRandom()


def free_node_address() -> str:
    """A 127.0.1.N whose kubelet port is free now (Linux routes all of 127/8 to loopback). Another test
    run may take it before we bind; `started_sim` retries for that."""
    for _ in range(500):
        address = f"127.0.1.{_random.randrange(2, 255)}"
        with socket.socket() as s:
            try:
                s.bind((address, KUBELET_PORT))
                return address
            except OSError as e:
                if e.errno != errno.EADDRINUSE:
                    raise
    raise RuntimeError("no free 127.0.1.N:10250")


def sample_pod(node: str, name: str = "sample", namespace: str = "default") -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "uid": f"uid-{name}"},
        "spec": {
            "nodeName": node,
            "containers": [
                {
                    "name": "app",
                    "image": "sample:1",
                    "stdin": True,
                    "env": [{"name": "GREETING", "value": "hello from the sim"}],
                    "ports": [{"containerPort": SAMPLE_PORT}],
                },
                {"name": "sidecar", "image": "sidecar:1"},
            ],
        },
        "status": {"phase": "Running"},
    }


@dataclass
class Node:
    sim: KubeletSim
    identity: NodeIdentity
    pods: list[dict[str, Any]]

    @property
    def url(self) -> str:
        return self.sim.url


def sim_config(pki: SimPKI, root: Path, **overrides: Any) -> KubeletSimConfig:
    """A sim on a fresh 127.0.1.N running the sample pod, whose app port 8080 is an echo server."""
    address = free_node_address()
    identity = NodeIdentity(f"edge-{address.rsplit('.', 1)[1]}", address)
    cert, key = pki.serving(address)
    fields: dict[str, Any] = {
        "node": identity,
        "tls_cert_file": cert,
        "tls_key_file": key,
        "client_ca_file": pki.ca_file,
        "root_dir": root,
        "pods": (sample_pod(identity.name),),
        "port_forwards": (PortMapping("default", "sample", SAMPLE_PORT),),
        "log_poll_interval": 0.02,
        "timeouts": Timeouts(write=10, dial=5, stream_creation=5, exit_grace=0.5),
    }
    return KubeletSimConfig(**(fields | overrides))


class SpdyClient:
    """Just enough of a SPDY/3.1 client (what spdystream does for kubectl) to drive the sim."""

    def __init__(
        self, read: Callable[[], Awaitable[bytes]], write: Callable[[bytes], Awaitable[None]]
    ) -> None:
        self._read, self._write = read, write
        self._codec = spdy.HeaderCodec()
        self._buf = bytearray()
        self._frames: list[spdy.Frame] = []
        self._next_id = 1

    async def open(self, headers: dict[str, str], *, fin: bool = False) -> int:
        sid, self._next_id = self._next_id, self._next_id + 2
        payload = struct.pack(">IIBB", sid, 0, 0, 0) + self._codec.compress(headers)
        await self._write(spdy.control_frame(spdy.SYN_STREAM, spdy.FLAG_FIN if fin else 0, payload))
        return sid

    async def send(self, sid: int, data: bytes, *, fin: bool = False) -> None:
        await self._write(spdy.data_frame(sid, data, fin=fin))

    async def ping(self, ping_id: int) -> None:
        await self._write(spdy.control_frame(spdy.PING, 0, struct.pack(">I", ping_id)))

    async def frame(self) -> spdy.Frame:
        while not self._frames:
            chunk = await asyncio.wait_for(self._read(), 10)
            assert chunk, "connection closed"
            self._buf += chunk
            self._frames += spdy.parse_frames(self._buf)
        f = self._frames.pop(0)
        if f.control and f.kind == spdy.SYN_REPLY:
            self._codec.decompress(f.payload[4:])  # keep the inflater in step
        return f


async def forward_once(c: SpdyClient, port: int, request_id: str = "0") -> tuple[bytes, bytes]:
    """One forwarded connection: returns (data echoed back, error stream contents). Frames of other
    streams on the same connection are skipped."""
    common = {"port": str(port), "requestid": request_id}
    err_id = await c.open({"streamtype": "error", **common}, fin=True)  # the client never writes errors
    data_id = await c.open({"streamtype": "data", **common})
    await c.ping(1)
    await c.send(data_id, b"hello spdy")
    await c.send(data_id, b"", fin=True)
    got: dict[int, bytes] = {err_id: b"", data_id: b""}
    finished: set[int] = set()
    replies, pong = set(), False
    while finished != {err_id, data_id} or not pong:
        f = await c.frame()
        if f.control:
            assert f.kind in (spdy.SYN_REPLY, spdy.PING), f
            replies |= {f.stream_id} if f.kind == spdy.SYN_REPLY else set()
            pong |= f.kind == spdy.PING
        elif f.stream_id in got:
            got[f.stream_id] += f.payload
            if f.flags & spdy.FLAG_FIN:
                finished.add(f.stream_id)
    assert {err_id, data_id} <= replies
    return got[data_id], got[err_id]


@contextlib.asynccontextmanager
async def started_sim(pki: SimPKI, root: Path, **overrides: Any) -> AsyncIterator[KubeletSim]:
    """A running sim from `sim_config`, on another address if the chosen one was taken meanwhile."""
    for _ in range(20):
        sim = KubeletSim(sim_config(pki, root, **overrides))
        stack = contextlib.AsyncExitStack()
        try:
            await stack.enter_async_context(sim.running())
        except OSError as e:
            if e.errno != errno.EADDRINUSE:
                raise
            continue
        async with stack:
            yield sim
        return
    raise RuntimeError("could not bind a kubelet-sim")
