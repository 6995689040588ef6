"""In-memory certificate operations: CAs, leaf certificates, CSRs.

Keys are ECDSA P-256: small, fast to generate, and accepted by Go TLS (kube-apiserver, kubectl,
etcd) as well as OpenSSL. Certificates carry the extensions strict verifiers expect (OpenSSL's
X509_STRICT, Go's crypto/x509): SKI/AKI, critical BasicConstraints and KeyUsage, EKU, SAN.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal, TypeAlias

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

log = logging.getLogger(__name__)

PrivateKey: TypeAlias = ec.EllipticCurvePrivateKey
Usage = Literal["client", "server", "peer"]

# Backdate notBefore so a peer whose clock runs a little behind still accepts a fresh cert.
CLOCK_SKEW = timedelta(minutes=5)
_MIN_RSA_BITS = 2048


@dataclass(frozen=True, slots=True)
class CertKeyPair:
    cert: x509.Certificate
    key: PrivateKey

    def cert_pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    def key_pem(self) -> bytes:
        """PKCS#8, unencrypted, PEM."""
        return self.key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )


def new_key() -> PrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def new_ca(common_name: str, *, valid_days: int = 3650, now: datetime | None = None) -> CertKeyPair:
    """A self-signed CA that may sign leaf certificates only (pathLen 0)."""
    _require_cn(common_name)
    key = new_key()
    start, end = _validity(now, valid_days)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(digital_signature=True, cert_sign=True), critical=True)
        .add_extension(ski, critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False)
        .sign(key, hashes.SHA256())
    )
    log.debug("created CA %r serial=%x", common_name, cert.serial_number)
    return CertKeyPair(cert, key)


def issue_serving(
    ca: CertKeyPair,
    *,
    common_name: str,
    dns_names: Sequence[str] = (),
    ips: Sequence[str] = (),
    valid_days: int = 365,
    now: datetime | None = None,
    organizations: Sequence[str] = (),
) -> CertKeyPair:
    """A TLS server certificate. At least one DNS name or IP is required: Go ignores the CN. (A kubelet's
    serving certificate carries O=system:nodes, CN=system:node:<name>.)"""
    key = new_key()
    subject = _subject(common_name, organizations)
    cert = _issue(
        ca,
        key.public_key(),
        subject,
        usage="server",
        dns_names=dns_names,
        ips=ips,
        valid_days=valid_days,
        now=now,
    )
    return CertKeyPair(cert, key)


def issue_client(
    ca: CertKeyPair,
    *,
    common_name: str,
    organizations: Sequence[str] = (),
    valid_days: int = 365,
    now: datetime | None = None,
) -> CertKeyPair:
    """A TLS client certificate; Kubernetes reads CN as the user name and each O as a group."""
    key = new_key()
    subject = _subject(common_name, organizations)
    cert = _issue(ca, key.public_key(), subject, usage="client", valid_days=valid_days, now=now)
    return CertKeyPair(cert, key)


def issue_peer(
    ca: CertKeyPair,
    *,
    common_name: str,
    organizations: Sequence[str] = (),
    dns_names: Sequence[str] = (),
    ips: Sequence[str] = (),
    valid_days: int = 365,
    now: datetime | None = None,
) -> CertKeyPair:
    """One certificate usable for both ends of an mTLS link (serverAuth + clientAuth)."""
    key = new_key()
    subject = _subject(common_name, organizations)
    cert = _issue(
        ca,
        key.public_key(),
        subject,
        usage="peer",
        dns_names=dns_names,
        ips=ips,
        valid_days=valid_days,
        now=now,
    )
    return CertKeyPair(cert, key)


def new_csr(
    common_name: str,
    organizations: Sequence[str] = (),
    dns_names: Sequence[str] = (),
    ips: Sequence[str] = (),
) -> tuple[bytes, PrivateKey]:
    """A PEM certificate signing request and the private key it was made with."""
    key = new_key()
    builder = x509.CertificateSigningRequestBuilder().subject_name(_subject(common_name, organizations))
    sans = _sans(dns_names, ips)
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    csr = builder.sign(key, hashes.SHA256())
    return csr.public_bytes(serialization.Encoding.PEM), key


def sign_csr(
    ca: CertKeyPair,
    csr_pem: bytes,
    *,
    usage: Usage,
    valid_days: int = 365,
    now: datetime | None = None,
) -> bytes:
    """Sign a CSR and return the certificate PEM.

    Whether the requester deserves the identity it asks for is the caller's decision; this only
    checks that the CSR is well formed and self-consistent. Only CN, O and DNS/IP SANs are copied;
    usages and all other requested extensions are decided here, not by the requester.
    """
    try:
        csr = x509.load_pem_x509_csr(csr_pem)
    except ValueError as e:
        raise ValueError(f"not a PEM certificate signing request: {e}") from e
    if not csr.is_signature_valid:
        raise ValueError("CSR signature does not verify: the request was altered or signed with another key")
    public_key = csr.public_key()
    if isinstance(public_key, rsa.RSAPublicKey):
        if public_key.key_size < _MIN_RSA_BITS:
            raise ValueError(f"CSR RSA key is {public_key.key_size} bits; at least {_MIN_RSA_BITS} required")
    elif not isinstance(public_key, ec.EllipticCurvePublicKey):
        raise ValueError(f"CSR key type {type(public_key).__name__} is not supported (use ECDSA or RSA)")
    user, groups = subject_identity(csr)
    if not user:
        raise ValueError("CSR subject has no CommonName")
    dns_names: list[str] = []
    ips: list[str] = []
    try:
        san = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        pass
    else:
        for entry in san:
            if isinstance(entry, x509.DNSName):
                dns_names.append(entry.value)
            elif isinstance(entry, x509.IPAddress):
                ips.append(str(entry.value))
            else:
                raise ValueError(f"CSR asks for an unsupported subjectAltName {entry!r} (only DNS and IP)")
    subject = _subject(user, groups)
    cert = _issue(
        ca, public_key, subject, usage=usage, dns_names=dns_names, ips=ips, valid_days=valid_days, now=now
    )
    return cert.public_bytes(serialization.Encoding.PEM)


def service_dns_names(service: str, namespace: str) -> list[str]:
    """The names a Service is reached by inside the cluster (what KAS dials for an APIService)."""
    if not service or not namespace:
        raise ValueError("service and namespace must be non-empty")
    return [
        service,
        f"{service}.{namespace}",
        f"{service}.{namespace}.svc",
        f"{service}.{namespace}.svc.cluster.local",
    ]


def subject_identity(cert: x509.Certificate | x509.CertificateSigningRequest) -> tuple[str, list[str]]:
    """(user, groups) as Kubernetes' x509 authenticator reads them: CN and each O.

    An empty user means the certificate carries no identity; callers must treat it as unauthenticated.
    """
    cns = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    orgs = cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)
    user = _attr_str(cns[0].value) if cns else ""
    return user, [_attr_str(o.value) for o in orgs]


def issued_by(cert: x509.Certificate, ca: x509.Certificate) -> bool:
    """True when `ca` signed `cert` (issuer name matches and the signature verifies). Never raises."""
    if cert.issuer != ca.subject:
        return False
    try:
        cert.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def key_matches(cert: x509.Certificate, key: PrivateKey) -> bool:
    return cert.public_key() == key.public_key()


# --- internals -------------------------------------------------------------------------------


def _issue(
    ca: CertKeyPair,
    public_key: ec.EllipticCurvePublicKey | rsa.RSAPublicKey,
    subject: x509.Name,
    *,
    usage: Usage,
    dns_names: Sequence[str] = (),
    ips: Sequence[str] = (),
    valid_days: int,
    now: datetime | None,
) -> x509.Certificate:
    _check_ca(ca)
    if usage not in ("client", "server", "peer"):
        raise ValueError(f"unknown usage {usage!r}; want client, server or peer")
    sans = _sans(dns_names, ips)
    if usage != "client" and not sans:
        raise ValueError("a serving certificate needs at least one DNS name or IP address")
    start, end = _validity(now, valid_days)
    # A leaf outliving its CA would only fail later and more confusingly; stop it at the CA's end.
    end = min(end, ca.cert.not_valid_after_utc)
    if end <= start:
        raise ValueError(f"CA {ca.cert.subject.rfc4514_string()} has expired")
    ekus = {
        "client": [ExtendedKeyUsageOID.CLIENT_AUTH],
        "server": [ExtendedKeyUsageOID.SERVER_AUTH],
        "peer": [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH],
    }[usage]
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(ca.cert.subject)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        # RSA keys (from CSRs) need keyEncipherment for TLS 1.2 RSA key exchange; EC keys don't.
        .add_extension(
            _key_usage(digital_signature=True, key_encipherment=isinstance(public_key, rsa.RSAPublicKey)),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage(ekus), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .add_extension(_authority_key_id(ca.cert), critical=False)
    )
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    cert = builder.sign(ca.key, hashes.SHA256())
    log.debug("issued %s certificate %s serial=%x", usage, subject.rfc4514_string(), cert.serial_number)
    return cert


def _check_ca(ca: CertKeyPair) -> None:
    try:
        bc = ca.cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        bc = None
    if bc is None or not bc.ca:
        raise ValueError(f"{ca.cert.subject.rfc4514_string()} is not a CA certificate")
    if not key_matches(ca.cert, ca.key):
        raise ValueError(f"CA key does not match CA certificate {ca.cert.subject.rfc4514_string()}")


def _authority_key_id(ca_cert: x509.Certificate) -> x509.AuthorityKeyIdentifier:
    try:
        ski = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    except x509.ExtensionNotFound:
        # A CA made elsewhere without SKI: derive the id from its key, as it would have been.
        pub = ca_cert.public_key()
        if not isinstance(pub, ec.EllipticCurvePublicKey | rsa.RSAPublicKey):
            raise ValueError(f"unsupported CA key type {type(pub).__name__}") from None
        return x509.AuthorityKeyIdentifier.from_issuer_public_key(pub)
    return x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski)


def _subject(common_name: str, organizations: Sequence[str]) -> x509.Name:
    _require_cn(common_name)
    attrs = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, o) for o in organizations if o]
    attrs.append(x509.NameAttribute(NameOID.COMMON_NAME, common_name))
    return x509.Name(attrs)


def _sans(dns_names: Sequence[str], ips: Sequence[str]) -> list[x509.GeneralName]:
    out: list[x509.GeneralName] = []
    seen: set[str] = set()
    for name in dns_names:
        if not name or name in seen:
            continue
        seen.add(name)
        out.append(x509.DNSName(name))
    for raw in ips:
        try:
            ip = ipaddress.ip_address(raw.strip())
        except ValueError:
            raise ValueError(f"not an IP address: {raw!r}") from None
        if str(ip) in seen:
            continue
        seen.add(str(ip))
        out.append(x509.IPAddress(ip))
    return out


def _key_usage(
    *, digital_signature: bool = False, key_encipherment: bool = False, cert_sign: bool = False
) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=digital_signature,
        content_commitment=False,
        key_encipherment=key_encipherment,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=cert_sign,
        crl_sign=cert_sign,
        encipher_only=False,
        decipher_only=False,
    )


def _validity(now: datetime | None, valid_days: int) -> tuple[datetime, datetime]:
    if valid_days <= 0:
        raise ValueError(f"valid_days must be positive, got {valid_days}")
    if now is None:
        now = datetime.now(UTC)
    elif now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    now = now.astimezone(UTC)
    return now - CLOCK_SKEW, now + timedelta(days=valid_days)


def _require_cn(common_name: str) -> None:
    if not common_name:
        raise ValueError("common name must be non-empty")


def _attr_str(value: str | bytes) -> str:
    return value if isinstance(value, str) else value.decode("utf-8", "replace")
