"""TokenReview and SubjectAccessReview answers are cached for their TTL, yes and no alike (as the Go
delegating authenticator/authorizer do), and privileged groups never cost a review."""

from __future__ import annotations

from aggapi.auth.authn import TokenAuthenticator, UserInfo
from aggapi.auth.authz import Attributes, Decision, DelegatingAuthorizer
from aggapi.machinery import apierrors


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class CountingReviewer:
    def __init__(self) -> None:
        self.calls: list[str] = []

    async def review(self, token: str) -> UserInfo | None:
        self.calls.append(token)
        return UserInfo("alice", ("devs",)) if token == "good" else None


class FakeRequest:
    def __init__(self, token: str) -> None:
        self.headers = {"Authorization": f"Bearer {token}"}


async def test_token_reviews_are_cached_for_ten_seconds_both_ways() -> None:
    clock, reviewer = Clock(), CountingReviewer()
    authn = TokenAuthenticator(reviewer, ttl=10, clock=clock)
    for _ in range(3):
        user = await authn.authenticate(FakeRequest("good"))  # type: ignore[arg-type]
        assert user is not None and user.name == "alice"
        try:
            await authn.authenticate(FakeRequest("bad"))  # type: ignore[arg-type]
            raise AssertionError("a rejected token must be refused")
        except apierrors.StatusError as err:
            assert err.code == 401
    assert reviewer.calls == ["good", "bad"]
    clock.now += 10.5
    await authn.authenticate(FakeRequest("good"))  # type: ignore[arg-type]
    assert reviewer.calls == ["good", "bad", "good"]


class CountingAccess:
    def __init__(self) -> None:
        self.calls = 0

    async def review(self, attrs: Attributes) -> Decision:
        self.calls += 1
        return Decision(attrs.verb == "get", "policy")


def attrs(user: UserInfo, verb: str) -> Attributes:
    return Attributes(
        user,
        verb,
        True,
        "/apis/edge.aggapi.io/v1alpha1/nodepools",
        "edge.aggapi.io",
        "v1alpha1",
        resource="nodepools",
    )


async def test_access_reviews_are_cached_and_masters_skip_them() -> None:
    clock, reviewer = Clock(), CountingAccess()
    authz = DelegatingAuthorizer(reviewer, clock=clock)
    bob = UserInfo("bob", ("system:authenticated",))
    assert (await authz.authorize(attrs(bob, "get"))).allowed
    assert not (await authz.authorize(attrs(bob, "delete"))).allowed
    assert (await authz.authorize(attrs(bob, "get"))).allowed
    assert not (await authz.authorize(attrs(bob, "delete"))).allowed
    assert reviewer.calls == 2
    clock.now += 11
    assert not (await authz.authorize(attrs(bob, "delete"))).allowed
    assert reviewer.calls == 3
    root = UserInfo("root", ("system:masters",))
    assert (await authz.authorize(attrs(root, "delete"))).allowed
    assert reviewer.calls == 3
