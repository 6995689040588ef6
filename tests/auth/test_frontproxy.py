"""Authentication straight to aggapi: front-proxy headers are trusted only from the aggregator's
certificate; anything else that claims a user in headers is refused, never passed on."""

from __future__ import annotations

import ssl
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest
from support.aggapi import NP, AggapiServer

from aggapi.devlab import LabPKI
from certs.files import write_pair
from certs.pki import CertKeyPair, issue_client, new_ca


@dataclass
class FrontProxy:
    ca_file: Path
    allowed: Path  # cert/key with CN front-proxy-client
    other_cn: Path  # signed by the front-proxy CA, CN not allowed
    other_ca: Path  # CN allowed, but signed by an unrelated CA


def _write(pair: CertKeyPair, base: Path) -> Path:
    write_pair(pair, base.with_suffix(".crt"), base.with_suffix(".key"))
    return base


@pytest.fixture(scope="module")
def front_proxy(tmp_path_factory: pytest.TempPathFactory) -> FrontProxy:
    d = tmp_path_factory.mktemp("front-proxy")
    ca = new_ca("front-proxy-ca")
    (d / "ca.crt").write_bytes(ca.cert_pem())
    rogue = new_ca("front-proxy-ca")  # same name, different key: must not be trusted
    return FrontProxy(
        d / "ca.crt",
        _write(issue_client(ca, common_name="front-proxy-client"), d / "allowed"),
        _write(issue_client(ca, common_name="someone-else"), d / "other-cn"),
        _write(issue_client(rogue, common_name="front-proxy-client"), d / "other-ca"),
    )


@pytest.fixture(scope="module")
def server(
    etcd_server: object, pki: LabPKI, front_proxy: FrontProxy, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[AggapiServer]:
    srv = AggapiServer(
        pki,
        etcd_server.client_url,  # type: ignore[attr-defined]
        tmp_path_factory.mktemp("aggapi-fp"),
        extra_args=(
            f"--requestheader-client-ca-file={front_proxy.ca_file}",
            "--requestheader-allowed-names=front-proxy-client",
        ),
    )
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()


def _ctx(pki: LabPKI, cert: Path | None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(pki.ca))
    if cert is not None:
        ctx.load_cert_chain(str(cert.with_suffix(".crt")), str(cert.with_suffix(".key")))
    return ctx


async def _get(
    server: AggapiServer, cert: Path | None, headers: dict[str, str], path: str = NP
) -> tuple[int, dict]:
    conn = aiohttp.TCPConnector(ssl=_ctx(server.pki, cert))
    async with aiohttp.ClientSession(connector=conn) as s, s.get(server.url + path, headers=headers) as r:
        return r.status, await r.json(content_type=None)


async def test_front_proxy_headers_are_the_user(server: AggapiServer, front_proxy: FrontProxy) -> None:
    status, body = await _get(
        server, front_proxy.allowed, {"X-Remote-User": "alice", "X-Remote-Group": "devs"}
    )
    assert status == 200, body
    assert body["kind"] == "NodePoolList"


async def test_forged_remote_user_with_ordinary_client_cert_is_refused(
    server: AggapiServer, pki: LabPKI
) -> None:
    admin = pki.admin_cert.with_suffix("")  # a valid client cert (system:masters) — but not the front proxy
    status, body = await _get(
        server, admin, {"X-Remote-User": "system:admin", "X-Remote-Group": "system:masters"}
    )
    assert status == 401
    assert body["kind"] == "Status" and body["reason"] == "Unauthorized"
    # The same cert without forged headers is fine: it is the headers that are refused.
    assert (await _get(server, admin, {}))[0] == 200


async def test_remote_user_without_any_client_cert_is_refused(server: AggapiServer) -> None:
    status, body = await _get(server, None, {"X-Remote-User": "system:admin"})
    assert status == 401 and body["reason"] == "Unauthorized"


async def test_front_proxy_cert_with_a_name_not_allowed_is_refused(
    server: AggapiServer, front_proxy: FrontProxy
) -> None:
    status, body = await _get(server, front_proxy.other_cn, {"X-Remote-User": "alice"})
    assert status == 401 and body["reason"] == "Unauthorized"


async def test_front_proxy_cert_from_another_ca_is_refused(
    server: AggapiServer, front_proxy: FrontProxy
) -> None:
    # The TLS layer does not trust the rogue CA, so the handshake itself fails: no request gets in.
    with pytest.raises(aiohttp.ClientError):
        await _get(server, front_proxy.other_ca, {"X-Remote-User": "alice"})


async def test_front_proxy_cert_alone_is_not_a_user(server: AggapiServer, front_proxy: FrontProxy) -> None:
    # The aggregator's certificate is not issued by the client CA: without headers it authenticates nobody.
    status, body = await _get(server, front_proxy.allowed, {})
    assert status == 401 and body["reason"] == "Unauthorized"
