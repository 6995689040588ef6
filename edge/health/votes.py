"""Votes: what this node observed about a peer, posted to aggapi with the node certificate.

While the cloud is unreachable the latest vote per target waits in a bounded store, kept in a JSON file
(tmp + os.replace; recovered at start), and is posted with its original observedAt when the link is back.
"""

from __future__ import annotations

import json
import logging
import os
import ssl
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypedDict

import aiohttp

log = logging.getLogger(__name__)

API_VERSION = "edge.aggapi.io/v1alpha1"


class HealthVote(TypedDict, total=False):
    apiVersion: str
    kind: str
    voter: str
    target: str
    observedAt: str  # RFC 3339, UTC
    result: str  # Healthy | Unhealthy
    probes: dict[str, Any]


def make_vote(voter: str, target: str, result: str, probes: dict[str, Any], now: float) -> HealthVote:
    observed = datetime.fromtimestamp(now, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return HealthVote(
        apiVersion=API_VERSION,
        kind="HealthVote",
        voter=voter,
        target=target,
        observedAt=observed,
        result=result,
        probes=probes,
    )


class VoteStore:
    """Latest vote per target not yet accepted by the server; at most `limit` (oldest dropped)."""

    def __init__(self, path: Path | None, limit: int = 1024) -> None:
        self.path = path
        self.limit = limit
        self.pending: dict[str, HealthVote] = {}
        self._saved: dict[str, HealthVote] = {}
        self.dropped = 0

    def recover(self) -> int:
        """Load what a previous run left (blocking IO). Returns how many votes were recovered."""
        if self.path is None:
            return 0
        try:
            data = json.loads(self.path.read_text())
            votes = [v for v in data.get("votes", []) if isinstance(v, dict) and v.get("target")]
        except FileNotFoundError:
            return 0
        except (OSError, ValueError, AttributeError) as e:
            log.warning("health agent: ignoring unreadable vote store %s: %s", self.path, e)
            return 0
        for v in votes:
            self.put(HealthVote(**v))  # type: ignore[typeddict-item]
        self._saved = dict(self.pending)
        return len(votes)

    def put(self, vote: HealthVote) -> None:
        self.pending[vote.get("target", "")] = vote
        while len(self.pending) > self.limit:
            oldest = min(self.pending, key=lambda t: self.pending[t].get("observedAt", ""))
            del self.pending[oldest]
            self.dropped += 1

    def done(self, vote: HealthVote) -> None:
        """The server has `vote`: forget it unless a newer one for the target arrived meanwhile."""
        target = vote.get("target", "")
        if self.pending.get(target) is vote:
            del self.pending[target]

    def save(self) -> None:
        """Write the pending votes if they changed since the last save (blocking IO)."""
        if self.path is None or self.pending == self._saved:
            return
        snapshot = dict(self.pending)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        body = json.dumps({"votes": sorted(snapshot.values(), key=lambda v: v.get("observedAt", ""))})
        with open(tmp, "w") as f:
            f.write(body)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)
        self._saved = snapshot


class VotePoster:
    """POSTs votes to `url` (with {target}) using the node cert. Keeps nothing itself."""

    def __init__(self, url: str, ctx: Callable[[], ssl.SSLContext], *, timeout: float) -> None:
        self.url = url
        self._ctx = ctx
        self.timeout = timeout
        self.posted = 0
        self.failures = 0

    async def post(self, session: aiohttp.ClientSession, vote: HealthVote) -> bool | None:
        """True: accepted. False: refused for good (4xx; retrying cannot help). None: try again later."""
        url = self.url.replace("{target}", vote.get("target", ""))
        try:
            async with session.post(
                url, json=vote, ssl=self._ctx(), timeout=aiohttp.ClientTimeout(total=self.timeout)
            ) as resp:
                await resp.read()
                if 200 <= resp.status < 300:
                    self.posted += 1
                    return True
                if 400 <= resp.status < 500 and resp.status not in (408, 429):
                    log.warning(
                        "health agent: vote about %s refused: HTTP %s", vote.get("target"), resp.status
                    )
                    return False
                self.failures += 1
                return None
        except (aiohttp.ClientError, OSError, TimeoutError) as e:
            self.failures += 1
            log.debug("health agent: posting a vote failed: %r", e)
            return None


def wall_clock() -> float:
    return time.time()
