"""Black-hole links (connections accepted, nothing answered), docs/shadow.md "Offline behaviour": health
probes start every period whether or not the previous one has answered, and while the cloud is still
"healthy" a get/list whose upstream does not connect within --connect-timeout is answered from the cache.
No timing is asserted: the probe test runs on a fake clock, the proxy test on a stalled relay."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import replace

import aiohttp
from shadowkit import Kube, Relay, eventually, names, pod, running, wait_mode

from edge.shadow import cli
from edge.shadow.config import ShadowConfig
from edge.shadow.health import CloudHealth


async def _until(what: str, cond: Callable[[], bool]) -> None:
    for _ in range(1000):
        if cond():
            return
        await asyncio.sleep(0)
    raise AssertionError(f"never: {what}")


async def test_probes_start_every_period_while_earlier_ones_hang() -> None:
    loop = asyncio.get_running_loop()
    answers: list[asyncio.Future[bool]] = []  # one per probe started, answered by the test

    async def probe() -> bool:
        answers.append(loop.create_future())
        return await answers[-1]

    now = [0.0]
    sleeps: list[float] = []

    async def sleep(seconds: float) -> None:  # a fake clock: sleeping moves it
        sleeps.append(seconds)
        now[0] += seconds
        await asyncio.sleep(0)

    verdicts: list[bool] = []

    async def listener(healthy: bool) -> None:
        verdicts.append(healthy)

    health = CloudHealth(
        probe, period=1.0, unhealthy_after=3, sleep=sleep, clock=lambda: now[0], max_outstanding=4
    )
    health.listeners.append(listener)
    task = asyncio.create_task(health.run())
    try:
        # Not one probe has answered (a black hole), yet they started at t = 0, 1, 2, 3: start to start,
        # up to max_outstanding, and then no more until one is counted.
        await _until("four probes out", lambda: len(answers) == 4)
        for _ in range(50):
            await asyncio.sleep(0)
        assert len(answers) == 4 and sleeps[:3] == [1.0, 1.0, 1.0] and health.probes == 0

        # Results count in the order the probes started: the later failures wait for the first answer.
        for fut in answers[1:]:
            fut.set_result(False)
        for _ in range(50):
            await asyncio.sleep(0)
        assert health.probes == 0 and verdicts == []
        answers[0].set_result(True)  # the first probe decides at once; three failures then flip it
        await _until("two verdicts", lambda: len(verdicts) == 2)
        assert verdicts == [True, False] and health.decided.is_set()
        await _until("probing goes on", lambda: len(answers) > 4)
        assert all(s == 1.0 for s in sleeps)  # never a burst, never more than a period apart
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    assert all(f.cancelled() for f in answers[4:])  # the probes still out are cancelled with it


def test_connect_timeout_flag() -> None:
    def flags(*more: str) -> argparse.Namespace:
        parser = argparse.ArgumentParser()
        cli.add_parser(parser.add_subparsers())
        base = ["shadow", "--node-name=edge-x", "--server=https://10.0.0.1:6443", "--secure-port=0"]
        return parser.parse_args([*base, "--server-ca-file=/ca.crt", "--node-cert-file=/n.pem", *more])

    assert cli.config_from(flags()).connect_timeout == 3.0
    cfg = cli.config_from(flags("--connect-timeout=500ms"))
    assert cfg.connect_timeout == 0.5 and cfg.validate() == []
    assert replace(cfg, connect_timeout=0.0).validate() == [
        "--connect-timeout and --request-timeout must be positive"
    ]


async def test_while_healthy_a_read_that_cannot_connect_is_answered_from_the_cache(
    cfg: ShadowConfig, relay: Relay, admin: Kube, http: aiohttp.ClientSession, ns: str
) -> None:
    pods = f"/api/v1/namespaces/{ns}/pods"
    assert (await admin.req("POST", pods, pod("p", ns, {"app": "a"})))[0] == 201
    # One probe at start, then none for an hour: the cloud stays "healthy" through the black hole.
    cfg = replace(cfg, probe_period=3600.0, connect_timeout=0.3)
    async with running(cfg) as shadow:
        await wait_mode(shadow, online=True)
        kubelet = Kube(f"http://127.0.0.1:{shadow.ports['http']}", http)
        assert names((await kubelet.get(pods))[1]) == ["p"]
        assert (await kubelet.get(f"{pods}/p"))[0] == 200

        await relay.cut()  # pooled connections reset ...
        relay.stall(True)  # ... and new ones accepted but never forwarded
        await relay.start()
        code, got = await kubelet.get(f"{pods}/p")
        assert code == 200 and got["metadata"]["name"] == "p"
        code, got = await kubelet.get(pods)
        assert code == 200 and names(got) == ["p"]
        code, got = await kubelet.get(f"{pods}/never-cached")
        assert code == 404 and got["reason"] == "NotFound"
        code, got = await kubelet.req("POST", pods, pod("q", ns, {"app": "a"}))
        assert code == 503 and "cloud unreachable" in got["message"]
        assert shadow.proxy.online  # per request, not a mode switch

        def served(verb: str, source: str) -> float:
            labels = {"component": "kubelet", "verb": verb, "served_from": source}
            return shadow.metrics.registry.get_sample_value("aggapi_shadow_requests_total", labels) or 0.0

        assert (served("get", "cache"), served("list", "cache")) == (2.0, 1.0)

        relay.stall(False)  # the link is back: remote again
        remote = served("list", "remote")
        assert names((await kubelet.get(pods))[1]) == ["p"]
        assert served("list", "remote") == remote + 1


async def _silent_link(relay: Relay, kubelet: Kube, pods: str) -> None:
    """A pooled upstream connection (from a read), then the link goes silent: that connection forwards
    nothing any more and new ones are accepted and never forwarded."""
    assert (await kubelet.get(pods))[0] == 200
    relay.freeze(True)
    relay.stall(True)


async def _watch_status(http: aiohttp.ClientSession, url: str, got: list[int]) -> None:
    async with http.get(url, headers={"User-Agent": "kubelet/1", "Accept": "application/json"}) as r:
        got.append(r.status)
        with contextlib.suppress(aiohttp.ClientError):
            await r.content.read(1)


async def test_a_watch_on_a_silent_connection_waits_for_headers_at_most_connect_plus_request_timeout(
    cfg: ShadowConfig, relay: Relay, http: aiohttp.ClientSession, ns: str
) -> None:
    pods = f"/api/v1/namespaces/{ns}/pods"
    cfg = replace(cfg, probe_period=3600.0, connect_timeout=0.3, request_timeout=1.0)  # stays "healthy"
    async with running(cfg) as shadow:
        await wait_mode(shadow, online=True)
        kubelet = Kube(f"http://127.0.0.1:{shadow.ports['http']}", http)
        await _silent_link(relay, kubelet, pods)
        code, got = await kubelet.get(f"{pods}?watch=1&resourceVersion=0")
        assert code == 503 and "cloud unreachable" in got["message"]  # not a wait forever
        assert shadow.proxy.online


async def test_going_offline_cuts_requests_still_waiting_for_upstream_headers(
    cfg: ShadowConfig, relay: Relay, http: aiohttp.ClientSession, ns: str
) -> None:
    pods = f"/api/v1/namespaces/{ns}/pods"
    cfg = replace(cfg, connect_timeout=0.3, request_timeout=3600.0)  # only going offline can end the wait
    async with running(cfg) as shadow:
        await wait_mode(shadow, online=True)
        kubelet = Kube(f"http://127.0.0.1:{shadow.ports['http']}", http)
        await _silent_link(relay, kubelet, pods)
        got: list[int] = []
        watch = asyncio.create_task(_watch_status(http, f"{kubelet.base}{pods}?watch=1", got))
        try:
            await wait_mode(shadow, online=False)

            async def answered() -> bool | None:
                return True if got else None

            await eventually("the waiting watch answered once offline", answered)
            assert got == [200]  # served from the cache: the list above made a view of it
        finally:
            watch.cancel()
            await asyncio.gather(watch, return_exceptions=True)
