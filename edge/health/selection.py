"""SWIM-style peer selection: round-robin over a shuffled member list, k peers per period.

Rounds are aligned to periods: a round lasts ceil(N/k) periods and probes every member once; when N is
not a multiple of k the last period of a round is topped up with other members of the round (still k
distinct peers per period). So every member is probed in each round of ceil(N/k) periods, and the gap
between two probes of one member is at most 2*ceil(N/k)-1 periods (SWIM's bound). A new round is a new
shuffle of the current members; members that joined mid-round are added to the rest of the round.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable


class PeerSelector:
    def __init__(self, shuffle: Callable[[list[str]], None] | None = None) -> None:
        self._shuffle = shuffle or random.shuffle
        self._members: set[str] = set()
        self._round: list[str] = []  # this round's order
        self._done: list[str] = []  # already probed in this round

    @property
    def members(self) -> set[str]:
        return set(self._members)

    def set_members(self, members: Iterable[str]) -> None:
        new = set(members)
        joined = sorted(new - self._members)
        self._members = new
        self._round = [m for m in self._round if m in new]
        self._done = [m for m in self._done if m in new]
        if joined:
            self._shuffle(joined)
            self._round.extend(joined)  # probed in the rest of this round

    def next_period(self, k: int) -> list[str]:
        """The (up to) k distinct members to probe this period."""
        if not self._members:
            return []
        if not self._round:
            self._round = sorted(self._members)
            self._shuffle(self._round)
            self._done = []
        picked = self._round[:k]
        del self._round[:k]
        self._done.extend(picked)
        if len(picked) < k and not self._round:
            fill = [m for m in self._done if m not in picked]
            self._shuffle(fill)
            picked.extend(fill[: k - len(picked)])
        return picked

    def others(self, exclude: str, n: int) -> list[str]:
        """Up to n random members other than `exclude` (for indirect probes)."""
        pool = sorted(self._members - {exclude})
        self._shuffle(pool)
        return pool[:n]
