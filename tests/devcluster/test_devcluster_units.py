"""Pure parts of the devcluster: strategic merge patch, protobuf bodies, token file, policy rules."""

from __future__ import annotations

import pytest

from aggapi.auth.authn import UserInfo
from aggapi.auth.authz import Attributes
from aggapi.devcluster import protobuf, smp
from aggapi.devcluster.policy import PolicyAuthorizer, parse_policy, parse_token_file


def test_strategic_merge_patch() -> None:
    pod = {
        "metadata": {"labels": {"a": "1", "b": "2"}, "finalizers": ["x"]},
        "spec": {
            "containers": [{"name": "c1", "image": "i1", "ports": [{"containerPort": 80}]}, {"name": "c2"}],
            "tolerations": [{"key": "t1"}],
        },
        "status": {
            "conditions": [{"type": "Ready", "status": "False"}, {"type": "Scheduled", "status": "True"}]
        },
    }
    patch = {
        "metadata": {"labels": {"b": None, "c": "3"}, "finalizers": ["y"]},
        "spec": {
            "$setElementOrder/containers": [{"name": "c1"}, {"name": "c2"}],
            "containers": [{"name": "c1", "image": "i2"}, {"name": "c2", "$patch": "delete"}],
            "tolerations": [{"key": "t2"}],
        },
        "status": {"conditions": [{"type": "Ready", "status": "True"}]},
    }
    out = smp.apply(pod, patch)
    assert out["metadata"] == {"labels": {"a": "1", "c": "3"}, "finalizers": ["x", "y"]}
    assert out["spec"]["containers"] == [{"name": "c1", "image": "i2", "ports": [{"containerPort": 80}]}]
    assert out["spec"]["tolerations"] == [{"key": "t2"}]  # no merge key: replaced
    assert out["status"]["conditions"] == [
        {"type": "Ready", "status": "True"},
        {"type": "Scheduled", "status": "True"},
    ]
    assert pod["metadata"]["labels"] == {"a": "1", "b": "2"}  # the original is not modified
    assert smp.apply({"spec": {"a": 1, "b": 2}}, {"spec": {"$patch": "replace", "c": 3}}) == {
        "spec": {"c": 3}
    }
    assert smp.apply({"m": {"f": ["a", "b"]}}, {"m": {"$deleteFromPrimitiveList/f": ["a"]}}) == {
        "m": {"f": ["b"]}
    }


def _field(number: int, payload: bytes) -> bytes:
    return bytes([number << 3 | 2, len(payload)]) + payload


def test_protobuf_namespace() -> None:
    meta = _field(1, b"team") + _field(11, _field(1, b"k") + _field(2, b"v")) + _field(2, b"")
    ns = _field(1, meta) + _field(2, _field(1, b"kubernetes"))
    envelope = protobuf.MAGIC + _field(1, _field(1, b"v1") + _field(2, b"Namespace")) + _field(2, ns)
    assert protobuf.decode(envelope) == {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": "team", "labels": {"k": "v"}},
        "spec": {"finalizers": ["kubernetes"]},
    }
    with pytest.raises(protobuf.ProtobufError):
        protobuf.decode(protobuf.MAGIC + _field(1, _field(1, b"v1") + _field(2, b"Pod")))
    with pytest.raises(protobuf.ProtobufError):
        protobuf.decode(b"{}")


def test_token_file() -> None:
    users = parse_token_file('# comment\n\nt1,alice,u1,"a,b"\nt2, bob ,u2\nt1,dup,u3\n')
    assert users["t1"] == UserInfo("alice", ("a", "b", "system:authenticated"), "u1")
    assert users["t2"].name == "bob" and users["t2"].groups == ("system:authenticated",)
    with pytest.raises(ValueError, match="line 1"):
        parse_token_file("onlytoken,user\n")


def test_policy_rules() -> None:
    policy = parse_policy(
        """
rules:
  - groups: [ops]
    verbs: ["*"]
    apiGroups: ["", apps]
    resources: ["pods/*", "*/status", deployments]
    namespaces: [prod]
  - users: ["*"]
    verbs: [get]
    nonResourceURLs: ["/metrics"]
reviewDenies:
  - users: [eve]
    verbs: [get]
    apiGroups: [""]
    resources: [pods/log]
"""
    )
    authz = PolicyAuthorizer(policy)
    ops = UserInfo("o", ("ops",))

    def allowed(u: UserInfo, verb: str, group: str, res: str, sub: str = "", ns: str = "prod") -> bool:
        return authz.decide(Attributes(u, verb, True, "", group, "v1", ns, res, sub)).allowed

    assert allowed(ops, "get", "", "pods", "log")
    assert not allowed(ops, "get", "", "pods")  # pods/* is subresources only
    assert allowed(ops, "update", "apps", "deployments", "status")
    assert allowed(ops, "delete", "apps", "deployments")
    assert not allowed(ops, "delete", "apps", "deployments", ns="dev")
    assert authz.decide(Attributes(UserInfo("x"), "get", False, "/metrics")).allowed
    assert not authz.decide(Attributes(UserInfo("x"), "get", False, "/apis")).allowed  # not authenticated
    assert authz.decide(Attributes(UserInfo("x", ("system:authenticated",)), "get", False, "/apis/x")).allowed
    eve = UserInfo("eve", ("ops",))
    log = Attributes(eve, "get", True, "", "", "v1", "prod", "pods", "log")
    assert authz.decide(log).allowed  # the front door allows ...
    decision, denied = authz.review(log)  # ... a SubjectAccessReview does not
    assert not decision.allowed and denied and "reviewDenies[0]" in decision.reason
    with pytest.raises(ValueError, match="resources"):
        parse_policy("rules: [{users: [a], verbs: [get]}]")
    with pytest.raises(ValueError, match="unknown fields"):
        parse_policy("rules: [{users: [a], verbs: [get], nonResourceURLs: [/x], bogus: 1}]")
