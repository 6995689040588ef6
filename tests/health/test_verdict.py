"""The verdict rules (docs/health.md) without a server."""

from __future__ import annotations

from collections.abc import Collection, Sequence

from aggapi.edge_api.health_verdict import Activity, Decision, Vote, vote_errors
from aggapi.edge_api.health_verdict import decide as decide_with

POOL = ["t", "a", "b", "c"]


def v(voter: str, result: str, target: str = "t", at: int = 0) -> Vote:
    return Vote(voter, target, f"2026-01-01T00:00:{at:02d}Z", result)


def decide(
    target: str,
    pool: str,
    members: Collection[str],
    votes: Sequence[Vote],
    connected: Collection[str] | None,
    *,
    active: Collection[str] | None = None,
    voting: bool = False,
) -> Decision:
    """Every member votes (about someone) unless `active` says who does; the target is not voting."""
    who = frozenset(members if active is None else active)
    return decide_with(target, pool, members, votes, connected, Activity(who, voting))


def test_majority_of_members() -> None:
    d = decide("t", "p", POOL, [v("a", "Unhealthy"), v("b", "Unhealthy")], None)
    assert (d.verdict, d.members, d.voters, d.needed) == ("Unhealthy", 3, 2, 2)
    assert decide(
        "t", "p", POOL, [v("a", "Healthy"), v("b", "Healthy"), v("c", "Unhealthy")], None
    ).verdict == ("Healthy")


def test_too_few_voters_or_split_is_unknown() -> None:
    assert decide("t", "p", POOL, [v("a", "Unhealthy")], None).verdict == "Unknown"
    five = ["t", "a", "b", "c", "d", "e"]  # 5 members, 3 needed
    split = [v("a", "Unhealthy"), v("b", "Unhealthy"), v("c", "Healthy"), v("d", "Healthy")]
    assert decide("t", "p", five, split, None).verdict == "Unknown"


def test_votes_that_do_not_count() -> None:
    # A voter no longer in the pool, a self-vote, a vote about someone else.
    votes = [v("x", "Unhealthy"), v("t", "Unhealthy"), v("a", "Unhealthy", target="b"), v("a", "Unhealthy")]
    d = decide("t", "p", POOL, votes, None)
    assert d.verdict == "Unknown" and d.voters == 1


def test_pool_cut_off_from_the_cloud_is_unknown_never_unhealthy() -> None:
    votes = [v("a", "Unhealthy"), v("b", "Unhealthy"), v("c", "Unhealthy")]
    # No agent of the pool on the tunnel: the votes still alive from before the cut do not convict.
    d = decide("t", "p", POOL, votes, connected={"elsewhere"})
    assert d.verdict == "Unknown" and "cut off" in d.reason
    # One peer still connected: the peers' votes count.
    assert decide("t", "p", POOL, votes, connected={"a"}).verdict == "Unhealthy"
    # No vote from any member at all.
    assert "cut off" in decide("t", "p", POOL, [], None, active=[]).reason
    # Only a minority of the members vote at all: part of the pool is cut off.
    d = decide("t", "p", POOL, votes[:1], None, active=["a"])
    assert d.verdict == "Unknown" and "only 1 of 3 members are voting" in d.reason


def test_alone_or_poolless_is_unknown() -> None:
    assert decide("t", "p", ["t"], [], None).verdict == "Unknown"
    assert decide("t", "", [], [], None).verdict == "Unknown"


def test_vote_validation() -> None:
    good = {
        "apiVersion": "edge.aggapi.io/v1alpha1",
        "kind": "HealthVote",
        "voter": "a",
        "target": "t",
        "observedAt": "2026-01-01T00:00:00Z",
        "result": "Healthy",
    }
    assert vote_errors(good, "t") == []
    assert [c.field for c in vote_errors({**good, "voter": "t"}, "t")] == ["voter"]
    assert {c.field for c in vote_errors({**good, "observedAt": "yesterday", "result": "?"}, "t")} == {
        "observedAt",
        "result",
    }


BIG = ["t", *(f"n{i:03d}" for i in range(199))]  # 199 peers: each sees t only now and then


def test_large_pool_needs_min_voters_observers_not_a_majority_of_members() -> None:
    votes = [v("n001", "Unhealthy"), v("n002", "Unhealthy"), v("n003", "Unhealthy"), v("n004", "Healthy")]
    d = decide("t", "p", BIG, votes, None)
    assert (d.verdict, d.members, d.voters, d.needed, d.active) == ("Unhealthy", 199, 4, 3, 199)
    assert decide("t", "p", BIG, votes[:2], None).verdict == "Unknown"  # 2 observers < 3
    up = [v(f"n{i:03d}", "Healthy") for i in range(5)]
    assert decide("t", "p", BIG, up, None).verdict == "Healthy"


def test_newer_observations_supersede_older_ones() -> None:
    # The node died at :10: four peers saw it up before, three saw it down after.
    before = [v(f"n{i:03d}", "Healthy", at=i) for i in range(4)]
    after = [v(f"n{i:03d}", "Unhealthy", at=i) for i in range(10, 13)]
    d = decide("t", "p", BIG, before + after, None)
    assert d.verdict == "Unhealthy" and d.voters == 7
    # Someone saw it up after the first down-observation: no clean switch, and no majority either.
    mixed = [*before[:2], *after, v("n050", "Healthy", at=11)]
    assert decide("t", "p", BIG, mixed, None).verdict == "Unknown"
    # Recovery: up again after the down-observations.
    back = [*after, *(v(f"n{i:03d}", "Healthy", at=30 + i) for i in range(20, 23))]
    assert decide("t", "p", BIG, back, None).verdict == "Healthy"


def test_a_node_that_is_itself_voting_is_never_unhealthy() -> None:
    # A split inside the pool: its peers on the other side cannot reach it, but it reaches the cloud.
    votes = [v("a", "Unhealthy"), v("b", "Unhealthy"), v("c", "Unhealthy")]
    d = decide("t", "p", POOL, votes, None, voting=True)
    assert d.verdict == "Unknown" and "partition inside the pool" in d.reason
    assert decide("t", "p", POOL, votes, None, voting=False).verdict == "Unhealthy"
