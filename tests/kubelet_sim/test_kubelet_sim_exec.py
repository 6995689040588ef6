"""exec and attach over WebSocket (v5/v4.channel.k8s.io), driven with aiohttp's WebSocket client."""

from __future__ import annotations

import asyncio
import json
import os
from typing import Any
from urllib.parse import urlencode

import aiohttp
import pytest
from kubelet_sim_support import Node

STDIN, STDOUT, STDERR, ERROR, RESIZE, CLOSE = 0, 1, 2, 3, 4, 255


def exec_url(node: Node, *command: str, verb: str = "exec", container: str = "app", **flags: str) -> str:
    params = [("command", c) for c in command] + list(flags.items())
    return f"{node.url}/{verb}/default/sample/{container}?{urlencode(params)}"


async def collect(ws: aiohttp.ClientWebSocketResponse) -> tuple[bytes, bytes, dict[str, Any] | None]:
    """Read channels until the server closes; the status is the JSON on channel 3."""
    out, err, status = b"", b"", None
    async for msg in ws:
        assert msg.type == aiohttp.WSMsgType.BINARY, msg
        channel, data = msg.data[0], msg.data[1:]
        if channel == STDOUT:
            out += data
        elif channel == STDERR:
            err += data
        elif channel == ERROR and data:
            status = json.loads(data)
    return out, err, status


async def run(
    client: aiohttp.ClientSession, url: str, stdin: bytes | None = None, protocol: str = "v5.channel.k8s.io"
) -> tuple[bytes, bytes, dict[str, Any] | None]:
    async with client.ws_connect(url, protocols=(protocol,)) as ws:
        assert ws.protocol == protocol
        if stdin is not None:
            await ws.send_bytes(bytes([STDIN]) + stdin)
            await ws.send_bytes(bytes([CLOSE, STDIN]))
        return await asyncio.wait_for(collect(ws), 20)


async def test_exec_stdin_to_cat(node: Node, client: aiohttp.ClientSession) -> None:
    url = exec_url(node, "cat", input="1", output="1", error="1")
    out, err, status = await run(client, url, stdin=b"hello\nworld\n")
    assert (out, err) == (b"hello\nworld\n", b"")
    assert status is not None and status["status"] == "Success"


async def test_exec_exit_code(node: Node, client: aiohttp.ClientSession) -> None:
    url = exec_url(node, "sh", "-c", "echo out; echo err >&2; exit 3", output="1", error="1")
    out, err, status = await run(client, url)
    assert (out, err) == (b"out\n", b"err\n")
    assert status is not None
    assert status["status"] == "Failure" and status["reason"] == "NonZeroExitCode"
    assert status["details"]["causes"] == [{"reason": "ExitCode", "message": "3"}]


async def test_exec_runs_in_the_pod_scratch_dir_with_container_env(
    node: Node, client: aiohttp.ClientSession
) -> None:
    url = exec_url(node, "sh", "-c", 'pwd; echo "$GREETING"; echo "$HOSTNAME"', output="1")
    out, _, status = await run(client, url)
    cwd, greeting, hostname = out.decode().splitlines()
    assert cwd.endswith("/pods/default_sample/fs")
    assert (greeting, hostname) == ("hello from the sim", "sample")
    assert status is not None and status["status"] == "Success"


async def test_exec_v4_and_apiserver_style_flags(node: Node, client: aiohttp.ClientSession) -> None:
    url = exec_url(node, "echo", "v4", stdout="true")  # pod-subresource spelling, accepted too
    out, _, status = await run(client, url, protocol="v4.channel.k8s.io")
    assert out == b"v4\n" and status is not None and status["status"] == "Success"


async def test_exec_missing_binary_is_exit_127(node: Node, client: aiohttp.ClientSession) -> None:
    _, err, status = await run(client, exec_url(node, "no-such-binary", output="1", error="1"))
    assert b"executable file not found" in err
    assert status is not None and status["details"]["causes"][0]["message"] == "127"


async def test_exec_errors_before_upgrade(node: Node, client: aiohttp.ClientSession) -> None:
    async with client.get(exec_url(node, "true", output="1")) as resp:
        assert resp.status == 400  # no upgrade requested
    with pytest.raises(aiohttp.WSServerHandshakeError) as e:
        await client.ws_connect(exec_url(node, "true", container="ghost", output="1"))
    assert e.value.status == 404
    with pytest.raises(aiohttp.WSServerHandshakeError) as e:
        await client.ws_connect(exec_url(node, "true"))  # no stream requested at all
    assert e.value.status == 400


async def test_exec_tty_resize(node: Node, client: aiohttp.ClientSession) -> None:
    url = exec_url(node, "sh", "-c", "read x; stty size", input="1", output="1", tty="1")
    async with client.ws_connect(url, protocols=("v5.channel.k8s.io",)) as ws:
        await ws.send_bytes(bytes([RESIZE]) + json.dumps({"Width": 100, "Height": 30}).encode())
        await ws.send_bytes(bytes([STDIN]) + b"go\n")
        out, _, status = await asyncio.wait_for(collect(ws), 20)
    assert b"30 100" in out
    assert status is not None and status["status"] == "Success"


async def test_client_leaving_kills_the_process(node: Node, client: aiohttp.ClientSession) -> None:
    url = exec_url(node, "sh", "-c", "echo $$; exec sleep 60", output="1")
    async with client.ws_connect(url, protocols=("v5.channel.k8s.io",)) as ws:
        pid = b""
        while not pid.endswith(b"\n"):
            msg = await asyncio.wait_for(ws.receive(), 10)
            pid += msg.data[1:] if msg.data[0] == STDOUT else b""
    for _ in range(250):
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            break
        await asyncio.sleep(0.02)
    else:
        pytest.fail("exec'd process outlived its client")


async def test_attach_streams_output_and_echoes_stdin(node: Node, client: aiohttp.ClientSession) -> None:
    node.sim.append_log("default", "sample", "app", "old line\n")  # before attach: not replayed
    url = exec_url(node, verb="attach", input="1", output="1", error="1")
    async with client.ws_connect(url, protocols=("v5.channel.k8s.io",)) as ws:
        node.sim.append_log("default", "sample", "app", "from the app\n")
        node.sim.append_log("default", "sample", "app", "warning\n", stream="stderr")
        await ws.send_bytes(bytes([STDIN]) + b"typed\n")
        await ws.send_bytes(bytes([CLOSE, STDIN]))  # the sim's main process ends the session on EOF
        out, err, status = await asyncio.wait_for(collect(ws), 20)
    assert out == b"from the app\ntyped\n" and err == b"warning\n"
    assert status is not None and status["status"] == "Success"
    # What was typed went to the container's output, i.e. its log.
    async with client.get(f"{node.url}/containerLogs/default/sample/app?tailLines=1") as resp:
        assert await resp.text() == "typed\n"


async def test_attach_without_stdin_lasts_until_the_client_leaves(
    node: Node, client: aiohttp.ClientSession
) -> None:
    async with client.ws_connect(
        exec_url(node, verb="attach", output="1"), protocols=("v5.channel.k8s.io",)
    ) as ws:
        node.sim.append_log("default", "sample", "app", "tick\n")
        while True:
            msg = await asyncio.wait_for(ws.receive(), 10)
            if msg.data[0] == STDOUT and msg.data[1:]:
                break
        assert msg.data[1:] == b"tick\n"
    for _ in range(200):
        if not node.sim._sessions:
            break
        await asyncio.sleep(0.02)
    assert not node.sim._sessions
