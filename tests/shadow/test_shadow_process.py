"""The real `aggapi-edge shadow` process: kill -9 during heavy caching loses no object a client was sent;
real kubectl through the shadow offline; the HTTPS port."""

from __future__ import annotations

import asyncio
import json
import os
import ssl
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from conftest import POD_TOKEN, NodeCreds
from shadowkit import NODE, Kube, Relay, eventually, names, pod, running, wait_mode
from support.aggapi import KUBECTL

from aggapi.devcluster.labkit import free_port
from certs.files import write_pair
from certs.pki import issue_serving, new_ca
from edge.shadow.config import ShadowConfig

BIN = Path(sys.executable).parent / "aggapi-edge"


class ShadowProcess:
    def __init__(self, args: list[str], log: Path) -> None:
        self.args = args
        self.log = log
        self.proc: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        with self.log.open("ab") as out:
            self.proc = await asyncio.create_subprocess_exec(
                str(BIN), *self.args, stdin=asyncio.subprocess.DEVNULL, stdout=out, stderr=out
            )

    async def kill(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.kill()
            await self.proc.wait()


@pytest.fixture
async def processes() -> AsyncIterator[list[ShadowProcess]]:
    procs: list[ShadowProcess] = []
    try:
        yield procs
    finally:
        for p in procs:
            await p.kill()


def shadow_args(creds: NodeCreds, server_port: int, cache: Path, port: int, health: int) -> list[str]:
    return [
        "shadow",
        f"--node-name={NODE}",
        f"--server=https://127.0.0.1:{server_port}",
        f"--server-ca-file={creds.ca}",
        f"--node-cert-file={creds.cert}",
        f"--node-key-file={creds.key}",
        f"--cache-dir={cache}",
        f"--port={port}",
        "--secure-port=0",
        f"--health-port={health}",
        "--probe-period=100ms",
        "--probe-timeout=500ms",
    ]


async def ready(http: aiohttp.ClientSession, health: int, mode: str) -> None:
    async def probe() -> bool | None:
        try:
            async with http.get(f"http://127.0.0.1:{health}/readyz") as r:
                return True if r.status == 200 and mode in await r.text() else None
        except aiohttp.ClientError:
            return None

    await eventually(f"shadow ready ({mode})", probe, timeout=30)


async def test_kill_9_during_heavy_caching_loses_no_acknowledged_object(
    node_creds: NodeCreds,
    relay: Relay,
    admin: Kube,
    http: aiohttp.ClientSession,
    ns: str,
    tmp_path: Path,
    processes: list[ShadowProcess],
) -> None:
    cache = tmp_path / "cache"
    port, health = free_port(), free_port()
    first = ShadowProcess(shadow_args(node_creds, relay.port, cache, port, health), tmp_path / "shadow-1.log")
    processes.append(first)
    await first.start()
    await ready(http, health, "online")
    kubelet = Kube(f"http://127.0.0.1:{port}", http)
    pods = f"/api/v1/namespaces/{ns}/pods"
    code, listed = await kubelet.get(pods)
    assert code == 200, listed
    rv = listed["metadata"]["resourceVersion"]

    async def create(i: int) -> None:
        code, out = await admin.req("POST", pods, pod(f"p{i:03d}", ns, {"app": "load"}))
        assert code == 201, out

    async def load() -> None:
        for start in range(0, 300, 20):
            await asyncio.gather(*(create(i) for i in range(start, start + 20)))

    creator = asyncio.create_task(load())
    acknowledged: list[str] = []
    try:
        async for ev in kubelet.watch(f"{pods}?watch=1&resourceVersion={rv}"):
            if ev["type"] == "ADDED":
                acknowledged.append(ev["object"]["metadata"]["name"])
            if len(acknowledged) == 100:
                await first.kill()  # SIGKILL in the middle of the stream
    except aiohttp.ClientError:
        pass
    finally:
        await creator
    assert len(acknowledged) >= 100

    for name in acknowledged:
        data = json.loads((cache / "kubelet" / "pods" / ns / f"{name}.json").read_bytes())
        assert data["metadata"]["name"] == name and data["kind"] == "Pod"

    await relay.cut()  # and the restarted shadow finds the cloud gone
    second = ShadowProcess(
        shadow_args(node_creds, relay.port, cache, port, health), tmp_path / "shadow-2.log"
    )
    processes.append(second)
    await second.start()
    await ready(http, health, "offline")
    code, out = await kubelet.get(pods)
    assert code == 200, out
    assert set(acknowledged) <= set(names(out))
    assert "shadow: cache" in (tmp_path / "shadow-2.log").read_text()


async def _kubectl(kubeconfig: Path, *args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        str(KUBECTL),
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "KUBECONFIG": str(kubeconfig), "HOME": str(kubeconfig.parent)},
    )
    out, err = await proc.communicate()
    return proc.returncode or 0, out.decode(), err.decode()


async def test_kubectl_through_the_shadow_offline(
    cfg: ShadowConfig, relay: Relay, admin: Kube, ns: str, tmp_path: Path
) -> None:
    for name, app in (("web-1", "x"), ("web-2", "x"), ("db-1", "y")):
        assert (await admin.req("POST", f"/api/v1/namespaces/{ns}/pods", pod(name, ns, {"app": app})))[
            0
        ] == 201
    cfg = ShadowConfig(**{**{f: getattr(cfg, f) for f in cfg.__dataclass_fields__}, "components": ("*",)})
    kubeconfig = tmp_path / "kube" / "config"
    kubeconfig.parent.mkdir()
    async with running(cfg) as shadow:
        await wait_mode(shadow, online=True)
        server = f"--server=http://127.0.0.1:{shadow.ports['http']}"
        kubeconfig.write_text(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: shadow\n  cluster:\n    server: "
            f"http://127.0.0.1:{shadow.ports['http']}\n"
            "contexts:\n- name: shadow\n  context:\n    cluster: shadow\ncurrent-context: shadow\n"
        )
        code, out, err = await _kubectl(
            kubeconfig, server, "get", "pods", "-n", ns, "-l", "app=x", "-o", "json"
        )
        assert code == 0, err
        assert sorted(i["metadata"]["name"] for i in json.loads(out)["items"]) == ["web-1", "web-2"]

        await relay.cut()
        await wait_mode(shadow, online=False)
        code, out, err = await _kubectl(kubeconfig, server, "get", "pods", "-n", ns, "-l", "app=x")
        assert code == 0, err
        rows = [line.split()[0] for line in out.splitlines()[1:]]
        assert out.splitlines()[0].split()[0] == "NAME" and rows == ["web-1", "web-2"]
        code, out, err = await _kubectl(kubeconfig, server, "get", "configmaps", "-n", ns)
        assert code != 0 and "not found" in err.lower()


async def test_https_port_passes_bearer_tokens_through(
    cfg: ShadowConfig, tmp_path: Path, admin: Kube, ns: str
) -> None:
    ca = new_ca("shadow-serving-ca")
    write_pair(
        issue_serving(ca, common_name="shadow", dns_names=["localhost"], ips=["127.0.0.1"]),
        tmp_path / "serving.crt",
        tmp_path / "serving.key",
    )
    (tmp_path / "ca.crt").write_bytes(ca.cert_pem())
    cfg = ShadowConfig(
        **{
            **{f: getattr(cfg, f) for f in cfg.__dataclass_fields__},
            "secure_port": free_port(),
            "tls_cert_file": tmp_path / "serving.crt",
            "tls_private_key_file": tmp_path / "serving.key",
        }
    )
    cm = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c", "namespace": ns}}
    assert (await admin.req("POST", f"/api/v1/namespaces/{ns}/configmaps", cm))[0] == 201
    ctx = ssl.create_default_context(cafile=str(tmp_path / "ca.crt"))
    async with running(cfg) as shadow, aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=ctx)) as s:
        await wait_mode(shadow, online=True)
        app = Kube(f"https://127.0.0.1:{shadow.ports['https']}", s, ua="myapp/1.0", token=POD_TOKEN)
        code, got = await app.get(f"/api/v1/namespaces/{ns}/configmaps/c")
        assert code == 200 and got["metadata"]["name"] == "c"
        code, _ = await app.get(f"/api/v1/namespaces/{ns}/pods")
        assert code == 403  # the pod's own rights, not the node's
