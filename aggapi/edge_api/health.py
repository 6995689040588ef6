"""`edgenodes/{name}/health`: pool peers POST HealthVotes about a node; GET returns its NodeHealth.

Votes live in aggapi's etcd at `<etcd prefix>/aggapi.internal/health-votes/<target>/<voter>`, each under an
etcd lease of --health-vote-ttl, so a voter that stops voting drops out by itself. Leases are shared: one
granted lease serves every vote written within `reuse` = ttl/10 seconds (whole seconds, 0 below 10 s) and
is granted for ttl + reuse, so a vote lives between ttl and ttl + reuse after its write and a pool of N
voters costs one LeaseGrant per `reuse` seconds instead of one per vote.

Authorization happened before (edgenodes/health, create or get). A vote must further come from the voter
itself (client user system:node:<voter>, group system:nodes) about a node of its own pool (403 otherwise);
a node never votes about itself (422). The verdict rules are in health_verdict.py and docs/health.md. The
verdict of every edge node is recomputed every `interval` (one etcd range over all votes) for the
edgenodes HEALTH column; when it changed is kept in memory (per replica, see docs/health.md).
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

import orjson
from aiohttp import web

from aggapi.apis.edgenode import EDGENODE, UNKNOWN
from aggapi.controllers import nodes as n
from aggapi.controllers.informer import Obj
from aggapi.controllers.nodes import NodeDirectory
from aggapi.edge_api.health_verdict import (
    API_VERSION,
    DEFAULT_MIN_VOTERS,
    HEALTH_KIND,
    Activity,
    Decision,
    Vote,
    decide,
    vote_errors,
)
from aggapi.http import body as bodies
from aggapi.http.handlers import respond
from aggapi.http.middleware import USER_KEY
from aggapi.http.requestinfo import RequestInfo
from aggapi.machinery import apierrors
from aggapi.machinery.timefmt import format_rfc3339, parse_rfc3339
from aggapi.storage.etcd import prefix_end
from aggapi.storage.etcd_types import Compare, OpPut, RangeResult, TxnResult

log = logging.getLogger(__name__)

NODE_USER_PREFIX = "system:node:"
NODES_GROUP = "system:nodes"
DEFAULT_VOTE_TTL = 30.0  # 3 probe periods of 10 s
MIN_LEASE_TTL = 2  # etcd's smallest lease TTL with its default heartbeat and election timeout
MAX_CLOCK_AHEAD = timedelta(seconds=5)  # how far a voter's observedAt may be ahead of aggapi's clock


class Etcd(Protocol):
    async def range(self, key: bytes, range_end: bytes | None = None) -> RangeResult: ...
    async def put(self, key: bytes, value: bytes, *, lease: int = 0) -> int: ...
    async def lease_grant(self, ttl: int) -> int: ...
    async def txn(self, compares: list[Compare], success: list[OpPut]) -> TxnResult: ...


class Agents(Protocol):
    def agents(self) -> Mapping[str, Any]: ...


Posts = dict[str, datetime]  # voter → when its newest live vote was received


def _utcnow() -> datetime:
    return datetime.now(UTC)


class VoteStore:
    def __init__(
        self, etcd: Etcd, prefix: str, ttl: float, *, monotonic: Callable[[], float] = time.monotonic
    ) -> None:
        self._etcd = etcd
        self.dir = f"{prefix.rstrip('/')}/aggapi.internal/health-votes/"
        self.ttl = max(MIN_LEASE_TTL, math.ceil(ttl))
        self.reuse = self.ttl // 10
        self._now = monotonic
        self._lease: tuple[int, float] | None = None  # (id, when granted)
        self._lock = asyncio.Lock()

    def key(self, target: str, voter: str) -> bytes:
        return f"{self.dir}{target}/{voter}".encode()

    async def _lease_id(self) -> int:
        async with self._lock:
            now = self._now()
            if self._lease is not None and now - self._lease[1] < self.reuse:
                return self._lease[0]
            lease = await self._etcd.lease_grant(self.ttl + self.reuse)
            self._lease = (lease, now)
            return lease

    async def put(self, vote: Vote) -> None:
        """Store `vote` unless the voter's stored vote about the target was observed later (a vote posted
        late, e.g. queued during an outage, never replaces a newer one): then raises StaleVote."""
        key = self.key(vote.target, vote.voter)
        value = orjson.dumps(vote.to_json())
        for _ in range(5):  # only concurrent posts by the same voter about the same node retry
            res = await self._etcd.range(key)
            if res.kvs:
                stored = _vote_or_none(res.kvs[0].value)
                if stored is not None and stored.observed() > vote.observed():
                    raise StaleVote(stored)
                guard = Compare(key, "mod", "==", res.kvs[0].mod_revision)
            else:
                guard = Compare(key, "create", "==", 0)
            lease = await self._lease_id()
            try:
                done = await self._etcd.txn([guard], [OpPut(key, value, lease=lease)])
            except (
                Exception
            ):  # e.g. the shared lease is gone (revoked, etcd restored): next write grants anew
                self._lease = None
                raise
            if done.succeeded:
                return
        raise RuntimeError(f"vote of {vote.voter} about {vote.target}: too many concurrent writes")

    async def votes(self, target: str | None = None) -> list[Vote]:
        """Live votes about `target`, or about every node."""
        start = (self.dir + (f"{target}/" if target is not None else "")).encode()
        res = await self._etcd.range(start, prefix_end(start))
        out = []
        for kv in res.kvs:
            vote = _vote_or_none(kv.value)
            if vote is None:
                log.warning("ignoring an unreadable health vote at %s", kv.key.decode(errors="replace"))
            else:
                out.append(vote)
        return out


class StaleVote(Exception):
    def __init__(self, stored: Vote) -> None:
        super().__init__(stored.observed_at)
        self.stored = stored


def _vote_or_none(raw: bytes) -> Vote | None:
    try:
        return Vote.from_json(orjson.loads(raw))
    except (ValueError, TypeError, AttributeError):
        return None


class HealthService:
    def __init__(
        self,
        nodes: NodeDirectory,
        agents: Agents | None,
        store: VoteStore,
        *,
        interval: float = 1.0,
        min_voters: int = DEFAULT_MIN_VOTERS,
        clock: Callable[[], datetime] = _utcnow,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._nodes = nodes
        self._agents = agents
        self.store = store
        self._interval = interval
        self.min_voters = min_voters
        # A node that posted a vote this recently runs and reaches the cloud (agents vote every period;
        # two thirds of the vote lifetime is two periods with the defaults).
        self.alive_window = timedelta(seconds=store.ttl * 2 / 3)
        self._clock = clock
        self._sleep = sleep
        self._verdicts: dict[str, tuple[str, datetime]] = {}  # node → (verdict, since)
        self.on_change: Callable[[str], None] | None = None  # told the node whose verdict changed

    def verdict_of(self, name: str) -> str:
        """The last computed verdict (for the edgenodes HEALTH column); Unknown before the first."""
        known = self._verdicts.get(name)
        return known[0] if known is not None else UNKNOWN

    def _pool_members(self, pool: str) -> list[str]:
        if not pool or self._nodes.informer is None:
            return []
        return [
            str((m.get("metadata") or {}).get("name", ""))
            for m in self._nodes.informer.by_index(n.POOL_INDEX, pool)
        ]

    def _connected(self) -> set[str] | None:
        return None if self._agents is None else set(self._agents.agents())

    def decide(self, node: Obj, votes: list[Vote], connected: set[str] | None, posts: Posts) -> Decision:
        """`votes`: the live votes about the node; `posts`: every live voter → its newest receivedAt."""
        name = str((node.get("metadata") or {}).get("name", ""))
        pool = n.pool_of(node)
        last = posts.get(name)
        voting = last is not None and self._clock() - last <= self.alive_window
        activity = Activity(frozenset(posts), voting)
        members = self._pool_members(pool)
        return decide(name, pool, members, votes, connected, activity, min_voters=self.min_voters)

    @staticmethod
    def _sort(votes: list[Vote]) -> tuple[dict[str, list[Vote]], Posts]:
        by_target: dict[str, list[Vote]] = {}
        posts: Posts = {}
        for v in votes:
            by_target.setdefault(v.target, []).append(v)
            at = v.received() or datetime.min.replace(tzinfo=UTC)
            posts[v.voter] = max(at, posts.get(v.voter, at))
        return by_target, posts

    def _track(self, name: str, verdict: str) -> datetime:
        """Record the verdict; returns when it last changed. Tells on_change on a change."""
        known = self._verdicts.get(name)
        if known is not None and known[0] == verdict:
            return known[1]
        since = self._clock()
        self._verdicts[name] = (verdict, since)
        if self.on_change is not None:
            self.on_change(name)
        return since

    async def refresh_all(self) -> int:
        """Recompute every edge node's verdict from one read of all votes. Returns how many changed."""
        if self._nodes.informer is None:
            return 0
        by_target, posts = self._sort(await self.store.votes())
        connected = self._connected()
        changed = 0
        seen = set()
        for node in self._nodes.informer.items():
            if not n.is_edge_node(node):
                continue
            name = str((node.get("metadata") or {}).get("name", ""))
            seen.add(name)
            before = self._verdicts.get(name)
            verdict = self.decide(node, by_target.get(name, []), connected, posts).verdict
            self._track(name, verdict)
            changed += before is None or before[0] != verdict
        for gone in set(self._verdicts) - seen:
            del self._verdicts[gone]
        return changed

    async def run(self) -> None:
        """Keep the verdicts (and the HEALTH column) current until cancelled."""
        if self._nodes.informer is not None:
            await self._nodes.informer.wait_synced()
        while True:
            try:
                await self.refresh_all()
            except Exception as exc:  # etcd unavailable: keep the last verdicts, try again
                log.warning("edge health: cannot read votes: %s", exc)
            await self._sleep(self._interval)

    # ---- HTTP -------------------------------------------------------------------------------------

    async def __call__(self, request: web.Request, info: RequestInfo) -> web.StreamResponse:
        if request.method in ("GET", "HEAD"):
            return respond(await self.node_health(info.name))
        if request.method == "POST":
            return respond(await self.vote(request, info.name), status=201)
        raise apierrors.method_not_allowed(request.method, f"{EDGENODE.resource}/health")

    def _edge_node(self, name: str) -> Obj:
        node = self._nodes.get(name)
        if node is None or not n.is_edge_node(node):
            raise apierrors.not_found(EDGENODE.group, EDGENODE.resource, name)
        return node

    async def node_health(self, name: str) -> dict[str, Any]:
        node = self._edge_node(name)
        by_target, posts = self._sort(await self.store.votes())  # who votes at all counts too
        d = self.decide(node, by_target.get(name, []), self._connected(), posts)
        since = self._track(name, d.verdict)
        return {
            "apiVersion": API_VERSION,
            "kind": HEALTH_KIND,
            "node": name,
            "pool": n.pool_of(node),
            "verdict": d.verdict,
            "reason": d.reason,
            "votes": [v.to_json() for v in d.votes],
            "quorum": d.quorum(),
            "lastTransitionTime": format_rfc3339(since),
        }

    async def vote(self, request: web.Request, target: str) -> dict[str, Any]:
        doc = bodies.parse_document(await bodies.read_body(request), request.headers.get("Content-Type", ""))
        if not isinstance(doc, dict):
            raise apierrors.bad_request("the request body must be a JSON object (a HealthVote)")
        causes = vote_errors(doc, target)
        if causes:
            raise apierrors.invalid(EDGENODE.group, "HealthVote", target, causes)
        voter = str(doc["voter"])
        user = request[USER_KEY]
        if user.name != NODE_USER_PREFIX + voter or NODES_GROUP not in user.groups:
            raise apierrors.forbidden(
                f'{user.name} may not vote as node "{voter}": a node votes only as itself '
                f"(client user {NODE_USER_PREFIX}{voter}, group {NODES_GROUP})"
            )
        pool = n.pool_of(self._edge_node(target))
        voter_node = self._nodes.get(voter)
        voter_pool = n.pool_of(voter_node) if voter_node is not None else ""
        if not pool or voter_pool != pool:
            mine = f"pool {voter_pool}" if voter_pool else "no pool"
            theirs = f"pool {pool}" if pool else "no pool"
            raise apierrors.forbidden(
                f'node "{voter}" ({mine}) may not vote about node "{target}" ({theirs}): '
                "votes are only about nodes of the voter's own pool"
            )
        now = self._clock()
        observed = parse_rfc3339(str(doc["observedAt"]))
        if observed - now > MAX_CLOCK_AHEAD:  # would outrank the voter's own later votes (ordering)
            raise _bad_observed_at(
                target,
                f"the observation is {(observed - now).total_seconds():.0f}s in the future: the voter's "
                f"clock is ahead of aggapi's by more than {MAX_CLOCK_AHEAD.seconds}s (sync it)",
            )
        if now - observed > timedelta(seconds=self.store.ttl):
            raise _bad_observed_at(
                target,
                f"the observation is older than the vote lifetime ({self.store.ttl}s): "
                "it would count as expired",
            )
        vote = Vote(
            voter,
            target,
            str(doc["observedAt"]),
            str(doc["result"]),
            dict(doc.get("probes") or {}),
            format_rfc3339(now),
        )
        try:
            await self.store.put(vote)
        except StaleVote as stale:
            raise apierrors.conflict(
                EDGENODE.group,
                EDGENODE.resource,
                target,
                f"node {voter} already has a newer vote about {target} "
                f"(observedAt {stale.stored.observed_at}): an older observation never replaces it",
            ) from None
        except Exception as exc:
            raise apierrors.service_unavailable(f"storing the health vote: {exc}") from exc
        return vote.to_json()


def _bad_observed_at(target: str, message: str) -> apierrors.StatusError:
    cause = apierrors.Cause("FieldValueInvalid", message, "observedAt")
    return apierrors.invalid(EDGENODE.group, "HealthVote", target, [cause])
