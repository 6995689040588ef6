"""Edge health votes and the verdict rules (pure: no I/O, no clock). See docs/health.md.

A vote is one pool peer's observation of one node. Peers probe k of their pool each period (not all), so
the verdict about a node is taken among its recent observers (at least `min_voters`, or a majority of a
small pool) while a majority of the pool must be voting at all; too few observers, a pool alone, a pool
cut off from the cloud (whole or mostly), or a node that is itself still voting give Unknown, never
Unhealthy.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from aggapi.apis.common import GROUP, VERSION
from aggapi.apis.edgenode import HEALTHY, UNHEALTHY, UNKNOWN
from aggapi.machinery.apierrors import Cause
from aggapi.machinery.timefmt import parse_rfc3339

API_VERSION = f"{GROUP}/{VERSION}"
VOTE_KIND = "HealthVote"
HEALTH_KIND = "NodeHealth"


@dataclass(frozen=True, slots=True)
class Vote:
    voter: str
    target: str
    observed_at: str  # RFC 3339, as the voter wrote it
    result: str  # Healthy | Unhealthy
    probes: Mapping[str, Any] = field(default_factory=dict)
    received_at: str = ""  # RFC 3339, when aggapi stored it

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "apiVersion": API_VERSION,
            "kind": VOTE_KIND,
            "voter": self.voter,
            "target": self.target,
            "observedAt": self.observed_at,
            "result": self.result,
            "probes": dict(self.probes),
        }
        if self.received_at:
            out["receivedAt"] = self.received_at
        return out

    def observed(self) -> datetime:
        """observedAt as a time; the earliest possible one if unreadable (a damaged stored vote then
        never outranks a readable one)."""
        try:
            return parse_rfc3339(self.observed_at)
        except ValueError:
            return datetime.min.replace(tzinfo=UTC)

    def received(self) -> datetime | None:
        try:
            return parse_rfc3339(self.received_at) if self.received_at else None
        except ValueError:
            return None

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> Vote:
        """A stored vote (already validated when it was posted)."""
        return cls(
            str(doc.get("voter", "")),
            str(doc.get("target", "")),
            str(doc.get("observedAt", "")),
            str(doc.get("result", "")),
            dict(doc.get("probes") or {}),
            str(doc.get("receivedAt", "")),
        )


def vote_errors(doc: Mapping[str, Any], target: str) -> list[Cause]:
    """What is wrong with a posted HealthVote about `target` (the name in the URL); [] when valid."""
    errs: list[Cause] = []

    def bad(path: str, message: str, typ: str = "FieldValueInvalid") -> None:
        errs.append(Cause(typ, message, path))

    if doc.get("apiVersion") != API_VERSION:
        bad("apiVersion", f"must be {API_VERSION}", "FieldValueNotSupported")
    if doc.get("kind") != VOTE_KIND:
        bad("kind", f"must be {VOTE_KIND}", "FieldValueNotSupported")
    voter = doc.get("voter")
    if not isinstance(voter, str) or not voter:
        bad("voter", "Required value: the name of the voting node", "FieldValueRequired")
    if doc.get("target") != target:
        bad("target", f"must be {target!r}, the node named in the URL")
    elif voter == target:
        bad("voter", "a node cannot vote about itself", "FieldValueForbidden")
    observed = doc.get("observedAt")
    try:
        if not isinstance(observed, str):
            raise ValueError
        parse_rfc3339(observed)
    except ValueError:
        bad("observedAt", "must be an RFC 3339 time")
    if doc.get("result") not in (HEALTHY, UNHEALTHY):
        bad("result", f"supported values: {HEALTHY!r}, {UNHEALTHY!r}", "FieldValueNotSupported")
    if not isinstance(doc.get("probes", {}), dict):
        bad("probes", "must be an object")
    return errs


DEFAULT_MIN_VOTERS = 3


@dataclass(frozen=True, slots=True)
class Decision:
    verdict: str  # Healthy | Unhealthy | Unknown
    reason: str
    members: int  # the pool's nodes other than the target
    voters: int  # members with a live vote about the target
    needed: int  # min(floor(members / 2) + 1, min_voters)
    active: int = 0  # members with a live vote about anyone: they reach the cloud and vote
    votes: tuple[Vote, ...] = ()  # the live votes that count

    def quorum(self) -> dict[str, int]:
        return {"members": self.members, "active": self.active, "voters": self.voters, "needed": self.needed}


@dataclass(frozen=True, slots=True)
class Activity:
    """Who of a pool the cloud hears from, from all live votes (not only those about the target)."""

    active: frozenset[str]  # nodes with a live vote about any node
    target_voting: bool  # the target itself posted a vote recently: it runs and reaches the cloud


def decide(
    target: str,
    pool: str,
    members: Collection[str],
    votes: Sequence[Vote],
    connected: Collection[str] | None,
    activity: Activity,
    *,
    min_voters: int = DEFAULT_MIN_VOTERS,
) -> Decision:
    """The verdict about `target`. `members`: the pool's nodes (the target among them or not);
    `votes`: live votes about the target (the voter's lease has not expired); `connected`: nodes with a
    tunnel agent connected, or None when this aggapi runs no tunnel (the rule on it is then skipped);
    `activity`: who is voting at all. The rules, in order, are in docs/health.md."""
    peers = set(members) - {target}
    counted = tuple(sorted((v for v in votes if v.voter in peers and v.target == target), key=_by_voter))
    majority = len(peers) // 2 + 1
    needed = max(1, min(majority, min_voters))
    active = len(activity.active & peers)
    down = [v for v in counted if v.result == UNHEALTHY]
    up = [v for v in counted if v.result == HEALTHY]

    def result(verdict: str, reason: str) -> Decision:
        return Decision(verdict, reason, len(peers), len(counted), needed, active, counted)

    if not pool:
        return result(UNKNOWN, "the node is in no NodePool: no peer can vote about it")
    if not peers:
        return result(UNKNOWN, f"the node is alone in pool {pool}: no peer can vote about it")
    if connected is not None and not (peers | {target}) & set(connected):
        return result(
            UNKNOWN,
            f"no node of pool {pool} has a tunnel agent connected: the pool may be cut off from the cloud",
        )
    if not active:
        return result(
            UNKNOWN, f"no live vote from any member of pool {pool}: the pool may be cut off from the cloud"
        )
    if active < majority:
        return result(
            UNKNOWN,
            f"only {active} of {len(peers)} members are voting, {majority} needed: "
            f"part of pool {pool} may be cut off from the cloud",
        )
    if len(counted) < needed:
        return result(UNKNOWN, f"{len(counted)} members observed the node recently, {needed} needed")
    if len(down) >= needed and (2 * len(down) > len(counted) or _all_after(down, up)):
        if activity.target_voting:
            return result(
                UNKNOWN,
                f"{len(down)} of {len(counted)} observers cannot reach the node, but it is voting itself "
                "(it runs and reaches the cloud): a partition inside the pool, not a dead node",
            )
        return result(UNHEALTHY, f"{len(down)} of {len(counted)} observers vote {UNHEALTHY}")
    if len(up) >= needed and (2 * len(up) > len(counted) or _all_after(up, down)):
        return result(HEALTHY, f"{len(up)} of {len(counted)} observers vote {HEALTHY}")
    return result(
        UNKNOWN, f"no majority: {len(up)} {HEALTHY}, {len(down)} {UNHEALTHY} of {len(counted)} observers"
    )


def _all_after(these: Sequence[Vote], others: Sequence[Vote]) -> bool:
    """Every vote in `these` was observed after every vote in `others`: the node changed state and the
    older observations are superseded (a dead node cannot be seen up again; voters' clocks are assumed
    roughly in sync — skew only delays this rule, the majority rule still applies)."""
    if not these or not others:
        return bool(these)
    return min(v.observed() for v in these) > max(v.observed() for v in others)


def _by_voter(v: Vote) -> str:
    return v.voter
