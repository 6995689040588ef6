"""Authorization: may this user do this. kube's authorizer.Attributes, SubjectAccessReview delegation
with a 10 s cache, and the Go generic apiserver's defaults (always-allowed health paths, system:masters)."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from aggapi.auth.authn import UserInfo

ALWAYS_ALLOW_PATHS = ("/healthz", "/livez", "/readyz")
PRIVILEGED_GROUPS = ("system:masters",)


@dataclass(frozen=True, slots=True)
class Attributes:
    user: UserInfo
    verb: str
    is_resource: bool
    path: str
    group: str = ""
    version: str = ""
    namespace: str = ""
    resource: str = ""
    subresource: str = ""
    name: str = ""


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    reason: str = ""


class Authorizer(Protocol):
    async def authorize(self, attrs: Attributes) -> Decision: ...


def path_allowed(path: str, allow: Sequence[str]) -> bool:
    """kube's --authorization-always-allow-paths: exact paths, or prefixes ending in '*'."""
    for p in allow:
        if p.endswith("*") and path.startswith(p[:-1]):
            return True
        if path == p or path.rstrip("/") == p:
            return True
    return False


class AuthenticatedOnly:
    """For a standalone server without delegated authorization: every authenticated user may do
    everything. Anonymous requests never get here (the authn middleware refuses them)."""

    async def authorize(self, attrs: Attributes) -> Decision:
        return Decision(True, "authenticated")


class AccessReviewer(Protocol):
    async def review(self, attrs: Attributes) -> Decision: ...


def _cache_key(a: Attributes) -> tuple[object, ...]:
    extra = tuple(sorted((k, tuple(v)) for k, v in a.user.extra.items()))
    return (
        a.user.name,
        a.user.groups,
        a.user.uid,
        extra,
        a.verb,
        a.is_resource,
        a.path if not a.is_resource else "",
        a.group,
        a.version,
        a.namespace,
        a.resource,
        a.subresource,
        a.name,
    )


class DelegatingAuthorizer:
    """Privileged groups are allowed locally; everything else is a SubjectAccessReview to
    kube-apiserver, whose answers (allowed and denied) are cached like the Go delegating authorizer."""

    def __init__(
        self,
        reviewer: AccessReviewer,
        *,
        privileged_groups: Sequence[str] = PRIVILEGED_GROUPS,
        allowed_ttl: float = 10.0,
        denied_ttl: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._reviewer = reviewer
        self._privileged = frozenset(privileged_groups)
        self._ttl = (denied_ttl, allowed_ttl)
        self._clock = clock
        self._cache: dict[tuple[object, ...], tuple[float, Decision]] = {}

    async def authorize(self, attrs: Attributes) -> Decision:
        if self._privileged.intersection(attrs.user.groups):
            return Decision(True, "privileged group")
        key = _cache_key(attrs)
        now = self._clock()
        hit = self._cache.get(key)
        if hit is not None and hit[0] > now:
            return hit[1]
        decision = await self._reviewer.review(attrs)
        if len(self._cache) > 8192:
            self._cache = {k: v for k, v in self._cache.items() if v[0] > now}
        self._cache[key] = (now + self._ttl[decision.allowed], decision)
        return decision
