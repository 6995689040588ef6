"""Authentication: who is calling. A chain of authenticators; the first that recognises the request wins."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from aiohttp import web

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


def _subject(peercert: Mapping[str, Any]) -> tuple[str, list[str]]:
    cn, orgs = "", []
    for rdn in peercert.get("subject", ()):
        for key, value in rdn:
            if key == "commonName" and not cn:
                cn = value
            elif key == "organizationName":
                orgs.append(value)
    return cn, orgs


class X509Authenticator:
    """Client certificates verified by the TLS handshake against --client-ca-file: CN is the user,
    O entries are groups (kube-apiserver's x509 authenticator)."""

    async def authenticate(self, request: web.Request) -> UserInfo | None:
        transport = request.transport
        if transport is None:
            return None
        peercert = transport.get_extra_info("peercert")
        if not peercert:
            return None
        cn, orgs = _subject(peercert)
        if not cn:
            return None
        groups = tuple(dict.fromkeys([*orgs, AUTHENTICATED]))
        return UserInfo(cn, groups)


class Chain:
    def __init__(self, authenticators: Sequence[Authenticator]) -> None:
        self.authenticators = list(authenticators)

    async def authenticate(self, request: web.Request) -> UserInfo | None:
        for a in self.authenticators:
            user = await a.authenticate(request)
            if user is not None:
                return user
        return None
