"""Authentication: who is calling. A chain; the first authenticator that recognises the request wins.
Order matters: front-proxy headers first (and a request with those headers but without a valid
front-proxy certificate is refused, never passed on), then client certificates, then bearer tokens."""

from __future__ import annotations

import functools
import hashlib
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol
from urllib.parse import unquote

from aiohttp import web
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.x509.oid import NameOID

from aggapi.auth.authconfig import AuthConfig
from aggapi.machinery import apierrors

log = logging.getLogger(__name__)

AUTHENTICATED = "system:authenticated"


@dataclass(frozen=True, slots=True)
class UserInfo:
    name: str
    groups: tuple[str, ...] = ()
    uid: str = ""
    extra: Mapping[str, tuple[str, ...]] = field(default_factory=dict)


class Authenticator(Protocol):
    async def authenticate(self, request: web.Request) -> UserInfo | None: ...


def with_authenticated(groups: Sequence[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys([*groups, AUTHENTICATED]))


# ---- client certificates -------------------------------------------------------------------------


@functools.lru_cache(maxsize=1024)  # the same few certificates connect over and over
def _load_der(der: bytes) -> x509.Certificate:
    return x509.load_der_x509_certificate(der)


def peer_certificate(request: web.Request) -> x509.Certificate | None:
    """The client's leaf certificate (already verified by the TLS handshake against the union of the
    client and front-proxy CAs; which of them issued it is decided by the authenticators)."""
    transport = request.transport
    ssl_object = transport.get_extra_info("ssl_object") if transport is not None else None
    if ssl_object is None:
        return None
    der = ssl_object.getpeercert(binary_form=True)
    if not der:
        return None
    return _load_der(der)


def issued_by_any(cert: x509.Certificate, cas: Sequence[x509.Certificate]) -> bool:
    return _issued_by_any(cert, tuple(cas))


# Signature checks are costly and the same few certificates connect over and over; the key includes
# the CA set, so a changed CA bundle is checked afresh.
@functools.lru_cache(maxsize=4096)
def _issued_by_any(cert: x509.Certificate, cas: tuple[x509.Certificate, ...]) -> bool:
    for ca in cas:
        if cert.issuer != ca.subject:
            continue
        try:
            cert.verify_directly_issued_by(ca)
        except (ValueError, TypeError, InvalidSignature):
            continue
        return True
    return False


def _names(cert: x509.Certificate, oid: x509.ObjectIdentifier) -> list[str]:
    return [str(a.value) for a in cert.subject.get_attributes_for_oid(oid)]


class X509Authenticator:
    """Certificates issued by the client CA: CN is the user, O entries are groups."""

    def __init__(self, config: Callable[[], AuthConfig]) -> None:
        self._config = config

    async def authenticate(self, request: web.Request) -> UserInfo | None:
        cert = peer_certificate(request)
        if cert is None or not issued_by_any(cert, self._config().client_cas):
            return None
        cn = _names(cert, NameOID.COMMON_NAME)
        if not cn:
            return None
        return UserInfo(cn[0], with_authenticated(_names(cert, NameOID.ORGANIZATION_NAME)))


class RequestHeaderAuthenticator:
    """kube-aggregator's front proxy: the user, groups and extras are in headers, trusted only when the
    connection's client certificate chains to the requestheader CA and its CN is an allowed name."""

    def __init__(self, config: Callable[[], AuthConfig]) -> None:
        self._config = config

    async def authenticate(self, request: web.Request) -> UserInfo | None:
        rh = self._config().requestheader
        headers = request.headers
        names = rh.username_headers if rh is not None else ("X-Remote-User",)
        user = next((headers[h] for h in names if headers.get(h)), "")
        if not user:
            return None
        cert = peer_certificate(request)
        if rh is None or cert is None or not issued_by_any(cert, rh.cas):
            raise apierrors.unauthorized(
                "Unauthorized: user headers require a valid front-proxy client certificate"
            )
        cn = _names(cert, NameOID.COMMON_NAME)
        if rh.allowed_names and not (cn and cn[0] in rh.allowed_names):
            raise apierrors.unauthorized("Unauthorized: front-proxy client certificate name is not allowed")
        # One group per header line, as kube reads them (a group name may itself contain a comma).
        groups = [v for h in rh.group_headers for v in headers.getall(h, []) if v]
        uid = next((headers[h] for h in rh.uid_headers if headers.get(h)), "")
        extra: dict[str, list[str]] = {}
        for prefix in rh.extra_prefixes:
            low = prefix.lower()
            for key, value in headers.items():
                if key.lower().startswith(low) and len(key) > len(prefix):
                    # Extra keys are lower-cased and percent-decoded, as kube does.
                    extra.setdefault(unquote(key[len(prefix) :].lower()), []).append(value)
        # Like kube, users asserted by the front proxy are authenticated users.
        return UserInfo(user, with_authenticated(groups), uid, {k: tuple(v) for k, v in extra.items()})


# ---- bearer tokens -------------------------------------------------------------------------------


class TokenReviewer(Protocol):
    async def review(self, token: str) -> UserInfo | None: ...


class TokenAuthenticator:
    """Bearer tokens checked by TokenReview, answers (yes and no) cached for `ttl` seconds."""

    def __init__(
        self, reviewer: TokenReviewer, ttl: float = 10.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._reviewer = reviewer
        self._ttl = ttl
        self._clock = clock
        self._cache: dict[bytes, tuple[float, UserInfo | None]] = {}

    async def authenticate(self, request: web.Request) -> UserInfo | None:
        auth = request.headers.get("Authorization", "")
        scheme, _, token = auth.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return None
        token = token.strip()
        key = hashlib.sha256(token.encode()).digest()  # never keep tokens themselves in memory longer
        now = self._clock()
        hit = self._cache.get(key)
        if hit is not None and hit[0] > now:
            user = hit[1]
        else:
            user = await self._reviewer.review(token)
            if len(self._cache) > 4096:
                self._cache = {k: v for k, v in self._cache.items() if v[0] > now}
            self._cache[key] = (now + self._ttl, user)
        if user is None:
            raise apierrors.unauthorized()
        return user


class Chain:
    def __init__(self, authenticators: Sequence[Authenticator]) -> None:
        self.authenticators = list(authenticators)

    async def authenticate(self, request: web.Request) -> UserInfo | None:
        for a in self.authenticators:
            user = await a.authenticate(request)
            if user is not None:
                return user
        return None
