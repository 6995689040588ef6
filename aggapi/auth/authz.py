"""Authorization: may this user do this. kube's authorizer.Attributes and the Go generic apiserver's
defaults (always-allowed health paths, system:masters)."""

from __future__ import annotations

from collections.abc import Sequence
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
    """Until delegated authorization (SubjectAccessReview) lands: every authenticated user is allowed.
    It is the weakest safe default: anonymous requests never reach it (the authn middleware refuses them)."""

    async def authorize(self, attrs: Attributes) -> Decision:
        return Decision(True, "authenticated")
