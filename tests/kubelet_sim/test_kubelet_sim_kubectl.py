"""The real kubectl against the sim, through a kube-apiserver stand-in that proxies like KAS does.

This is the proof that the sim speaks kubectl's wire protocols: exec/attach over WebSocket v5 (and the
SPDY fallback), port-forward as SPDY tunnelled in WebSocket (and plain SPDY), logs with follow, and
nodes/proxy.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from kubelet_sim_kas import KasStub
from kubelet_sim_support import SAMPLE_PORT, Node, SimPKI

KUBECTL = Path(sys.executable).parent / "kubectl"


@dataclass
class Kubectl:
    server: str
    env: dict[str, str]

    async def start(self, *args: str, env: dict[str, str] | None = None) -> asyncio.subprocess.Process:
        return await asyncio.create_subprocess_exec(
            str(KUBECTL), "--server", self.server, "--request-timeout=20s", *args,
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            env=self.env | (env or {}),
        )  # fmt: skip

    async def run(
        self, *args: str, stdin: bytes = b"", env: dict[str, str] | None = None
    ) -> tuple[int, str, str]:
        proc = await self.start(*args, env=env)
        out, err = await asyncio.wait_for(proc.communicate(stdin), 30)
        assert proc.returncode is not None
        return proc.returncode, out.decode(), err.decode()


@pytest.fixture
async def kubectl(node: Node, sim_pki: SimPKI, tmp_path: Path) -> AsyncIterator[Kubectl]:
    nodes = {node.identity.name: node.identity.address}
    async with KasStub(node.pods, nodes, sim_pki.client_context()) as kas:
        home = tmp_path / "home"
        home.mkdir()
        (home / "kubeconfig").write_text("")
        env = {"PATH": os.environ.get("PATH", ""), "HOME": str(home), "KUBECONFIG": str(home / "kubeconfig")}
        yield Kubectl(f"http://127.0.0.1:{kas.port}", env)


WS_OFF = {"KUBECTL_REMOTE_COMMAND_WEBSOCKETS": "false"}
PF_SPDY = {"KUBECTL_PORT_FORWARD_WEBSOCKETS": "false"}


@pytest.mark.parametrize("env", [{}, WS_OFF], ids=["websocket", "spdy"])
async def test_exec_stdin_and_exit_codes(kubectl: Kubectl, env: dict[str, str]) -> None:
    rc, out, err = await kubectl.run(
        "exec", "-i", "sample", "-c", "app", "--", "cat", stdin=b"hi\nthere\n", env=env
    )
    assert (rc, out) == (0, "hi\nthere\n"), err

    script = "echo o; echo e >&2; exit 3"
    rc, out, err = await kubectl.run("exec", "sample", "-c", "app", "--", "sh", "-c", script, env=env)
    assert (rc, out) == (3, "o\n")
    assert "e\n" in err and "command terminated with exit code 3" in err


async def test_logs_and_follow(kubectl: Kubectl, node: Node) -> None:
    for line in ("first", "second"):
        node.sim.append_log("default", "sample", "app", line + "\n")
    assert await kubectl.run("logs", "sample", "-c", "app") == (0, "first\nsecond\n", "")
    assert (await kubectl.run("logs", "pod/sample", "-c", "app", "--tail=1"))[:2] == (0, "second\n")

    proc = await kubectl.start("logs", "-f", "sample", "-c", "app")
    try:
        assert proc.stdout is not None
        assert await asyncio.wait_for(proc.stdout.readline(), 20) == b"first\n"
        assert await asyncio.wait_for(proc.stdout.readline(), 20) == b"second\n"
        node.sim.append_log("default", "sample", "app", "later\n")
        assert await asyncio.wait_for(proc.stdout.readline(), 20) == b"later\n"
    finally:
        proc.terminate()
        await proc.wait()


@pytest.mark.parametrize("env", [{}, PF_SPDY], ids=["spdy-over-websocket", "spdy"])
async def test_port_forward_round_trip(kubectl: Kubectl, env: dict[str, str]) -> None:
    proc = await kubectl.start(
        "port-forward", "--address", "127.0.0.1", "pod/sample", f":{SAMPLE_PORT}", env=env
    )
    try:
        assert proc.stdout is not None
        line = (await asyncio.wait_for(proc.stdout.readline(), 20)).decode()
        match = re.match(rf"Forwarding from 127\.0\.0\.1:(\d+) -> {SAMPLE_PORT}", line)
        assert match, line
        for payload in (b"ping\n", os.urandom(200_000)):  # a second connection, and more than a frame
            reader, writer = await asyncio.open_connection("127.0.0.1", int(match[1]))
            writer.write(payload)
            await writer.drain()
            echoed = await asyncio.wait_for(reader.readexactly(len(payload)), 20)
            assert echoed == payload
            writer.close()
        assert proc.returncode is None  # still serving
    finally:
        proc.terminate()
        _, err = await proc.communicate()
    assert b"error" not in err.lower(), err


@pytest.mark.parametrize("env", [{}, WS_OFF], ids=["websocket", "spdy"])
async def test_attach(kubectl: Kubectl, env: dict[str, str]) -> None:
    rc, out, err = await kubectl.run("attach", "-i", "sample", "-c", "app", stdin=b"typed\n", env=env)
    assert rc == 0, err
    assert "typed\n" in out


async def test_nodes_proxy(kubectl: Kubectl, node: Node) -> None:
    name = node.identity.name
    assert await kubectl.run("get", "--raw", f"/api/v1/nodes/{name}/proxy/healthz") == (0, "ok", "")
    rc, out, err = await kubectl.run("get", "--raw", f"/api/v1/nodes/{name}/proxy/pods")
    assert rc == 0, err
    assert [p["metadata"]["name"] for p in json.loads(out)["items"]] == ["sample"]
