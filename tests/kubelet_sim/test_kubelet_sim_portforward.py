"""Port-forward driven directly: the WebSocket channel protocol, SPDY tunnelled in WebSocket (as
kubectl sends it through kube-apiserver), plain SPDY upgrade, and the SPDY framing itself."""

from __future__ import annotations

import asyncio
import json
import struct
from pathlib import Path

import aiohttp
import pytest
from kubelet_sim_support import SAMPLE_PORT, Node, SimPKI, SpdyClient, forward_once, started_sim

from edge.kubelet_sim import PortMapping, spdy

TUNNEL = "SPDY/3.1+portforward.k8s.io"
PORT_PREFIX = struct.pack("<H", SAMPLE_PORT)


async def test_websocket_channels_round_trip(node: Node, client: aiohttp.ClientSession) -> None:
    url = f"{node.url}/portForward/default/sample?port={SAMPLE_PORT}"
    async with client.ws_connect(url, protocols=("v4.channel.k8s.io",)) as ws:
        first = {(await ws.receive_bytes(timeout=10)) for _ in range(2)}
        assert first == {b"\x00" + PORT_PREFIX, b"\x01" + PORT_PREFIX}  # data and error channels
        await ws.send_bytes(b"\x00ping")
        assert await ws.receive_bytes(timeout=10) == b"\x00ping"


async def test_websocket_channels_unmapped_port(node: Node, client: aiohttp.ClientSession) -> None:
    async with client.ws_connect(
        f"{node.url}/portForward/default/sample?port=9", protocols=("v4.channel.k8s.io",)
    ) as ws:
        messages = [await ws.receive_bytes(timeout=10) for _ in range(3)]
    error = json.loads(messages[2][1:])
    assert messages[2][0] == 1 and error["closeConnection"] is True
    assert "error forwarding port 9 to pod sample" in error["message"]


async def test_spdy_over_websocket(node: Node, client: aiohttp.ClientSession) -> None:
    url = f"{node.url}/portForward/default/sample"
    async with client.ws_connect(url, protocols=("SPDY/3.1+portforward.k8s.io",)) as ws:
        assert ws.protocol == "SPDY/3.1+portforward.k8s.io"
        c = SpdyClient(ws.receive_bytes, ws.send_bytes)
        assert await forward_once(c, SAMPLE_PORT) == (b"hello spdy", b"")


async def test_plain_spdy_upgrade(node: Node, sim_pki: SimPKI) -> None:
    reader, writer = await asyncio.open_connection(node.identity.address, 10250, ssl=sim_pki.client_context())
    try:
        writer.write(
            b"POST /portForward/default/sample HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\n"
            b"Upgrade: SPDY/3.1\r\nX-Stream-Protocol-Version: portforward.k8s.io\r\nContent-Length: 0\r\n\r\n"
        )
        head = (await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)).decode().lower()
        assert head.startswith("http/1.1 101")
        assert "x-stream-protocol-version: portforward.k8s.io" in head and "upgrade: spdy/3.1" in head

        async def write(data: bytes) -> None:
            writer.write(data)
            await writer.drain()

        c = SpdyClient(lambda: reader.read(65536), write)
        data, error = await forward_once(c, 9)  # nothing listens there
        assert data == b"" and b"error forwarding port 9" in error
    finally:
        writer.close()


async def test_spdy_protocol_negotiation(node: Node, client: aiohttp.ClientSession) -> None:
    headers = {"Connection": "Upgrade", "Upgrade": "SPDY/3.1", "X-Stream-Protocol-Version": "v9.nope"}
    async with client.post(f"{node.url}/portForward/default/sample", headers=headers) as resp:
        assert resp.status == 403
        assert resp.headers["X-Accepted-Stream-Protocol-Versions"] == "portforward.k8s.io"
    async with client.post(f"{node.url}/portForward/default/ghost", headers=headers) as resp:
        assert resp.status == 404


def test_header_compression_is_one_stream_per_direction() -> None:
    sender, receiver = spdy.HeaderCodec(), spdy.HeaderCodec()
    blocks = [{"streamtype": "error", "port": "80"}, {"streamtype": "data", "port": "80"}, {}]
    for headers in blocks:  # later blocks only decode with the earlier ones' zlib state
        assert receiver.decompress(sender.compress(headers)) == headers
    assert len(spdy.HEADER_DICTIONARY) == 1423  # SPDY/3 §2.6.10.1


def test_parse_frames_waits_for_whole_frames() -> None:
    wire = spdy.data_frame(3, b"abc") + spdy.control_frame(spdy.PING, 0, struct.pack(">I", 7))
    buf = bytearray(wire[:5])
    assert spdy.parse_frames(buf) == []
    buf += wire[5:]
    data, ping = spdy.parse_frames(buf)
    assert (data.control, data.stream_id, data.payload) == (False, 3, b"abc")
    assert (ping.control, ping.kind, ping.payload) == (True, spdy.PING, struct.pack(">I", 7))
    assert buf == bytearray()
    with pytest.raises(spdy.SpdyError):
        spdy.parse_frames(bytearray(struct.pack(">HHI", 0x8002, 1, 0)))  # SPDY/2


async def test_pod_hanging_up_mid_upload_does_not_stall_the_connection(
    sim_pki: SimPKI, client: aiohttp.ClientSession, tmp_path: Path
) -> None:
    async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.close()

    rude = await asyncio.start_server(hang_up, "127.0.0.1", 0)
    rude_port = rude.sockets[0].getsockname()[1]
    mappings = (
        PortMapping("default", "sample", SAMPLE_PORT),
        PortMapping("default", "sample", 9090, f"127.0.0.1:{rude_port}"),
    )
    try:
        async with (
            started_sim(sim_pki, tmp_path, port_forwards=mappings) as sim,
            client.ws_connect(f"{sim.url}/portForward/default/sample", protocols=(TUNNEL,)) as ws,
        ):
            c = SpdyClient(ws.receive_bytes, ws.send_bytes)
            common = {"port": "9090", "requestid": "1"}
            await c.open({"streamtype": "error", **common}, fin=True)
            data_id = await c.open({"streamtype": "data", **common})
            for _ in range(300):  # ~10 MB the pod never reads: far more than a stream buffers
                await c.send(data_id, bytes(32 * 1024))
            # Other forwarded connections on the same SPDY connection carry on.
            assert await forward_once(c, SAMPLE_PORT, request_id="2") == (b"hello spdy", b"")
    finally:
        rude.close()
        await rude.wait_closed()
