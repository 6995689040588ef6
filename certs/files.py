"""PEM files on disk: atomic writes with exact modes, loading, and create-once CAs.

All functions here are synchronous and do blocking file I/O (and, when creating, may wait on a
file lock held by another process for a few milliseconds); call them at startup or from a thread.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import secrets
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from certs.pki import CertKeyPair, issue_serving, key_matches, new_ca

log = logging.getLogger(__name__)

PRIVATE_MODE = 0o600
PUBLIC_MODE = 0o644
SERVING_NAME = "apiserver"
SERVING_CA_NAME = "apiserver-ca"


class CAError(Exception):
    """A CA (or self-signed serving pair) on disk is incomplete, unreadable or inconsistent."""


def write_pem_atomic(path: Path, data: bytes, *, private: bool) -> None:
    """Replace `path` with `data` so readers see the old or the new file, never a partial one.

    The temp file is created with the final mode (0600 private, else 0644) before any byte is
    written, so a key is never readable by others, even briefly.
    """
    path = Path(path)
    tmp = _write_tmp(path, data, PRIVATE_MODE if private else PUBLIC_MODE)
    try:
        os.replace(tmp, path)
    except BaseException:
        _unlink_quietly(tmp)
        raise
    _fsync_dir(path.parent)


def write_pair(pair: CertKeyPair, cert_path: Path, key_path: Path) -> None:
    """Write the key (0600) then the certificate (0644), each atomically."""
    write_pem_atomic(key_path, pair.key_pem(), private=True)
    write_pem_atomic(cert_path, pair.cert_pem(), private=False)


def load_cert(path: Path) -> x509.Certificate:
    """The first certificate in a PEM file."""
    data = Path(path).read_bytes()
    try:
        return x509.load_pem_x509_certificate(data)
    except ValueError as e:
        raise ValueError(f"{path}: not a PEM certificate: {e}") from e


def load_pair(cert_path: Path, key_path: Path) -> CertKeyPair:
    """Load a certificate and its ECDSA key, checking that they belong together."""
    cert = load_cert(cert_path)
    data = Path(key_path).read_bytes()
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as e:  # TypeError: the key is encrypted
        raise ValueError(f"{key_path}: not an unencrypted PEM private key: {e}") from e
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ValueError(f"{key_path}: only ECDSA keys are supported, found {type(key).__name__}")
    if not key_matches(cert, key):
        raise ValueError(f"{key_path} does not match the certificate in {cert_path}")
    return CertKeyPair(cert, key)


def not_after(path: Path) -> datetime:
    """Expiry (UTC) of the certificate in `path`."""
    return load_cert(path).not_valid_after_utc


def load_or_create_ca(
    directory: Path, name: str = "ca", *, common_name: str, valid_days: int = 3650
) -> CertKeyPair:
    """Load `<directory>/<name>.crt` + `.key`, or create both if neither exists.

    `common_name` and `valid_days` only apply to a new CA. Never replaces an existing CA: everything
    it signed would silently stop being trusted. If exactly one of the two files exists, raises
    CAError. Concurrent callers (threads or processes) on the same directory all end up with the
    same CA: creation happens under an exclusive lock on `<directory>/.<name>.lock`, and files are
    published with link(2), which never overwrites.
    """
    directory = Path(directory)
    cert_path, key_path = directory / f"{name}.crt", directory / f"{name}.key"
    if cert_path.exists() and key_path.exists():
        return _load_ca(cert_path, key_path)
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    with _exclusive(directory, name):
        present = _present(cert_path, key_path)
        if present == "both":
            return _load_ca(cert_path, key_path)
        if present != "none":
            raise CAError(_incomplete_message("CA", cert_path, key_path, present))
        pair = new_ca(common_name, valid_days=valid_days)
        _publish_new(pair, cert_path, key_path)
    log.info("created CA %r in %s", common_name, directory)
    return pair


def ensure_self_signed_serving(
    cert_dir: Path, *, common_name: str, dns_names: Sequence[str], ips: Sequence[str]
) -> tuple[Path, Path]:
    """Serving cert/key for `aggapi serve --cert-dir` when no --tls-cert-file is given.

    Uses `<cert_dir>/apiserver.crt` + `.key` if present (whatever signed them); otherwise issues
    them from a local CA, `<cert_dir>/apiserver-ca.crt` + `.key`, created once and kept so the
    caBundle given to the APIService stays valid when the serving cert is re-issued.
    """
    cert_dir = Path(cert_dir)
    cert_path, key_path = cert_dir / f"{SERVING_NAME}.crt", cert_dir / f"{SERVING_NAME}.key"
    if cert_path.exists() and key_path.exists():
        _warn_if_expired(cert_path)
        return cert_path, key_path
    cert_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    with _exclusive(cert_dir, SERVING_NAME):
        present = _present(cert_path, key_path)
        if present == "both":
            return cert_path, key_path
        if present != "none":
            raise CAError(_incomplete_message("serving certificate", cert_path, key_path, present))
        # Timestamped CN, as kube's self-signed certs do: tells one generated CA from the next.
        stamp = int(datetime.now(UTC).timestamp())
        ca = load_or_create_ca(cert_dir, SERVING_CA_NAME, common_name=f"{common_name}-ca@{stamp}")
        pair = issue_serving(ca, common_name=common_name, dns_names=dns_names, ips=ips)
        _publish_new(pair, cert_path, key_path)
    log.info("generated self-signed serving certificate %s (CA %s)", cert_path, cert_dir / SERVING_CA_NAME)
    return cert_path, key_path


# --- internals -------------------------------------------------------------------------------


def _load_ca(cert_path: Path, key_path: Path) -> CertKeyPair:
    try:
        pair = load_pair(cert_path, key_path)
    except (OSError, ValueError) as e:
        raise CAError(f"cannot load CA from {cert_path} and {key_path}: {e}") from e
    try:
        is_ca = pair.cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        is_ca = False
    if not is_ca:
        raise CAError(f"{cert_path} is not a CA certificate (no BasicConstraints CA:TRUE)")
    return pair


def _present(cert_path: Path, key_path: Path) -> str:
    has_cert, has_key = cert_path.exists(), key_path.exists()
    if has_cert and has_key:
        return "both"
    if has_cert:
        return "cert"
    return "key" if has_key else "none"


def _incomplete_message(what: str, cert_path: Path, key_path: Path, present: str) -> str:
    have, missing = (cert_path, key_path) if present == "cert" else (key_path, cert_path)
    return (
        f"{what} is incomplete: {have} exists but {missing} is missing. Restore the missing file, "
        f"or remove {have} to generate a new one (certificates it signed will no longer be trusted)"
    )


def _publish_new(pair: CertKeyPair, cert_path: Path, key_path: Path) -> None:
    """Make fully written files appear under their final names without overwriting anything.

    The key goes first, so a lock-free reader that sees the certificate also finds its key.
    """
    key_tmp = _write_tmp(key_path, pair.key_pem(), PRIVATE_MODE)
    cert_tmp: Path | None = None
    try:
        cert_tmp = _write_tmp(cert_path, pair.cert_pem(), PUBLIC_MODE)
        for tmp, final in ((key_tmp, key_path), (cert_tmp, cert_path)):
            try:
                os.link(tmp, final)
            except FileExistsError:
                raise CAError(f"{final} appeared while creating it; a writer ignored the lock") from None
    finally:
        _unlink_quietly(key_tmp)
        if cert_tmp is not None:
            _unlink_quietly(cert_tmp)
    _fsync_dir(cert_path.parent)


@contextlib.contextmanager
def _exclusive(directory: Path, name: str) -> Iterator[None]:
    # flock is per open file description, so it also serialises threads of one process.
    # The lock file stays: deleting it would let a waiter and a newcomer lock different inodes.
    fd = os.open(directory / f".{name}.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, PRIVATE_MODE)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _write_tmp(path: Path, data: bytes, mode: int) -> Path:
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
    try:
        os.fchmod(fd, mode)  # the umask may have narrowed the create mode; make it exact
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        _unlink_quietly(tmp)
        raise
    os.close(fd)
    return tmp


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _unlink_quietly(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


def _warn_if_expired(cert_path: Path) -> None:
    try:
        end = not_after(cert_path)
    except (OSError, ValueError):
        return  # the TLS setup that loads it next reports this properly
    if end <= datetime.now(UTC):
        log.warning(
            "serving certificate %s expired at %s; remove it to have a new one generated", cert_path, end
        )
