"""kube-aggregator's contract, checked against a fake aggregated server run in the test: TLS verified
against the caBundle for `<service>.<namespace>.svc`, the front-proxy client certificate, identity in
X-Remote-* headers (client credentials and spoofed identity headers dropped), streaming responses,
Connection: Upgrade spliced through, legacy discovery merged, and the Available condition's reasons."""

from __future__ import annotations

import asyncio
import base64
import json
import ssl
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from cryptography import x509
from cryptography.x509.oid import NameOID
from support.devcluster import Devcluster

from aggapi.auth.authn import UserInfo
from aggapi.devcluster.backends import identity_headers
from aggapi.devcluster.labkit import JSONClient
from certs.files import write_pair
from certs.pki import issue_serving, new_ca

GROUP = "echo.test.io"
NS = "echo-system"
ACCEPT_V2 = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList"
RESOURCES = {
    "kind": "APIResourceList",
    "apiVersion": "v1",
    "groupVersion": f"{GROUP}/v1",
    "resources": [
        {
            "name": "echoes",
            "singularName": "echo",
            "namespaced": True,
            "kind": "Echo",
            "verbs": ["get", "list"],
        },
        {"name": "echoes/exec", "singularName": "", "namespaced": True, "kind": "Echo", "verbs": ["get"]},
    ],
}


class Backend:
    """A tiny aggregated API server: legacy discovery only, a header echo, a slow stream, a websocket."""

    def __init__(self, devcluster: Devcluster, workdir: Path) -> None:
        ca = new_ca("echo-ca")
        self.ca_pem = ca.cert_pem()
        # Only the Service name: reachable at 127.0.0.1 but valid only as echo.echo-system.svc.
        write_pair(
            issue_serving(ca, common_name="echo", dns_names=[f"echo.{NS}.svc"]),
            workdir / "s.crt",
            workdir / "s.key",
        )
        self.ssl = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.ssl.load_cert_chain(str(workdir / "s.crt"), str(workdir / "s.key"))
        self.ssl.load_verify_locations(cafile=str(devcluster.pki.front_proxy_ca))
        self.ssl.verify_mode = ssl.CERT_REQUIRED  # only the aggregator's front-proxy certificate gets in
        self.release = asyncio.Event()
        self.port = 0

    async def headers(self, request: web.Request) -> web.Response:
        der = request.transport.get_extra_info("ssl_object").getpeercert(binary_form=True)  # type: ignore[union-attr]
        cn = x509.load_der_x509_certificate(der).subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
        pairs = [[k, v] for k, v in request.headers.items()]
        return web.json_response({"headers": pairs, "peer": cn, "path": request.path_qs})

    async def stream(self, request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse()
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        await resp.write(b'{"n":1}\n')
        await self.release.wait()
        await resp.write(b'{"n":2}\n')
        await resp.write_eof()
        return resp

    async def exec(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        async for msg in ws:
            await ws.send_str(f"echo:{msg.data}")
        return ws

    def app(self) -> web.Application:
        app = web.Application()
        base = f"/apis/{GROUP}/v1"

        async def resources(_: web.Request) -> web.Response:
            return web.json_response(RESOURCES)

        app.router.add_get(base, resources)
        app.router.add_get(f"{base}/namespaces/default/echoes/headers", self.headers)
        app.router.add_get(f"{base}/namespaces/default/echoes/stream", self.stream)
        app.router.add_get(f"{base}/namespaces/default/echoes/x/exec", self.exec)
        return app


def _apiservice(group: str, service: str, ca_bundle: bytes | None) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "group": group,
        "version": "v1",
        "groupPriorityMinimum": 100,
        "versionPriority": 10,
        "service": {"namespace": NS, "name": service, "port": 443},
    }
    if ca_bundle is not None:
        spec["caBundle"] = base64.b64encode(ca_bundle).decode()
    return {
        "apiVersion": "apiregistration.k8s.io/v1",
        "kind": "APIService",
        "metadata": {"name": f"v1.{group}"},
        "spec": spec,
    }


def _register(admin: JSONClient, backend_port: int, ca_pem: bytes) -> None:
    admin.apply("/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}})
    for name in ("echo", "other", "noeps"):
        admin.apply(
            f"/api/v1/namespaces/{NS}/services",
            {
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": {"name": name, "namespace": NS},
                "spec": {"ports": [{"name": "https", "port": 443, "targetPort": "https"}]},
            },
        )
    for name in ("echo", "other"):  # `other` reaches the same server under a name its cert lacks
        admin.apply(
            f"/apis/discovery.k8s.io/v1/namespaces/{NS}/endpointslices",
            {
                "apiVersion": "discovery.k8s.io/v1",
                "kind": "EndpointSlice",
                "metadata": {
                    "name": f"{name}-1",
                    "namespace": NS,
                    "labels": {"kubernetes.io/service-name": name},
                },
                "addressType": "IPv4",
                "ports": [{"name": "https", "port": backend_port}],
                "endpoints": [{"addresses": ["127.0.0.1"], "conditions": {"ready": True}}],
            },
        )
    admin.apply("/apis/apiregistration.k8s.io/v1/apiservices", _apiservice(GROUP, "echo", ca_pem))
    admin.apply("/apis/apiregistration.k8s.io/v1/apiservices", _apiservice("nocab.test.io", "echo", None))
    admin.apply(
        "/apis/apiregistration.k8s.io/v1/apiservices", _apiservice("wrongname.test.io", "other", ca_pem)
    )
    admin.apply(
        "/apis/apiregistration.k8s.io/v1/apiservices", _apiservice("missing.test.io", "nosuch", ca_pem)
    )
    admin.apply("/apis/apiregistration.k8s.io/v1/apiservices", _apiservice("noeps.test.io", "noeps", ca_pem))


@pytest.fixture
async def backend(devcluster: Devcluster, tmp_path: Path) -> AsyncIterator[Backend]:
    b = Backend(devcluster, tmp_path)
    runner = web.AppRunner(b.app())
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=b.ssl)
    await site.start()
    b.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    await asyncio.to_thread(_register, devcluster.admin(), b.port, b.ca_pem)
    try:
        yield b
    finally:
        b.release.set()
        await runner.cleanup()


@pytest.fixture
async def client(devcluster: Devcluster) -> AsyncIterator[aiohttp.ClientSession]:
    ctx = ssl.create_default_context(cafile=str(devcluster.pki.ca))
    ctx.load_cert_chain(str(devcluster.pki.admin_cert), str(devcluster.pki.admin_key))
    async with aiohttp.ClientSession(base_url=devcluster.url, connector=aiohttp.TCPConnector(ssl=ctx)) as s:
        yield s


async def _condition(
    client: aiohttp.ClientSession, group: str, want: str, timeout: float = 15
) -> dict[str, Any]:
    async with asyncio.timeout(timeout):
        while True:
            async with client.get(f"/apis/apiregistration.k8s.io/v1/apiservices/v1.{group}") as r:
                obj = await r.json()
            for c in (obj.get("status") or {}).get("conditions") or []:
                if c["type"] == "Available" and c["status"] == want:
                    return dict(c)
            await asyncio.sleep(0.2)


async def test_availability_reasons(backend: Backend, client: aiohttp.ClientSession) -> None:
    assert (await _condition(client, GROUP, "True"))["reason"] == "Passed"
    missing = await _condition(client, "missing.test.io", "False")
    assert missing["reason"] == "ServiceNotFound"
    assert missing["message"] == f'service/nosuch in "{NS}" is not present'
    assert (await _condition(client, "noeps.test.io", "False"))["reason"] == "EndpointsNotFound"
    nocab = await _condition(
        client, "nocab.test.io", "False"
    )  # no caBundle: nothing is trusted, never skipped
    assert nocab["reason"] == "FailedDiscoveryCheck" and "certificate" in nocab["message"]
    wrong = await _condition(client, "wrongname.test.io", "False")  # checked as other.echo-system.svc
    assert wrong["reason"] == "FailedDiscoveryCheck" and "other.echo-system.svc" in wrong["message"]
    async with client.get("/apis/nocab.test.io/v1") as r:
        assert r.status == 503 and await r.text() == "service unavailable\n"


async def test_identity_headers_and_credentials(backend: Backend, client: aiohttp.ClientSession) -> None:
    await _condition(client, GROUP, "True")
    spoof = {
        "X-Remote-User": "evil",
        "X-Remote-Group": "evil-group",
        "X-Remote-Extra-Scope": "all",
        "Authorization": "Bearer should-not-travel",
        "Impersonate-User": "evil",
    }
    async with client.get(f"/apis/{GROUP}/v1/namespaces/default/echoes/headers?x=1", headers=spoof) as r:
        assert r.status == 200, await r.text()
        seen = await r.json()
    assert seen["peer"] == "front-proxy-client"
    assert seen["path"] == f"/apis/{GROUP}/v1/namespaces/default/echoes/headers?x=1"
    headers = [(k.lower(), v) for k, v in seen["headers"]]
    assert ("x-remote-user", "admin") in headers
    assert [v for k, v in headers if k == "x-remote-group"] == ["system:masters", "system:authenticated"]
    names = {k for k, _ in headers}
    assert "authorization" not in names and "impersonate-user" not in names
    assert "x-remote-extra-scope" not in names and ("x-remote-user", "evil") not in headers


def test_extra_header_keys_are_escaped() -> None:
    h = identity_headers(UserInfo("u", ("g1", "g2"), "id-1", {"example.com/scope%x": ("a", "b")}))
    assert h.getall("X-Remote-Group") == ["g1", "g2"]
    assert h["X-Remote-Uid"] == "id-1"
    assert h.getall("X-Remote-Extra-example.com%2Fscope%25x") == ["a", "b"]


async def test_responses_stream(backend: Backend, client: aiohttp.ClientSession) -> None:
    await _condition(client, GROUP, "True")
    async with client.get(f"/apis/{GROUP}/v1/namespaces/default/echoes/stream") as r:
        assert r.status == 200
        async with asyncio.timeout(5):  # the first chunk arrives while the backend still holds the second
            assert json.loads(await r.content.readline()) == {"n": 1}
        backend.release.set()
        async with asyncio.timeout(5):
            assert json.loads(await r.content.readline()) == {"n": 2}


async def test_upgrade_is_spliced(backend: Backend, client: aiohttp.ClientSession) -> None:
    await _condition(client, GROUP, "True")
    async with client.ws_connect(f"/apis/{GROUP}/v1/namespaces/default/echoes/x/exec") as ws:
        for text in ("hello", "again" * 1000):
            await ws.send_str(text)
            msg = await asyncio.wait_for(ws.receive(), 5)
            assert msg.data == f"echo:{text}"


async def test_legacy_discovery_is_merged(backend: Backend, client: aiohttp.ClientSession) -> None:
    await _condition(client, GROUP, "True")
    async with asyncio.timeout(15):
        while True:
            async with client.get("/apis", headers={"Accept": ACCEPT_V2}) as r:
                doc = await r.json()
            groups = {g["metadata"]["name"]: g for g in doc["items"]}
            (version,) = groups[GROUP]["versions"]
            if version.get("resources"):
                break
            await asyncio.sleep(0.2)
    assert version["freshness"] == "Current"
    (res,) = version["resources"]
    assert (res["resource"], res["scope"], res["responseKind"]["kind"]) == ("echoes", "Namespaced", "Echo")
    assert res["subresources"][0]["subresource"] == "exec"
    assert groups["missing.test.io"]["versions"][0]["freshness"] == "Stale"
    async with client.get("/apis") as r:
        legacy = {g["name"]: g for g in (await r.json())["groups"]}
    assert legacy[GROUP]["preferredVersion"] == {"groupVersion": f"{GROUP}/v1", "version": "v1"}
    async with client.get(f"/apis/{GROUP}") as r:
        assert (await r.json())["name"] == GROUP


class RawUpgradeBackend:
    """An HTTP/1.1 server by hand: a 200 for discovery, and for anything else a 101 to whatever
    protocol was asked for (SPDY/3.1 here, which HTTP libraries do not know), then upper-cased echo."""

    def __init__(self, ca_pem: bytes, ctx: ssl.SSLContext) -> None:
        self.ca_pem, self.ctx = ca_pem, ctx
        self.seen: list[str] = []

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
            self.seen.append(head)
            if "upgrade: spdy/3.1" not in head.lower():
                body = json.dumps({**RESOURCES, "groupVersion": "spdy.test.io/v1"}).encode()
                code = "200 OK" if head.startswith("GET /apis/spdy.test.io/v1 ") else "404 Not Found"
                writer.write(
                    f"HTTP/1.1 {code}\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n"
                    f"Connection: close\r\n\r\n".encode()
                    + body
                )
                return
            writer.write(
                b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\n\r\n"
            )
            while data := await reader.read(4096):
                writer.write(data.upper())
                await writer.drain()
        finally:
            writer.close()


async def test_non_websocket_upgrade_is_spliced(devcluster: Devcluster, tmp_path: Path) -> None:
    ca = new_ca("spdy-ca")
    write_pair(
        issue_serving(ca, common_name="spdy", dns_names=[f"spdy.{NS}.svc"]),
        tmp_path / "s.crt",
        tmp_path / "s.key",
    )
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(str(tmp_path / "s.crt"), str(tmp_path / "s.key"))
    raw = RawUpgradeBackend(ca.cert_pem(), ctx)
    server = await asyncio.start_server(raw.serve, "127.0.0.1", 0, ssl=ctx)
    port = server.sockets[0].getsockname()[1]

    def register(admin: JSONClient) -> None:
        admin.apply("/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}})
        admin.apply(
            f"/api/v1/namespaces/{NS}/services",
            {
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": {"name": "spdy", "namespace": NS},
                "spec": {"ports": [{"name": "https", "port": 443}]},
            },
        )
        admin.apply(
            f"/api/v1/namespaces/{NS}/endpoints",
            {
                "apiVersion": "v1",
                "kind": "Endpoints",
                "metadata": {"name": "spdy", "namespace": NS},
                "subsets": [{"addresses": [{"ip": "127.0.0.1"}], "ports": [{"name": "https", "port": port}]}],
            },
        )
        admin.apply(
            "/apis/apiregistration.k8s.io/v1/apiservices", _apiservice("spdy.test.io", "spdy", raw.ca_pem)
        )

    async with server:
        await asyncio.to_thread(register, devcluster.admin())
        cctx = ssl.create_default_context(cafile=str(devcluster.pki.ca))
        cctx.load_cert_chain(str(devcluster.pki.admin_cert), str(devcluster.pki.admin_key))
        async with aiohttp.ClientSession(
            base_url=devcluster.url, connector=aiohttp.TCPConnector(ssl=cctx)
        ) as c:
            await _condition(c, "spdy.test.io", "True")
        reader, writer = await asyncio.open_connection("127.0.0.1", devcluster.port, ssl=cctx)
        try:
            writer.write(
                b"POST /apis/spdy.test.io/v1/namespaces/default/things/x/exec?command=sh HTTP/1.1\r\n"
                b"Host: devcluster\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\n"
                b"X-Stream-Protocol-Version: v4.channel.k8s.io\r\nContent-Length: 0\r\n\r\n"
            )
            async with asyncio.timeout(10):
                head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
                assert head.startswith("HTTP/1.1 101"), head
                assert "spdy/3.1" in head.lower()
                for chunk in (b"ping", b"x" * 100_000):
                    writer.write(chunk)
                    assert await reader.readexactly(len(chunk)) == chunk.upper()
        finally:
            writer.close()
    upgraded = next(h for h in raw.seen if "upgrade: spdy/3.1" in h.lower())
    assert "x-remote-user: admin" in upgraded.lower()
    assert "x-stream-protocol-version: v4.channel.k8s.io" in upgraded.lower()
