"""`aggapi-edge all`: the shadow-apiserver, the tunnel agent and the health agent in one process: one
asyncio loop, one TaskGroup (tasks `shadow`, `tunnel-agent`, `health-agent`), one status endpoint.

Flags: the node's identity and the kube-apiserver connection once (`--node-name`, `--node-cert-file`,
`--node-key-file`, `--api-server`, `--api-ca-file`, `--address`, `--state-dir`); every other flag of a
part with the part's prefix (`--shadow-…`, `--tunnel-…`, `--health-…`), defined by the part's own CLI
(`add_arguments(parser, prefix)`) and turned into its config by the part's own `config_from`.

Wiring (docs/edge.md): the health agent reads its pool members and posts its votes through the local
shadow (`http://127.0.0.1:<shadow port>`: the shadow adds the node's credentials, caches the reads and
answers 503 to votes while offline, which stay queued); the tunnel agent dials the tunnel servers itself.
A part that fails ends the process (exit 1) so that its supervisor restarts all of it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aiohttp import web
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from edge.health import cli as health_cli
from edge.shadow import cli as shadow_cli
from edge.tunnel import cli as tunnel_cli

if TYPE_CHECKING:
    from edge.health.agent import HealthAgent
    from edge.health.config import HealthConfig
    from edge.shadow.config import ShadowConfig
    from edge.shadow.server import Shadow
    from edge.tunnel.agent import TunnelAgent
    from edge.tunnel.config import AgentConfig

log = logging.getLogger(__name__)

PARTS = ("shadow", "tunnel", "health")
DEFAULT_STATE_DIR = "/var/lib/aggapi-edge"
DEFAULT_STATUS_BIND_ADDRESS = "127.0.0.1:10267"  # the shadow's health port; its own listener is off here
# The parts' own status listeners: off in `all` (--status-bind-address serves all parts), each can be on.
OWN_STATUS_OFF = {
    "shadow_health_port": 0,
    "tunnel_metrics_bind_address": "",
    "health_metrics_bind_address": "",
}


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser(
        "all",
        help="shadow-apiserver, tunnel agent and health agent in one process",
        description="Every edge part in one process (docs/edge.md). The parts' own flags take a prefix: "
        "--shadow-port, --tunnel-allow, --health-period, ...",
    )
    add = p.add_argument
    add("--node-name", required=True)
    add("--node-cert-file", required=True, type=Path, help="CN=system:node:<node>, O=system:nodes; all parts")
    add("--node-key-file", type=Path, help="its key (default: --node-cert-file, a combined PEM)")
    add("--api-server", action="append", default=[], help="kube-apiserver https://host:port (repeatable)")
    add("--api-ca-file", type=Path, help="CA that signed kube-apiserver's serving certificate")
    add("--address", action="append", default=[], help="node IP (repeatable); health listens on the first")
    add("--state-dir", type=Path, default=Path(DEFAULT_STATE_DIR), help="<dir>/shadow, <dir>/health")
    add("--disable", action="append", default=[], metavar="PART,...", help="any of shadow,tunnel,health")
    add(
        "--status-bind-address",
        default=DEFAULT_STATUS_BIND_ADDRESS,
        metavar="HOST:PORT",
        help="/healthz /livez /readyz /metrics of every part (default %(default)s; '' disables)",
    )
    add("-v", "--verbose", action="count", default=0)
    shadow_cli.add_arguments(p.add_argument_group("shadow-apiserver (`aggapi-edge shadow`)"), "shadow-")
    t = p.add_argument_group("tunnel agent (`aggapi-edge tunnel-agent`)")
    t.add_argument("--tunnel-server", action="append", default=[], metavar="HOST:PORT", help="(repeatable)")
    t.add_argument("--tunnel-ca-file", type=Path, help="CA that signed the tunnel servers' certificates")
    tunnel_cli.add_arguments(t, "tunnel-")
    h = p.add_argument_group("health agent (`aggapi-edge health-agent`)")
    h.add_argument("--health-peer-ca-file", type=Path, help="CA of peers' node certs (default --api-ca-file)")
    h.add_argument("--health-cert-file", type=Path, help="peer endpoint cert (default --node-cert-file)")
    h.add_argument("--health-key-file", type=Path, help="its key (default --health-cert-file)")
    health_cli.add_arguments(h, "health-")
    for action in p._actions:
        if action.dest in OWN_STATUS_OFF:
            action.default = OWN_STATUS_OFF[action.dest]
            action.help = "this part's own status listener (default: off; see --status-bind-address)"
    p.set_defaults(func=run)


@dataclass(frozen=True, slots=True)
class AllConfig:
    shadow: ShadowConfig | None
    tunnel: AgentConfig | None
    health: HealthConfig | None
    status_bind_address: str = DEFAULT_STATUS_BIND_ADDRESS
    health_via_shadow: bool = False  # the health agent's --api-server is the shadow (its port may be 0)

    def validate(self) -> list[str]:
        from edge.tunnel.config import listen_address

        errors: list[str] = []
        parts = (("shadow", self.shadow), ("tunnel", self.tunnel), ("health", self.health))
        for name, cfg in parts:
            errors.extend(f"{name}: {e}" for e in (cfg.validate() if cfg is not None else ()))
        if all(cfg is None for _, cfg in parts):
            errors.append("every part is disabled: nothing to run")
        if self.status_bind_address:
            try:
                listen_address(self.status_bind_address)
            except ValueError as e:
                errors.append(f"--status-bind-address: {e}")
        return errors


def disabled(values: list[str]) -> frozenset[str]:
    names = frozenset(n.strip() for v in values for n in v.split(",") if n.strip())
    unknown = sorted(names - set(PARTS))
    if unknown:
        raise ValueError(f"--disable: unknown part(s) {', '.join(unknown)} (known: {', '.join(PARTS)})")
    return names


def shadow_url(cfg: ShadowConfig, port: int | None = None) -> str:
    """Where this process reaches its own shadow's plain HTTP port."""
    host = {"": "127.0.0.1", "0.0.0.0": "127.0.0.1", "::": "::1"}.get(cfg.bind_address, cfg.bind_address)
    return f"http://{f'[{host}]' if ':' in host else host}:{cfg.port if port is None else port}"


def _part(args: argparse.Namespace, prefix: str, **identity: Any) -> argparse.Namespace:
    """The namespace the part's own subcommand would have parsed: its prefixed flags, unprefixed, plus
    the identity flags the part names its own way."""
    dest = prefix.replace("-", "_")
    own = {k[len(dest) :]: v for k, v in vars(args).items() if k.startswith(dest)}
    return argparse.Namespace(**{**own, **identity})


def config_from(args: argparse.Namespace) -> AllConfig:
    """The three parts' configs (None = disabled). Raises ValueError naming missing or bad flags."""
    off = disabled(args.disable)
    node, cert, key = args.node_name, args.node_cert_file, args.node_key_file or args.node_cert_file
    api_ca, addresses, state = args.api_ca_file, list(args.address), args.state_dir
    missing = []
    if "shadow" not in off and not (args.api_server and api_ca):
        missing.append("the shadow needs --api-server and --api-ca-file")
    if "tunnel" not in off and not (args.tunnel_server and args.tunnel_ca_file and addresses):
        missing.append("the tunnel agent needs --tunnel-server, --tunnel-ca-file and --address")
    if "health" not in off and not (addresses and (args.health_peer_ca_file or api_ca)):
        missing.append("the health agent needs --address and --health-peer-ca-file (or --api-ca-file)")
    if missing:
        raise ValueError("; ".join(missing) + " (or --disable it)")
    shadow = tunnel = health = None
    if "shadow" not in off:
        ident = {"node_name": node, "server": list(args.api_server), "server_ca_file": api_ca}
        ident |= {"node_cert_file": cert, "node_key_file": key, "cache_dir": state / "shadow"}
        shadow = shadow_cli.config_from(_part(args, "shadow-", **ident))
    if "tunnel" not in off:
        ident = {"server": list(args.tunnel_server), "ca": args.tunnel_ca_file, "address": addresses}
        tunnel = tunnel_cli.config_from(_part(args, "tunnel-", node_name=node, cert=cert, key=key, **ident))
    if "health" not in off:
        ident = {
            "address": addresses[0],
            "ca": args.health_peer_ca_file or api_ca,
            "state_dir": state / "health",
        }
        ident["api_server"] = shadow_url(shadow) if shadow is not None else (args.api_server or [""])[0]
        ident["vote_ca"] = args.health_vote_ca or api_ca  # used only without the shadow (https)
        if args.health_cert_file:  # needs serverAuth too; a kubelet's client cert is clientAuth only
            cert = key = args.health_cert_file
        ident |= {"cert": cert, "key": args.health_key_file or key}
        health = health_cli.config_from(_part(args, "health-", node_name=node, **ident))
    via_shadow = shadow is not None and health is not None
    return AllConfig(shadow, tunnel, health, args.status_bind_address, via_shadow)


class _Union(Collector):
    """Every part's registry as one (the parts' metric names never clash: aggapi_shadow_*,
    aggapi_tunnel_agent_*, aggapi_edge_health_*)."""

    def __init__(self, registries: Callable[[], list[CollectorRegistry]]) -> None:
        self._registries = registries

    def collect(self) -> Iterator[Metric]:
        for registry in self._registries():
            yield from registry.collect()


class EdgeParts:
    """The enabled parts, built (and their configs checked, certificates loaded) before anything runs."""

    def __init__(self, cfg: AllConfig) -> None:
        errors = cfg.validate()
        if errors:
            raise ValueError("; ".join(errors))
        from edge.health.agent import HealthAgent
        from edge.shadow.server import Shadow
        from edge.tunnel.agent import TunnelAgent

        self.cfg = cfg
        self.shadow: Shadow | None = Shadow(cfg.shadow) if cfg.shadow is not None else None
        self.tunnel: TunnelAgent | None = TunnelAgent(cfg.tunnel) if cfg.tunnel is not None else None
        self.health: HealthAgent | None = HealthAgent(cfg.health) if cfg.health is not None else None
        self.tasks: dict[str, asyncio.Task[None]] = {}
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(_Union(self._registries))
        self.status_address: tuple[str, int] | None = None

    async def run(self) -> None:
        """Run every part until cancelled (then each is cancelled and awaited). Raises OSError at once
        when the status address is taken; a part that fails cancels the others and raises (a group)."""
        runner = await self._start_status()
        try:
            async with asyncio.TaskGroup() as tg:
                if self.shadow is not None:
                    self.tasks["shadow"] = tg.create_task(self.shadow.run(), name="shadow")
                if self.tunnel is not None:
                    self.tasks["tunnel-agent"] = tg.create_task(self.tunnel.run(), name="tunnel-agent")
                if self.health is not None:
                    self.tasks["health-agent"] = tg.create_task(self._run_health(), name="health-agent")
        finally:
            if runner is not None:
                await runner.cleanup()

    async def _run_health(self) -> None:
        assert self.health is not None
        if self.cfg.health_via_shadow and self.shadow is not None:
            await self.shadow.health.decided.wait()  # the shadow listens and has probed the cloud once
            if self.shadow.cfg.port == 0:  # any free port: known now
                from edge.health.agent import HealthAgent

                url = shadow_url(self.shadow.cfg, self.shadow.ports["http"])
                self.health = HealthAgent(replace(self.health.config, api_server=url))
        await self.health.run()

    # ---- status: /healthz /livez /readyz /metrics --------------------------------------------------

    def _registries(self) -> list[CollectorRegistry]:
        from edge.health.metrics import registry_for

        out = [self.shadow.metrics.registry] if self.shadow is not None else []
        out += [self.tunnel.registry] if self.tunnel is not None else []
        return out + ([registry_for(self.health)] if self.health is not None else [])

    def _task_problem(self, name: str) -> str | None:
        task = self.tasks.get(name)
        return "not started" if task is None else ("stopped" if task.done() else None)

    def checks(self, ready: bool) -> list[tuple[str, str | None, str]]:
        """(part, problem or None, note) for each enabled part; `ready` adds the shadow's readiness."""
        out: list[tuple[str, str | None, str]] = []
        if self.shadow is not None:
            problem, note = self._task_problem("shadow"), ""
            if ready and problem is None:
                if not self.shadow.cache.loaded:
                    problem = "cache not loaded"
                elif not self.shadow.health.decided.is_set():
                    problem = "cloud health not probed yet"
                else:
                    note = "online" if self.shadow.proxy.online else "offline (serving from cache)"
            out.append(("shadow", problem, note))
        if self.tunnel is not None:
            out.append(("tunnel-agent", self._task_problem("tunnel-agent") or self.tunnel.health(), ""))
        if self.health is not None:
            out.append(("health-agent", self._task_problem("health-agent") or self.health.health(), ""))
        return out

    async def _start_status(self) -> web.AppRunner | None:
        if not self.cfg.status_bind_address:
            return None
        from edge.tunnel.config import listen_address

        app = web.Application()
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/livez", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        app.router.add_get("/metrics", self._metrics)
        runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=1.0)
        await runner.setup()
        try:
            host, port = listen_address(self.cfg.status_bind_address)
            await web.TCPSite(runner, host, port).start()
        except BaseException:
            await runner.cleanup()
            raise
        self.status_address = (host, int(runner.addresses[0][1]))
        log.info("aggapi-edge: serving /healthz /readyz /metrics on %s:%d", *self.status_address)
        return runner

    def _answer(self, ready: bool) -> web.Response:
        checks = self.checks(ready)
        lines = [
            f"[+]{n} ok{': ' + note if note else ''}" if p is None else f"[-]{n} failed: {p}"
            for n, p, note in checks
        ]
        if all(p is None for _, p, _ in checks):
            return web.Response(text="\n".join([*lines, "ok", ""]))
        what = "readyz" if ready else "healthz"
        return web.Response(
            status=503 if ready else 500, text="\n".join([*lines, f"{what} check failed", ""])
        )

    async def _healthz(self, request: web.Request) -> web.Response:
        return self._answer(ready=False)

    async def _readyz(self, request: web.Request) -> web.Response:
        return self._answer(ready=True)

    async def _metrics(self, request: web.Request) -> web.Response:
        encode, ctype = choose_encoder(request.headers.get("Accept", ""))
        return web.Response(body=encode(self.registry), headers={"Content-Type": ctype})


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(
        level=logging.DEBUG if args.verbose > 1 else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        parts = EdgeParts(config_from(args))
    except (ValueError, OSError) as e:  # bad flags, unreadable certificates
        log.error("aggapi-edge all: %s", e)
        return 2
    try:
        asyncio.run(_serve(parts))
    except (OSError, ExceptionGroup) as e:  # a port is taken, the state dir is unusable; a part failed
        for err in _leaves(e):
            log.error("aggapi-edge all: %s", err, exc_info=None if isinstance(err, OSError) else err)
        return 1
    return 0


def _leaves(e: BaseException) -> list[BaseException]:
    if isinstance(e, BaseExceptionGroup):
        return [leaf for sub in e.exceptions for leaf in _leaves(sub)]
    return [e]


async def _serve(parts: EdgeParts) -> None:
    loop = asyncio.get_running_loop()
    task = asyncio.create_task(parts.run(), name="aggapi-edge-all")
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, task.cancel)
    with contextlib.suppress(asyncio.CancelledError):
        await task
