"""Static credentials and permissions: kube's `--token-auth-file` CSV, and a small YAML policy that
plays the part of RBAC (deny by default, `system:masters` always allowed, discovery for everyone
authenticated as kube's bootstrap roles do). The SubjectAccessReview endpoint answers from the same
policy, so what the devcluster allows at its front door is what a delegating backend is told."""

from __future__ import annotations

import csv
import fnmatch
import io
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from aiohttp import web

from aggapi.auth.authn import UserInfo, with_authenticated
from aggapi.auth.authz import PRIVILEGED_GROUPS, Attributes, Decision
from aggapi.machinery import apierrors

log = logging.getLogger(__name__)

# ---- tokens --------------------------------------------------------------------------------------


def parse_token_file(text: str) -> dict[str, UserInfo]:
    """`token,user,uid,"group1,group2"` per line (groups optional), as kube-apiserver reads it."""
    tokens: dict[str, UserInfo] = {}
    reader = csv.reader(io.StringIO(text), skipinitialspace=True)
    for lineno, record in enumerate(reader, 1):
        if not record or (len(record) == 1 and not record[0].strip()) or record[0].startswith("#"):
            continue
        if len(record) < 3:
            raise ValueError(f"token file line {lineno}: want at least 3 columns (token,user,uid)")
        token, user, uid = (r.strip() for r in record[:3])
        if not token or not user:
            raise ValueError(f"token file line {lineno}: token and user must not be empty")
        groups = [g.strip() for g in record[3].split(",") if g.strip()] if len(record) > 3 else []
        if token in tokens:
            log.warning("token file line %d: duplicate token, ignoring it", lineno)
            continue
        # Like kube's union authenticator: every authenticated user is in system:authenticated.
        tokens[token] = UserInfo(user, with_authenticated(groups), uid)
    return tokens


class StaticTokens:
    """Bearer tokens from the token file. An unknown token is a 401, never anonymous."""

    def __init__(self, tokens: Mapping[str, UserInfo]) -> None:
        self._tokens = dict(tokens)

    def lookup(self, token: str) -> UserInfo | None:
        return self._tokens.get(token)

    async def authenticate(self, request: web.Request) -> UserInfo | None:
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return None
        user = self.lookup(token.strip())
        if user is None:
            raise apierrors.unauthorized()
        return user


# ---- policy --------------------------------------------------------------------------------------

# kube's bootstrap ClusterRoles system:discovery, system:basic-user and system:public-info-viewer,
# bound to system:authenticated: reading discovery/OpenAPI/version/health, and asking about oneself.
DEFAULT_RULES: tuple[Mapping[str, Any], ...] = (
    {
        "groups": ["system:authenticated"],
        "verbs": ["get"],
        "nonResourceURLs": [
            "/api",
            "/api/*",
            "/apis",
            "/apis/*",
            "/openapi",
            "/openapi/*",
            "/version",
            "/version/",
            "/healthz",
            "/livez",
            "/readyz",
        ],
    },
    {
        "groups": ["system:authenticated"],
        "verbs": ["create"],
        "apiGroups": ["authorization.k8s.io", "authentication.k8s.io"],
        "resources": ["selfsubjectaccessreviews", "selfsubjectrulesreviews", "selfsubjectreviews"],
    },
)

_RULE_KEYS = {"users", "groups", "verbs", "apiGroups", "resources", "resourceNames", "namespaces"}
_RULE_KEYS |= {"nonResourceURLs"}


@dataclass(frozen=True, slots=True)
class Rule:
    users: tuple[str, ...] = ()
    groups: tuple[str, ...] = ()
    verbs: tuple[str, ...] = ()
    api_groups: tuple[str, ...] = ()
    resources: tuple[str, ...] = ()
    resource_names: tuple[str, ...] = ()
    namespaces: tuple[str, ...] = ()  # empty: any namespace and cluster scope
    non_resource_urls: tuple[str, ...] = ()

    def subject_matches(self, user: UserInfo) -> bool:
        return "*" in self.users or user.name in self.users or bool(set(self.groups) & set(user.groups))

    def matches(self, a: Attributes) -> bool:
        if not self.subject_matches(a.user) or not _any(self.verbs, a.verb):
            return False
        if not a.is_resource:
            return any(_url_matches(p, a.path) for p in self.non_resource_urls)
        if not self.resources or not _any(self.api_groups, a.group):
            return False
        res = f"{a.resource}/{a.subresource}" if a.subresource else a.resource
        if not any(_resource_matches(p, res) for p in self.resources):
            return False
        if self.namespaces and a.namespace not in self.namespaces and "*" not in self.namespaces:
            return False
        return not self.resource_names or a.name in self.resource_names


def _any(allowed: Sequence[str], value: str) -> bool:
    return "*" in allowed or value in allowed


def _url_matches(pattern: str, path: str) -> bool:
    # RBAC's rule: exact, or a prefix ending in "*".
    return path.startswith(pattern[:-1]) if pattern.endswith("*") else path == pattern


def _resource_matches(pattern: str, res: str) -> bool:
    # "*" is every resource and subresource; "pods/*" every pods subresource; "*/status" every status.
    return pattern in ("*", res) or ("*" in pattern and fnmatch.fnmatchcase(res, pattern))


def _strs(raw: Mapping[str, Any], key: str, where: str) -> tuple[str, ...]:
    value = raw.get(key) or []
    if isinstance(value, str) or not all(isinstance(v, str) for v in value):
        raise ValueError(f"{where}: {key} must be a list of strings")
    return tuple(value)


def parse_rule(raw: Any, where: str) -> Rule:
    if not isinstance(raw, Mapping):
        raise ValueError(f"{where}: a rule must be a mapping")
    unknown = set(raw) - _RULE_KEYS
    if unknown:
        raise ValueError(f"{where}: unknown fields {sorted(unknown)}")
    rule = Rule(
        *(_strs(raw, k, where) for k in ("users", "groups", "verbs", "apiGroups", "resources")),
        *(_strs(raw, k, where) for k in ("resourceNames", "namespaces", "nonResourceURLs")),
    )
    if not rule.users and not rule.groups:
        raise ValueError(f"{where}: a rule needs users or groups")
    if not rule.verbs:
        raise ValueError(f"{where}: a rule needs verbs")
    if bool(rule.resources) == bool(rule.non_resource_urls):
        raise ValueError(f"{where}: a rule has either resources (with apiGroups) or nonResourceURLs")
    if rule.resources and not rule.api_groups:
        raise ValueError(f'{where}: resource rules need apiGroups ("" is the core group)')
    return rule


@dataclass(frozen=True, slots=True)
class Policy:
    rules: tuple[Rule, ...] = ()
    # Test aid (see docs/devcluster.md): denials only SubjectAccessReview answers give, as when a
    # backend's delegated authorizer knows more than the front door.
    review_denies: tuple[Rule, ...] = ()


def parse_policy(text: str) -> Policy:
    doc = yaml.safe_load(text) or {}
    if not isinstance(doc, Mapping):
        raise ValueError("policy: the top level must be a mapping with `rules`")
    unknown = set(doc) - {"rules", "reviewDenies"}
    if unknown:
        raise ValueError(f"policy: unknown top-level fields {sorted(unknown)}")
    rules = tuple(parse_rule(r, f"rules[{i}]") for i, r in enumerate(doc.get("rules") or []))
    denies = tuple(parse_rule(r, f"reviewDenies[{i}]") for i, r in enumerate(doc.get("reviewDenies") or []))
    return Policy(rules, denies)


def load_policy(path: str) -> Policy:
    return parse_policy(Path(path).read_text()) if path else Policy()


DEFAULTS = tuple(parse_rule(r, f"default[{i}]") for i, r in enumerate(DEFAULT_RULES))


class PolicyAuthorizer:
    """Deny by default. Reasons are empty on denial, as RBAC's are, so Forbidden messages read as KAS's."""

    def __init__(self, policy: Policy, privileged_groups: Sequence[str] = PRIVILEGED_GROUPS) -> None:
        self.policy = policy
        self._privileged = frozenset(privileged_groups)

    def decide(self, a: Attributes) -> Decision:
        if self._privileged & set(a.user.groups):
            return Decision(True, "")
        for i, rule in enumerate(self.policy.rules):
            if rule.matches(a):
                return Decision(True, f"allowed by devcluster policy rule {i}")
        if any(rule.matches(a) for rule in DEFAULTS):
            return Decision(True, "allowed by a default discovery rule")
        return Decision(False, "")

    async def authorize(self, attrs: Attributes) -> Decision:
        return self.decide(attrs)

    def review(self, a: Attributes) -> tuple[Decision, bool]:
        """A SubjectAccessReview's answer: (decision, explicitly denied)."""
        if not self._privileged & set(a.user.groups):
            for i, rule in enumerate(self.policy.review_denies):
                if rule.matches(a):
                    return Decision(False, f"denied by devcluster policy reviewDenies[{i}]"), True
        return self.decide(a), False
