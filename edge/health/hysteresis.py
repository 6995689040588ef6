"""Per-peer reachability with hysteresis: Unhealthy only after N failed rounds in a row, Healthy again
after M good ones. A peer starts Unknown and gets no vote until one threshold is reached."""

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
    def __init__(self, failure_threshold: int = 3, success_threshold: int = 2) -> None:
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

    def verdict(self, peer: str) -> Verdict:
        st = self.peers.get(peer)
        return st.verdict if st is not None else "Unknown"

    def forget_except(self, members: set[str]) -> None:
        for peer in list(self.peers):
            if peer not in members:
                del self.peers[peer]
