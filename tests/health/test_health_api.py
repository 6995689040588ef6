"""edgenodes/{name}/health against a real aggapi: who may vote, the verdict rules, vote expiry, and the
verdict in `kubectl get edgenodes` and the pool topology."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from healthkit import EN, HealthEnv, delete_nodes, eventually, health, make_pool, unique, vote, vote_doc
from support.aggapi import NP, kubectl, nodepool

from aggapi.machinery.timefmt import format_rfc3339


def test_vote_as_another_node_is_forbidden(health_env: HealthEnv) -> None:
    a, b, c = nodes = make_pool(health_env, unique("hp"), 3)
    try:
        code, body = health_env.as_node(a).request("POST", f"{EN}/{c}/health", vote_doc(b, c, "Unhealthy"))
        assert code == 403, body
        assert body["kind"] == "Status" and body["reason"] == "Forbidden"
        assert f"system:node:{a}" in body["message"] and "only as itself" in body["message"]
        # The admin (system:masters) is no node either.
        code, body = health_env.agg.request("POST", f"{EN}/{c}/health", vote_doc(b, c, "Unhealthy"))
        assert code == 403, body
    finally:
        delete_nodes(health_env, nodes)


def test_voter_outside_the_pool_is_forbidden(health_env: HealthEnv) -> None:
    here = make_pool(health_env, unique("hp"), 2)
    there = make_pool(health_env, unique("hq"), 1)
    try:
        code, body = vote(health_env, there[0], here[0], "Unhealthy")
        assert code == 403, body
        assert body["reason"] == "Forbidden" and "own pool" in body["message"]
    finally:
        delete_nodes(health_env, here + there)


def test_self_vote_and_malformed_votes_are_refused(health_env: HealthEnv) -> None:
    a, b = nodes = make_pool(health_env, unique("hp"), 2)
    try:
        code, body = vote(health_env, a, a, "Healthy")
        assert code == 422, body
        assert body["reason"] == "Invalid" and "itself" in body["message"]
        code, body = vote(health_env, a, b, "Dead")
        assert code == 422 and body["details"]["causes"][0]["field"] == "result", body
        code, body = health_env.as_node(a).request(
            "POST", f"{EN}/{b}/health", vote_doc(a, "someone-else", "Healthy")
        )
        assert code == 422 and "target" in body["message"], body
        stale = format_rfc3339(datetime.now(UTC) - timedelta(minutes=5))
        code, body = vote(health_env, a, b, "Unhealthy", observedAt=stale)
        assert code == 422 and "observedAt" in body["message"], body
        ahead = format_rfc3339(datetime.now(UTC) + timedelta(minutes=5))
        code, body = vote(health_env, a, b, "Unhealthy", observedAt=ahead)
        assert code == 422 and "clock is ahead" in body["message"], body
        code, body = health_env.as_node(a).request(
            "POST", f"{EN}/{b}/health", None, headers={"Content-Type": "application/json"}
        )
        assert code == 400, body
        code, body = vote(health_env, a, "no-such-node", "Healthy")
        assert code in (404, 422), body  # the target in the body is checked against the URL first
    finally:
        delete_nodes(health_env, nodes)


def test_two_of_three_unhealthy_is_unhealthy(health_env: HealthEnv) -> None:
    target, m1, m2, _m3 = nodes = make_pool(health_env, unique("hp"), 4)
    try:
        start = health(health_env, target)
        assert start["verdict"] == "Unknown" and start["quorum"] == {
            "members": 3,
            "active": 0,
            "voters": 0,
            "needed": 2,
        }

        def voted() -> dict[str, object] | None:
            for voter in (m1, m2):
                code, body = vote(health_env, voter, target, "Unhealthy")
                assert code == 201, body
            h = health(health_env, target)
            return h if h["verdict"] == "Unhealthy" else None

        h = eventually(voted, "verdict Unhealthy")
        assert h["kind"] == "NodeHealth" and h["node"] == target and h["pool"] == target.rsplit("-", 1)[0]
        assert h["quorum"] == {"members": 3, "active": 2, "voters": 2, "needed": 2}
        assert {v["voter"] for v in h["votes"]} == {m1, m2}  # type: ignore[attr-defined]
        assert h["lastTransitionTime"]
    finally:
        delete_nodes(health_env, nodes)


def test_one_of_three_votes_is_unknown(health_env: HealthEnv) -> None:
    target, m1, _m2, _m3 = nodes = make_pool(health_env, unique("hp"), 4)
    try:
        code, body = vote(health_env, m1, target, "Unhealthy")
        assert code == 201, body
        h = health(health_env, target)
        assert h["verdict"] == "Unknown", h
        assert h["quorum"] == {"members": 3, "active": 1, "voters": 1, "needed": 2}
    finally:
        delete_nodes(health_env, nodes)


def test_single_node_pool_is_unknown(health_env: HealthEnv) -> None:
    nodes = make_pool(health_env, unique("hp"), 1)
    try:
        h = health(health_env, nodes[0])
        assert h["verdict"] == "Unknown" and h["quorum"] == {
            "members": 0,
            "active": 0,
            "voters": 0,
            "needed": 1,
        }
    finally:
        delete_nodes(health_env, nodes)


def test_votes_expire(health_env: HealthEnv) -> None:
    target, m1, m2 = nodes = make_pool(health_env, unique("hp"), 3)
    try:

        def voted() -> bool:
            for voter in (m1, m2):
                assert vote(health_env, voter, target, "Unhealthy")[0] == 201
            return bool(health(health_env, target)["verdict"] == "Unhealthy")

        eventually(voted, "verdict Unhealthy")
        # The voters stop: their leases (--health-vote-ttl=3s) run out.
        h = eventually(
            lambda: (h := health(health_env, target))["verdict"] == "Unknown" and h,
            "verdict Unknown once the votes expired",
            timeout=20,
        )
        assert h["votes"] == [] and h["quorum"]["voters"] == 0
    finally:
        delete_nodes(health_env, nodes)


def test_health_column_and_topology(health_env: HealthEnv) -> None:
    pool = unique("hp")
    code, body = health_env.agg.request("POST", NP, nodepool(pool, type="Edge"))
    assert code == 201, body
    target, m1, m2 = nodes = make_pool(health_env, pool, 3)
    try:

        def shown() -> str | None:
            for voter in (m1, m2):
                assert vote(health_env, voter, target, "Healthy")[0] == 201
            out = kubectl(health_env.kubeconfig, "get", "edgenodes", target, m1)
            assert out.returncode == 0, out.stderr
            lines = out.stdout.splitlines()
            col = lines[0].split().index("HEALTH")
            row = {ln.split()[0]: ln.split()[col] for ln in lines[1:]}
            return out.stdout if row.get(target) == "Healthy" and row.get(m1) == "Unknown" else None

        eventually(shown, "HEALTH Healthy for the target, Unknown for a node nobody voted on")

        def topo() -> bool:
            for voter in (m1, m2):
                assert vote(health_env, voter, target, "Healthy")[0] == 201
            code, body = health_env.agg.get(f"{NP}/{pool}/topology")
            assert code == 200, body
            by_name = {x["name"]: x for x in body["nodes"]}
            return bool(by_name[target]["health"] == "Healthy" and by_name[m2]["health"] == "Unknown")

        eventually(topo, "the verdict in the pool topology")
    finally:
        delete_nodes(health_env, nodes)
        health_env.agg.request("DELETE", f"{NP}/{pool}")


def test_an_older_observation_never_replaces_a_newer_vote(health_env: HealthEnv) -> None:
    a, b = nodes = make_pool(health_env, unique("hp"), 2)
    try:
        now = datetime.now(UTC) + timedelta(seconds=3)  # the votes of this env live only a few seconds
        code, body = vote(health_env, a, b, "Healthy", observedAt=format_rfc3339(now))
        assert code == 201, body
        # Queued during an outage and posted late: an observation from before the stored one.
        late = format_rfc3339(now - timedelta(seconds=3))
        code, body = vote(health_env, a, b, "Unhealthy", observedAt=late)
        assert code == 409 and body["reason"] == "Conflict" and "newer vote" in body["message"], body
        stored = health(health_env, b)["votes"]
        assert [(v["voter"], v["result"]) for v in stored] == [(a, "Healthy")]
        # The same observation again (a retried post) is accepted.
        code, body = vote(health_env, a, b, "Healthy", observedAt=format_rfc3339(now))
        assert code == 201, body
    finally:
        delete_nodes(health_env, nodes)


def test_a_node_that_votes_itself_is_not_convicted(health_env: HealthEnv) -> None:
    """Its peers cannot reach it, but it reaches the cloud and votes: a split inside the pool."""
    target, m1, m2 = nodes = make_pool(health_env, unique("hp"), 3)
    try:
        for voter in (m1, m2):
            code, body = vote(health_env, voter, target, "Unhealthy")
            assert code == 201, body
        assert health(health_env, target)["verdict"] == "Unhealthy"
        code, body = vote(health_env, target, m1, "Healthy")
        assert code == 201, body
        h = health(health_env, target)
        assert h["verdict"] == "Unknown" and "partition inside the pool" in h["reason"], h
    finally:
        delete_nodes(health_env, nodes)
