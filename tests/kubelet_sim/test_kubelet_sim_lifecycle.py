"""Starting and stopping the sim: sessions end and processes die with it; tickers; the CLI."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from pathlib import Path
from urllib.parse import urlencode

import aiohttp
import pytest
from kubelet_sim_support import (
    SAMPLE_PORT,
    SimPKI,
    SpdyClient,
    forward_once,
    sample_pod,
    sim_config,
    started_sim,
)

from edge.kubelet_sim import KubeletSim, KubeletSimConfig, LogTicker


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


async def test_stop_ends_sessions_and_kills_processes(
    sim_pki: SimPKI, client: aiohttp.ClientSession, tmp_path: Path
) -> None:
    before = asyncio.all_tasks()
    query = urlencode(
        [("command", "sh"), ("command", "-c"), ("command", "echo $$; exec sleep 60"), ("output", "1")]
    )
    async with started_sim(sim_pki, tmp_path) as sim:
        ws = await client.ws_connect(
            f"{sim.url}/exec/default/sample/app?{query}", protocols=("v5.channel.k8s.io",)
        )
        pid = b""
        while not pid.endswith(b"\n"):
            pid += (await asyncio.wait_for(ws.receive_bytes(), 10))[1:]
        follow = await client.get(f"{sim.url}/containerLogs/default/sample/app?follow=true")
        assert _alive(int(pid)) and follow.status == 200
    # running() returned: the exec'd process is gone and none of the sim's tasks are left behind.
    assert not _alive(int(pid))
    assert asyncio.all_tasks() - before == {asyncio.current_task()} - before
    msg = await asyncio.wait_for(ws.receive(), 10)
    assert msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.CLOSING)
    follow.close()
    await ws.close()


async def test_log_ticker(sim_pki: SimPKI, client: aiohttp.ClientSession, tmp_path: Path) -> None:
    ticker = LogTicker("default", "sample", "app", 0.01)
    async with (
        started_sim(sim_pki, tmp_path, log_tickers=(ticker,)) as sim,
        client.get(f"{sim.url}/containerLogs/default/sample/app?follow=true") as resp,
    ):
        lines = [await asyncio.wait_for(resp.content.readline(), 10) for _ in range(3)]
    assert lines == [b"sample/app: tick 1\n", b"sample/app: tick 2\n", b"sample/app: tick 3\n"]


def test_pod_names_become_paths_only_when_safe(sim_pki: SimPKI, tmp_path: Path) -> None:
    sim = KubeletSim(sim_config(sim_pki, tmp_path))
    evil = sample_pod("n")
    evil["metadata"]["name"] = "../../etc"
    with pytest.raises(ValueError, match="invalid pod name"):
        sim.set_pods([evil])


async def _start_cli(cfg: KubeletSimConfig, pods_file: Path) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "edge", "kubelet-sim",
        "--node-name", cfg.node.name, "--node-ip", cfg.node.address,
        "--tls-cert-file", str(cfg.tls_cert_file), "--tls-private-key-file", str(cfg.tls_key_file),
        "--client-ca-file", str(cfg.client_ca_file), "--root-dir", str(cfg.root_dir),
        "--pods-file", str(pods_file), "--port-forward", f"default/sample:{SAMPLE_PORT}",
        "--log-ticker", "default/sample/app=0.05",
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip


async def _ticking(client: aiohttp.ClientSession, url: str, proc: asyncio.subprocess.Process) -> bool:
    """Wait until the CLI's sim serves its ticker's first line; False if the process exited first."""
    for _ in range(750):
        if proc.returncode is not None:
            return False
        try:
            async with client.get(f"{url}/containerLogs/default/sample/app") as resp:
                if b"tick 1" in await resp.read():
                    return True
        except aiohttp.ClientConnectionError:
            pass
        await asyncio.sleep(0.04)
    pytest.fail("kubelet-sim did not come up")


async def test_cli(sim_pki: SimPKI, client: aiohttp.ClientSession, tmp_path: Path) -> None:
    for attempt in range(5):  # another test run may grab the address between choosing and binding
        cfg = sim_config(sim_pki, tmp_path / f"root{attempt}")
        pods_file = tmp_path / "pods.json"
        pods_file.write_text(json.dumps({"kind": "PodList", "items": [dict(p) for p in cfg.pods]}))
        proc = await _start_cli(cfg, pods_file)
        url = f"https://{cfg.node.address}:10250"
        try:
            if not await _ticking(client, url, proc):
                continue
            async with client.get(f"{url}/pods") as resp:
                assert [p["metadata"]["name"] for p in (await resp.json())["items"]] == ["sample"]
        finally:
            if proc.returncode is None:
                proc.send_signal(signal.SIGTERM)
            _, err = await asyncio.wait_for(proc.communicate(), 20)
        assert proc.returncode == 0, err.decode()
        return
    pytest.fail(f"kubelet-sim kept failing to start: {err.decode()}")


def _fds() -> int:
    return len(os.listdir("/proc/self/fd"))


async def test_sessions_leave_nothing_behind(sim_pki: SimPKI, tmp_path: Path) -> None:
    """Many exec, port-forward and follow sessions, some abandoned midway: fds and tasks come back."""
    async with started_sim(sim_pki, tmp_path) as sim:
        base_fds, base_tasks = _fds(), len(asyncio.all_tasks())
        connector = aiohttp.TCPConnector(ssl=sim_pki.client_context(), force_close=True)
        async with aiohttp.ClientSession(connector=connector) as s:
            cat = urlencode([("command", "cat"), ("input", "1"), ("output", "1")])
            for i in range(30):
                async with s.ws_connect(
                    f"{sim.url}/exec/default/sample/app?{cat}", protocols=("v5.channel.k8s.io",)
                ) as ws:
                    await ws.send_bytes(b"\x00x")
                    if i % 2:  # half finish properly, half hang up with the process still running
                        await ws.send_bytes(b"\xff\x00")
                        async for _ in ws:
                            pass
                pf = f"{sim.url}/portForward/default/sample?port={SAMPLE_PORT}"
                async with s.ws_connect(pf, protocols=("v4.channel.k8s.io",)) as ws:
                    for _ in range(2):
                        await ws.receive_bytes(timeout=10)
                    await ws.send_bytes(b"\x00ping")
                    assert await ws.receive_bytes(timeout=10) == b"\x00ping"
                resp = await s.get(f"{sim.url}/containerLogs/default/sample/app?follow=true")
                resp.close()
                tunnel = f"{sim.url}/portForward/default/sample"
                async with s.ws_connect(tunnel, protocols=("SPDY/3.1+portforward.k8s.io",)) as ws:
                    c = SpdyClient(ws.receive_bytes, ws.send_bytes)
                    if i % 2:
                        assert await forward_once(c, SAMPLE_PORT) == (b"hello spdy", b"")
                    else:  # open a forwarded connection and vanish
                        await c.open({"streamtype": "data", "port": str(SAMPLE_PORT), "requestid": "0"})
        for _ in range(250):
            if _fds() <= base_fds and len(asyncio.all_tasks()) <= base_tasks and not sim._sessions:
                break
            await asyncio.sleep(0.02)
        leftover = [f"{t.get_name()}: {t.get_coro()}" for t in asyncio.all_tasks()]
        assert len(leftover) <= base_tasks, leftover
        assert _fds() <= base_fds
