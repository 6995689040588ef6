"""Serving certificate rotation: new connections get the new certificate, open watches keep running."""

from __future__ import annotations

import asyncio
import ssl
from pathlib import Path

from support.aggapi import NP, AggapiServer, api_client, nodepool

from aggapi.devlab import LabPKI
from certs.files import load_pair, write_pair
from certs.pki import issue_serving


async def _served_serial(server: AggapiServer) -> int:
    ctx = ssl.create_default_context(cafile=str(server.pki.ca))
    _reader, writer = await asyncio.open_connection("127.0.0.1", server.port, ssl=ctx)
    try:
        der = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
        from cryptography import x509

        return x509.load_der_x509_certificate(der).serial_number
    finally:
        writer.close()


async def test_rotated_serving_cert_is_served_and_open_watch_survives(
    fresh_aggapi: AggapiServer, pki: LabPKI, tmp_path: Path
) -> None:
    cert, key = tmp_path / "serving.crt", tmp_path / "serving.key"
    ca = load_pair(pki.ca, pki.ca.with_suffix(".key"))
    first = issue_serving(ca, common_name="aggapi", dns_names=["localhost"], ips=["127.0.0.1"])
    write_pair(first, cert, key)
    fresh_aggapi.extra_args = (
        f"--tls-cert-file={cert}",
        f"--tls-private-key-file={key}",
        "--cert-reload-interval=200ms",
    )
    fresh_aggapi.start()
    assert await _served_serial(fresh_aggapi) == first.cert.serial_number

    async with api_client(fresh_aggapi) as api:
        status, created = await api.post(NP, nodepool("rot-1"))
        assert status == 201, created
        async with api.watch(NP, {"resourceVersion": created["metadata"]["resourceVersion"]}) as events:
            second = issue_serving(ca, common_name="aggapi", dns_names=["localhost"], ips=["127.0.0.1"])
            write_pair(second, cert, key)  # atomic replace of both files, as a cert manager does
            for _ in range(150):  # the reloader polls the files; bounded wait
                if await _served_serial(fresh_aggapi) == second.cert.serial_number:
                    break
                await asyncio.sleep(0.1)
            assert await _served_serial(fresh_aggapi) == second.cert.serial_number
            # The watch opened on the old certificate still delivers.
            status, _ = await api.patch(f"{NP}/rot-1", {"spec": {"labels": {"after": "rotation"}}})
            assert status == 200
            ev = await asyncio.wait_for(events.get(), 10)
            assert ev["type"] == "MODIFIED"
            assert ev["object"]["spec"]["labels"] == {"after": "rotation"}
        # The expiry of the certificate now in use is exported.
        status, text = await api.get("/metrics")
        assert status == 200
        want = f"{second.cert.not_valid_after_utc.timestamp():.10e}"
        line = next(
            x for x in text.splitlines() if x.startswith("aggapi_certificate_expiration_timestamp_seconds{")
        )
        assert 'certificate="serving"' in line and float(line.split()[-1]) == float(want)


async def test_client_ca_file_change_is_picked_up_without_restart(
    fresh_aggapi: AggapiServer, pki: LabPKI, tmp_path: Path
) -> None:
    from certs.pki import issue_client, new_ca

    bundle = tmp_path / "client-ca.crt"
    bundle.write_bytes(pki.ca.read_bytes())
    fresh_aggapi.extra_args = (f"--client-ca-file={bundle}", "--cert-reload-interval=200ms")
    fresh_aggapi.start()
    new = new_ca("second-client-ca")
    user = issue_client(new, common_name="bob", organizations=["system:masters"])
    write_pair(user, tmp_path / "bob.crt", tmp_path / "bob.key")

    async def status_as_bob() -> int:
        ctx = ssl.create_default_context(cafile=str(pki.ca))
        ctx.load_cert_chain(str(tmp_path / "bob.crt"), str(tmp_path / "bob.key"))
        import aiohttp

        try:
            async with (
                aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=ctx)) as s,
                s.get(fresh_aggapi.url + NP) as r,
            ):
                return r.status
        except aiohttp.ClientError:
            return -1  # the handshake refused an untrusted certificate

    assert await status_as_bob() in (-1, 401)
    bundle.write_bytes(pki.ca.read_bytes() + new.cert_pem())  # add the new CA to the bundle
    for _ in range(150):
        if await status_as_bob() == 200:
            break
        await asyncio.sleep(0.1)
    assert await status_as_bob() == 200
