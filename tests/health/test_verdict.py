"""The verdict rules (docs/health.md) without a server."""

from __future__ import annotations

from aggapi.edge_api.health_verdict import Vote, decide, vote_errors

POOL = ["t", "a", "b", "c"]


def v(voter: str, result: str, target: str = "t") -> Vote:
    return Vote(voter, target, "2026-01-01T00:00:00Z", result)


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
    assert "cut off" in decide("t", "p", POOL, [], None).reason


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
