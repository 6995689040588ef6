"""`aggapi-edge all`: flags → the three parts' configs (pure), and the real process against a devcluster
with an in-test tunnel server: the shadow answers a kubelet, the health agent reads through the shadow,
the tunnel agent registers, the combined status endpoint reports all three, SIGTERM exits 0."""

from __future__ import annotations

import argparse
import asyncio
import random
import signal
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from support.devcluster import Devcluster
from support.etcd import EtcdServer

from aggapi.devcluster.labkit import free_port
from aggapi.devcluster.pki import issue_user
from aggapi.tunnel import TunnelServer, TunnelServerConfig
from certs.files import write_pair
from certs.pki import issue_serving, new_ca
from edge import allinone
from edge.health import cli as health_cli
from edge.health.config import USER_AGENT
from edge.kubelet_sim.config import NodeIdentity
from edge.kubelet_sim.node import node_object
from edge.shadow import cli as shadow_cli
from edge.shadow.config import DEFAULT_COMPONENTS
from edge.shadow.requestinfo import component_of
from edge.tunnel import cli as tunnel_cli

BIN = Path(sys.executable).parent / "aggapi-edge"
NODE = "edge-aio-1"
KUBELET_UA = "kubelet/v1.30.0 (linux/amd64) kubernetes/abcdef"

# --- flags → configs (pure) -----------------------------------------------------------------------


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser()
    sub = p.add_subparsers()
    for add in (allinone.add_parser, shadow_cli.add_parser, tunnel_cli.add_parser, health_cli.add_parser):
        add(sub)
    return p


BASE = [
    "all",
    "--node-name=n1",
    "--node-cert-file=/pki/node.pem",
    "--api-server=https://10.0.0.1:6443",
    "--api-server=https://10.0.0.2:6443",
    "--api-ca-file=/pki/ca.crt",
    "--address=10.1.0.5",
    "--address=fd00::5",
    "--state-dir=/state",
    "--tunnel-server=aggapi.example:8091",
    "--tunnel-ca-file=/pki/aggapi-ca.crt",
    "--shadow-secure-port=0",
]


def words(text: str) -> list[str]:
    return text.split()


def build(*extra: str) -> allinone.AllConfig:
    return allinone.config_from(parser().parse_args([*BASE, *extra]))


def test_identity_flags_given_once_reach_every_part() -> None:
    cfg = build()
    assert cfg.validate() == []
    s, t, h = cfg.shadow, cfg.tunnel, cfg.health
    assert s is not None and t is not None and h is not None
    assert s.node_name == t.node_name == h.node_name == "n1"
    assert s.servers == ("https://10.0.0.1:6443", "https://10.0.0.2:6443")
    assert s.ca_file == Path("/pki/ca.crt") and s.cache_dir == Path("/state/shadow")
    assert s.cert_file == s.key_file == t.cert_file == t.key_file == h.cert_file == h.key_file
    assert s.cert_file == Path("/pki/node.pem")  # the key defaults to the cert file (a combined PEM)
    assert t.servers == ("aggapi.example:8091",) and t.ca_file == Path("/pki/aggapi-ca.crt")
    assert t.addresses == ("10.1.0.5", "fd00::5")
    assert h.address == "10.1.0.5" and h.state_dir == Path("/state/health")
    assert h.ca_file == h.vote_ca_file == Path("/pki/ca.crt")  # peer CA defaults to --api-ca-file
    # the health agent reads members and posts votes through the local shadow, in plain HTTP
    assert cfg.health_via_shadow and h.api_server == "http://127.0.0.1:10261"
    assert (
        h.effective_vote_url
        == "http://127.0.0.1:10261/apis/edge.aggapi.io/v1alpha1/edgenodes/{target}/health"
    )
    # one status endpoint: the parts' own listeners are off unless asked for
    assert cfg.status_bind_address == "127.0.0.1:10267"
    assert s.health_port == 0 and t.metrics_bind_address == "" and h.metrics_bind_address == ""
    # everything else keeps the parts' own defaults
    assert s.port == 10261 and s.probe_period == 10.0 and s.filters is not None
    assert t.max_connections == 256 and t.follow_peers and h.period == 10.0 and h.peer_port == 10266


def test_prefixed_flags_are_the_parts_own() -> None:
    cfg = build(
        "--node-key-file=/pki/node.key",
        "--shadow-port=20261",
        "--shadow-bind-address=0.0.0.0",
        "--shadow-probe-period=500ms",
        "--shadow-health-port=10267",
        "--shadow-filters=",
        "--tunnel-allow=10.1.0.5:10255",
        "--tunnel-no-follow-peers",
        "--tunnel-metrics-bind-address=127.0.0.1:10265",
        "--health-period=3",
        "--health-peer-port=20266",
        "--health-peer-ca-file=/pki/node-ca.crt",
        "--health-vote-ca=/pki/vote-ca.crt",
        "--health-cert-file=/pki/peer.pem",
        "--status-bind-address=",
    )
    s, t, h = cfg.shadow, cfg.tunnel, cfg.health
    assert s is not None and t is not None and h is not None
    assert s.key_file == t.key_file == Path("/pki/node.key") and s.cert_file == Path("/pki/node.pem")
    assert h.cert_file == h.key_file == Path("/pki/peer.pem")  # a peer cert (serverAuth + clientAuth)
    assert s.port == 20261 and s.bind_address == "0.0.0.0" and s.probe_period == 0.5
    assert s.health_port == 10267 and s.filters is not None and not s.filters.enabled
    assert t.allow == (("10.1.0.5", 10255),) and not t.follow_peers
    assert t.metrics_bind_address == "127.0.0.1:10265"
    assert h.period == 3.0 and h.peer_port == 20266 and h.api_server == "http://127.0.0.1:20261"
    assert h.ca_file == Path("/pki/node-ca.crt") and h.vote_ca_file == Path("/pki/vote-ca.crt")
    assert cfg.status_bind_address == "" and cfg.validate() == []


def test_same_config_as_the_parts_own_subcommands() -> None:
    p = parser()
    cfg = build("--shadow-probe-timeout=1s", "--shadow-health-port=10267", "--shadow-cache-fsync=false")
    own = shadow_cli.config_from(
        p.parse_args(
            words(
                "shadow --node-name=n1 --server=https://10.0.0.1:6443 --server=https://10.0.0.2:6443 "
                "--server-ca-file=/pki/ca.crt --node-cert-file=/pki/node.pem --cache-dir=/state/shadow "
                "--secure-port=0 --probe-timeout=1s --cache-fsync=false"
            )
        )
    )
    assert cfg.shadow == own
    own_tunnel = tunnel_cli.config_from(
        p.parse_args(
            words(
                "tunnel-agent --server=aggapi.example:8091 --node-name=n1 --cert=/pki/node.pem "
                "--key=/pki/node.pem --ca=/pki/aggapi-ca.crt --address=10.1.0.5 --address=fd00::5 "
                "--metrics-bind-address="
            )
        )
    )
    assert cfg.tunnel == own_tunnel


@pytest.mark.parametrize(
    ("subcommand", "prefix", "identity"),
    [
        (
            "shadow",
            "shadow-",
            {
                "--node-name",
                "--server",
                "--server-ca-file",
                "--node-cert-file",
                "--node-key-file",
                "--cache-dir",
            },
        ),
        ("tunnel-agent", "tunnel-", {"--server", "--node-name", "--cert", "--key", "--ca", "--address"}),
        (
            "health-agent",
            "health-",
            {"--node-name", "--address", "--cert", "--key", "--ca", "--api-server", "--state-dir"},
        ),
    ],
)
def test_every_part_flag_is_in_all(subcommand: str, prefix: str, identity: set[str]) -> None:
    p = parser()
    subs = next(a for a in p._actions if isinstance(a, argparse._SubParsersAction))
    flags = lambda sp: {o for a in sp._actions for o in a.option_strings if o.startswith("--")}  # noqa: E731
    all_flags = flags(subs.choices["all"])
    own = flags(subs.choices[subcommand]) - identity - {"--help", "--verbose"}
    assert own and {f"--{prefix}{f[2:]}" for f in own} <= all_flags


def test_disable_parts() -> None:
    cfg = build("--disable=shadow", "--disable=tunnel")
    assert cfg.shadow is None and cfg.tunnel is None and cfg.health is not None
    assert not cfg.health_via_shadow and cfg.health.api_server == "https://10.0.0.1:6443"  # directly
    assert cfg.validate() == []
    assert "nothing to run" in " ".join(build("--disable=shadow,tunnel,health").validate())
    with pytest.raises(ValueError, match="unknown part"):
        build("--disable=kubelet")


def test_missing_part_flags_name_the_part() -> None:
    args = [a for a in BASE if not a.startswith("--tunnel-")]
    with pytest.raises(ValueError, match="tunnel agent needs --tunnel-server"):
        allinone.config_from(parser().parse_args(args))
    assert allinone.config_from(parser().parse_args([*args, "--disable=tunnel"])).tunnel is None
    with pytest.raises(ValueError, match="shadow needs --api-server"):
        allinone.config_from(parser().parse_args([a for a in args if "api-server" not in a]))
    bad = build("--shadow-secure-port=10268", "--tunnel-max-connections=0").validate()
    assert any(e.startswith("shadow: --secure-port needs") for e in bad)
    assert "tunnel: --max-connections must be at least 1" in bad


def test_the_health_agent_is_a_component_the_shadow_caches() -> None:
    assert USER_AGENT.startswith("aggapi-edge/") and component_of(USER_AGENT) in DEFAULT_COMPONENTS


# --- the process ----------------------------------------------------------------------------------

POLICY = """\
rules:
  - groups: ["system:nodes"]
    verbs: ["get", "list", "watch"]
    apiGroups: ["", "discovery.k8s.io", "coordination.k8s.io"]
    resources: ["*"]
"""


@dataclass(frozen=True)
class Env:
    dc: Devcluster
    cert: Path
    key: Path
    node_ca: Path  # the devcluster's client CA: signs node certs
    tunnel_ca: Path
    tunnel_cert: Path
    tunnel_key: Path
    ip: str


@pytest.fixture(scope="module")
def env(etcd_server: EtcdServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    ip = f"127.0.1.{random.randint(20, 250)}"
    dc = Devcluster(tmp_path_factory.mktemp("aio-dc"), etcd_server.client_url, "", POLICY)
    dc.start()
    try:
        dc.admin().apply("/api/v1/nodes", node_object(NodeIdentity(NODE, ip)))
        out = tmp_path_factory.mktemp("aio-pki")
        cert, key = issue_user(dc.pki, f"system:node:{NODE}", ["system:nodes"], out)
        ca = new_ca("aio-tunnel-ca")
        (out / "tunnel-ca.crt").write_bytes(ca.cert_pem())
        serving = issue_serving(ca, common_name="tunnel", dns_names=["localhost"], ips=["127.0.0.1"])
        write_pair(serving, out / "tunnel.crt", out / "tunnel.key")
        yield Env(
            dc, cert, key, dc.pki.client_ca, out / "tunnel-ca.crt", out / "tunnel.crt", out / "tunnel.key", ip
        )
    finally:
        dc.stop()


class Nodes:
    def __init__(self, nodes: dict[str, set[str]]) -> None:
        self.nodes = nodes

    async def addresses(self, node: str) -> set[str] | None:
        return self.nodes.get(node)


@pytest.fixture
async def tunnel_server(env: Env) -> AsyncIterator[TunnelServer]:
    cfg = TunnelServerConfig(env.tunnel_cert, env.tunnel_key, env.node_ca, port=0, shutdown_grace=0.5)
    server = TunnelServer(cfg, Nodes({NODE: {env.ip}}))
    task = asyncio.create_task(server.run(), name="test-tunnel-server")
    try:
        async with asyncio.timeout(30):
            await server.wait_started()
        yield server
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def eventually(what: str, probe: Callable[[], Any], timeout: float = 30.0) -> Any:
    last: object = None
    try:
        async with asyncio.timeout(timeout):
            while True:
                try:
                    last = await probe()
                    if last:
                        return last
                except (aiohttp.ClientError, OSError) as e:
                    last = e
                await asyncio.sleep(0.1)
    except TimeoutError:
        raise AssertionError(f"timed out waiting for {what}; last: {last!r}") from None


async def test_all_in_one_process(env: Env, tunnel_server: TunnelServer, tmp_path: Path) -> None:
    shadow_port, status_port, peer_port = free_port(), free_port(), free_port()
    state = tmp_path / "state"
    args = [
        "all",
        f"--node-name={NODE}",
        f"--node-cert-file={env.cert}",
        f"--node-key-file={env.key}",
        f"--api-server={env.dc.url}",
        f"--api-ca-file={env.dc.pki.ca}",
        f"--address={env.ip}",
        f"--state-dir={state}",
        f"--status-bind-address=127.0.0.1:{status_port}",
        f"--shadow-port={shadow_port}",
        "--shadow-secure-port=0",
        "--shadow-probe-period=200ms",
        "--shadow-filters=",  # no topology feeder: the only aggapi-edge client is the health agent
        f"--tunnel-server=127.0.0.1:{tunnel_server.port}",
        f"--tunnel-ca-file={env.tunnel_ca}",
        "--tunnel-backoff-initial=0.1",
        "--tunnel-backoff-max=1",
        f"--health-peer-ca-file={env.node_ca}",
        f"--health-peer-port={peer_port}",
        "--health-period=0.2",
    ]
    log = tmp_path / "aggapi-edge.log"
    with log.open("wb") as out:
        proc = await asyncio.create_subprocess_exec(
            str(BIN), *args, stdin=asyncio.subprocess.DEVNULL, stdout=out, stderr=out
        )
    status = f"http://127.0.0.1:{status_port}"
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http:

            async def get(url: str, **headers: str) -> tuple[int, str]:
                assert proc.returncode is None, log.read_text()
                async with http.get(url, headers=headers) as r:
                    return r.status, await r.text()

            async def ready() -> str | None:
                code, body = await get(f"{status}/readyz")
                return body if code == 200 else None

            body = await eventually("/readyz", ready)
            assert "[+]shadow ok: online" in body
            assert "[+]tunnel-agent ok" in body and "[+]health-agent ok" in body
            code, body = await get(f"{status}/healthz")
            assert code == 200 and body.endswith("ok\n"), body

            # the shadow answers a kubelet (and records what it read)
            code, body = await get(
                f"http://127.0.0.1:{shadow_port}/api/v1/nodes/{NODE}", **{"User-Agent": KUBELET_UA}
            )
            assert code == 200 and f'"name":"{NODE}"' in body.replace(" ", ""), body
            kubelet_copy = state / "shadow" / "kubelet" / "nodes" / "_cluster" / f"{NODE}.json"

            async def recorded() -> bool:
                return kubelet_copy.exists()

            await eventually("the kubelet's Node recorded by the shadow", recorded)

            # the health agent runs and reads its Node through the shadow, cached as component aggapi-edge
            code, metrics = await get(f"{status}/metrics")
            assert code == 200 and "aggapi_edge_health_probe_periods_total" in metrics
            assert "aggapi_shadow_cloud_healthy 1.0" in metrics and "aggapi_tunnel_agent_" in metrics
            cached = state / "shadow" / "aggapi-edge" / "nodes" / "_cluster" / f"{NODE}.json"

            async def read_through_shadow() -> bool:
                return cached.exists()

            await eventually("the health agent's Node read cached by the shadow", read_through_shadow)
            code, metrics = await get(f"{status}/metrics")
            assert "aggapi_edge_health_member_reads_failed_total 0.0" in metrics

            # the tunnel agent dialled the tunnel server directly
            async def registered() -> bool:
                return NODE in tunnel_server.agents()

            await eventually("the tunnel agent registered", registered)

        proc.send_signal(signal.SIGTERM)
        async with asyncio.timeout(30):
            code = await proc.wait()
        assert code == 0, log.read_text()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def test_in_process_any_shadow_port_then_cancel(env: Env, tmp_path: Path) -> None:
    """`--shadow-port=0`: the health agent learns the bound port; cancelling run() ends every part."""
    state = tmp_path / "state"
    args = parser().parse_args(
        [
            "all",
            f"--node-name={NODE}",
            f"--node-cert-file={env.cert}",
            f"--node-key-file={env.key}",
            f"--api-server={env.dc.url}",
            f"--api-ca-file={env.dc.pki.ca}",
            f"--address={env.ip}",
            f"--state-dir={state}",
            "--disable=tunnel",
            "--status-bind-address=127.0.0.1:0",
            "--shadow-port=0",
            "--shadow-secure-port=0",
            "--shadow-probe-period=200ms",
            "--shadow-filters=",
            f"--health-peer-ca-file={env.node_ca}",
            f"--health-peer-port={free_port()}",
            "--health-period=0.2",
        ]
    )
    parts = allinone.EdgeParts(allinone.config_from(args))
    task = asyncio.create_task(parts.run(), name="test-aggapi-edge-all")
    try:

        async def health_through_shadow() -> bool:
            assert not task.done()
            shadow, health = parts.shadow, parts.health
            assert shadow is not None and health is not None
            port = shadow.ports.get("http")
            return bool(port) and health.config.api_server == f"http://127.0.0.1:{port}"

        await eventually("the health agent pointed at the shadow's port", health_through_shadow)
        cached = state / "shadow" / "aggapi-edge" / "nodes" / "_cluster" / f"{NODE}.json"

        async def read_through_shadow() -> bool:
            return cached.exists()

        await eventually("the health agent's Node read cached by the shadow", read_through_shadow)
        assert parts.status_address is not None
        readyz = f"http://127.0.0.1:{parts.status_address[1]}/readyz"
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http:

            async def ready() -> str | None:
                async with http.get(readyz) as r:
                    return await r.text() if r.status == 200 else None

            body = await eventually("/readyz", ready)
        assert "[+]shadow ok: online" in body and "[+]health-agent ok" in body and "tunnel" not in body
    finally:
        task.cancel()
        async with asyncio.timeout(30):
            (result,) = await asyncio.gather(task, return_exceptions=True)
    assert isinstance(result, asyncio.CancelledError)
    assert set(parts.tasks) == {"shadow", "health-agent"} and all(t.done() for t in parts.tasks.values())
