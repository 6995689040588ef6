"""Per-peer reachability with hysteresis: Unhealthy only after N failed rounds in a row, Healthy again
after M good ones. A peer starts Unknown and gets no vote until one threshold is reached.

A peer is *settled* when its latest round agrees with its verdict; an unsettled one (a failed round of a
Healthy peer: SWIM's "suspect") is probed again every period until it settles, and gets no vote
meanwhile: with k of N peers probed per period, a peer's last round may be many periods old, so a verdict
that the newest round contradicts is not worth posting."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

Verdict = Literal["Healthy", "Unhealthy", "Unknown"]


@dataclass(slots=True)
class PeerState:
    verdict: Verdict = "Unknown"
    failures: int = 0  # consecutive failed rounds
    successes: int = 0  # consecutive good rounds
    last_detail: dict[str, Any] = field(default_factory=dict)
    last_probed: float = 0.0


class Hysteresis:
    def __init__(self, failure_threshold: int = 2, success_threshold: int = 2) -> None:
        self.failure_threshold = failure_threshold
        self.success_threshold = success_threshold
        self.peers: dict[str, PeerState] = {}

    def record(self, peer: str, ok: bool, detail: dict[str, Any], now: float) -> Verdict:
        """Count one probe round of `peer`; its verdict after it."""
        st = self.peers.setdefault(peer, PeerState())
        st.last_detail = detail
        st.last_probed = now
        if ok:
            st.successes += 1
            st.failures = 0
            if st.successes >= self.success_threshold:
                st.verdict = "Healthy"
        else:
            st.failures += 1
            st.successes = 0
            if st.failures >= self.failure_threshold:
                st.verdict = "Unhealthy"
        return st.verdict

    def settled(self, peer: str) -> bool:
        """The latest round agrees with the verdict (Unknown peers are never settled)."""
        st = self.peers.get(peer)
        if st is None:
            return False
        return (st.verdict == "Healthy" and st.successes > 0) or (
            st.verdict == "Unhealthy" and st.failures > 0
        )

    def unsettled(self) -> list[str]:
        """Probed peers whose latest round disagrees with their verdict, longest-waiting first."""
        waiting = [(st.last_probed, p) for p, st in self.peers.items() if not self.settled(p)]
        return [p for _, p in sorted(waiting)]

    def verdict(self, peer: str) -> Verdict:
        st = self.peers.get(peer)
        return st.verdict if st is not None else "Unknown"

    def forget_except(self, members: set[str]) -> None:
        for peer in list(self.peers):
            if peer not in members:
                del self.peers[peer]
