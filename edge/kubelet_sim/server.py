"""KubeletSim: the kubelet's HTTPS API on <node address>:10250, backed by simulated pods.

Paths and query parameters are the real kubelet's (pkg/kubelet/server): /healthz, /pods,
/containerLogs/{ns}/{pod}/{container}, /exec|/attach/{ns}/{pod}[/{uid}]/{container},
/portForward/{ns}/{pod}[/{uid}]. exec/attach speak WebSocket (v5/v4.channel.k8s.io) or SPDY/3.1;
portForward speaks SPDY/3.1 (plain upgrade, or tunnelled in WebSocket as kubectl >= 1.31 sends it
through kube-apiserver) and the WebSocket channel protocol.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from typing import Any

from aiohttp import hdrs, web

from edge.aio import within
from edge.kubelet_sim import portforward, transports
from edge.kubelet_sim.apiview import ApiView
from edge.kubelet_sim.config import KubeletSimConfig, PodObject
from edge.kubelet_sim.echo import EchoServers
from edge.kubelet_sim.heartbeat import Heartbeat
from edge.kubelet_sim.logs import log_size, parse_log_options, serve_log
from edge.kubelet_sim.pipes import WebSocketPipe, upgrade_raw
from edge.kubelet_sim.pods import Container, Pod, PodTable
from edge.kubelet_sim.remotecommand import (
    SessionIO,
    StreamOptions,
    parse_stream_options,
    run_attach,
    run_exec,
)
from edge.kubelet_sim.spdy import SpdyConnection

log = logging.getLogger(__name__)

SPDY = "SPDY/3.1"
_STREAM_PROTOCOL_HEADER = "X-Stream-Protocol-Version"


def _text(status: int, message: str) -> web.Response:
    return web.Response(status=status, text=message + "\n", content_type="text/plain")


def _upgrade(request: web.Request) -> str:
    """Which protocol the request upgrades to: "websocket", "spdy", or "" for none we speak."""
    if "upgrade" not in request.headers.get(hdrs.CONNECTION, "").lower():
        return ""
    up = request.headers.get(hdrs.UPGRADE, "").lower()
    return "websocket" if up == "websocket" else "spdy" if up == SPDY.lower() else ""


def _header_list(request: web.Request, name: str) -> list[str]:
    return [v.strip() for raw in request.headers.getall(name, []) for v in raw.split(",") if v.strip()]


class KubeletSim:
    def __init__(self, config: KubeletSimConfig) -> None:
        self.config = config
        self.pods = PodTable(config.root_dir, config.node, config.clock)
        self.pods.replace(config.pods)
        t = config.timeouts
        self._echo = EchoServers(config.node.address, write_timeout=t.write, idle_timeout=t.idle)
        self._targets: dict[tuple[str, str, int], tuple[str, int]] = {}
        self._sessions: set[asyncio.Task[Any]] = set()
        self._stopping = False

    @property
    def url(self) -> str:
        return f"https://{self.config.node.address}:{self.config.port}"

    def set_pods(self, pods: Iterable[PodObject]) -> None:
        """Replace the pods this node runs (the lab feeds the pods bound to the node)."""
        self.pods.replace(pods)

    def append_log(
        self, namespace: str, pod: str, container: str, data: str | bytes, stream: str = "stdout"
    ) -> None:
        self.pods.append_log(namespace, pod, container, data, stream)

    async def run(self) -> None:
        """Serve until cancelled."""
        async with self.running():
            await asyncio.Future()

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[KubeletSim]:
        cfg = self.config
        self._stopping = False
        tickers: list[asyncio.Task[None]] = []
        runner = web.AppRunner(self._app(), access_log=None, shutdown_timeout=cfg.timeouts.write)
        try:
            for m in cfg.port_forwards:
                if m.target is None:
                    self._targets[(m.namespace, m.pod, m.port)] = await self._echo.start(m.port)
                else:
                    host, _, port = m.target.rpartition(":")
                    self._targets[(m.namespace, m.pod, m.port)] = (host.strip("[]"), int(port))
            await runner.setup()
            site = web.TCPSite(
                runner, cfg.node.address, cfg.port, ssl_context=self._tls(), reuse_address=True
            )
            await site.start()
            # Only once bound: a sim that fails to start must not have written to its pods' logs.
            for t in cfg.log_tickers:
                name = f"kubelet-sim:{cfg.node.name}:ticker:{t.namespace}/{t.pod}/{t.container}"
                tickers.append(
                    asyncio.create_task(self._tick(t.namespace, t.pod, t.container, t.interval), name=name)
                )
            if cfg.heartbeat is not None:
                beat = Heartbeat(cfg.node.name, cfg.heartbeat, cfg.clock)
                tickers.append(asyncio.create_task(beat.run(), name=f"kubelet-sim:{cfg.node.name}:heartbeat"))
                log.info("kubelet-sim %s heartbeating to %s", cfg.node.name, cfg.heartbeat.api_server)
                if cfg.api_view_file is not None:
                    view = ApiView(cfg.node.name, cfg.heartbeat, cfg.api_view_file, pod_client=cfg.pod_client)
                    tickers.append(
                        asyncio.create_task(view.run(), name=f"kubelet-sim:{cfg.node.name}:api-view")
                    )
            log.info("kubelet-sim %s serving on %s", cfg.node.name, self.url)
            yield self
        finally:
            self._stopping = True
            for task in (*tickers, *self._sessions):
                task.cancel()
            await asyncio.gather(*tickers, *self._sessions, return_exceptions=True)
            await runner.cleanup()
            await self._echo.close()

    def _tls(self) -> ssl.SSLContext:
        cfg = self.config
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(cfg.client_ca_file))
        ctx.load_cert_chain(str(cfg.tls_cert_file), str(cfg.tls_key_file))
        ctx.verify_mode = ssl.CERT_REQUIRED  # any cert from the kubelet-client CA is authorized
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        return ctx

    async def _tick(self, namespace: str, pod: str, container: str, interval: float) -> None:
        n = 0
        while True:
            n += 1
            with contextlib.suppress(KeyError):  # the pod may come and go with set_pods
                self.pods.append_log(namespace, pod, container, f"{pod}/{container}: tick {n}\n", "stdout")
            await asyncio.sleep(interval)

    def _app(self) -> web.Application:
        app = web.Application(middlewares=[self._track])
        r = app.router
        r.add_get("/healthz", self._healthz)
        r.add_get("/pods", self._pod_list)
        r.add_get("/pods/", self._pod_list)
        r.add_get("/containerLogs/{ns}/{pod}/{container}", self._logs)
        for verb in ("exec", "attach"):
            for path in (
                f"/{verb}/{{ns}}/{{pod}}/{{container}}",
                f"/{verb}/{{ns}}/{{pod}}/{{uid}}/{{container}}",
            ):
                r.add_route("GET", path, self._exec if verb == "exec" else self._attach)
                r.add_route("POST", path, self._exec if verb == "exec" else self._attach)
        for path in ("/portForward/{ns}/{pod}", "/portForward/{ns}/{pod}/{uid}"):
            r.add_route("GET", path, self._portforward)
            r.add_route("POST", path, self._portforward)
        return app

    @web.middleware
    async def _track(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        # Long-lived handlers (follow, exec, port-forward) are cancelled when the sim stops.
        task = asyncio.current_task()
        assert task is not None
        self._sessions.add(task)
        try:
            return await handler(request)
        finally:
            self._sessions.discard(task)

    async def _healthz(self, request: web.Request) -> web.Response:
        return web.Response(text="ok", content_type="text/plain")

    async def _pod_list(self, request: web.Request) -> web.Response:
        return web.json_response(self.pods.pod_list())

    def _lookup(self, request: web.Request) -> tuple[Pod, Container]:
        ns, name, cname = (request.match_info[k] for k in ("ns", "pod", "container"))
        pod = self.pods.get(ns, name)
        if pod is None:
            raise web.HTTPNotFound(text=f'pod "{ns}/{name}" does not exist\n')
        uid = request.match_info.get("uid")
        if uid and uid != pod.uid:
            raise web.HTTPNotFound(text=f'pod "{ns}/{name}" with uid {uid} does not exist\n')
        container = pod.containers.get(cname)
        if container is None:
            raise web.HTTPNotFound(text=f'container "{cname}" not found in pod "{ns}/{name}"\n')
        return pod, container

    async def _logs(self, request: web.Request) -> web.StreamResponse:
        pod, container = self._lookup(request)
        try:
            opts = parse_log_options(request.query)
        except ValueError as e:
            return _text(400, str(e))
        if opts.previous:
            return _text(
                400, f'previous terminated container "{container.name}" in pod "{pod.name}" not found'
            )
        resp = web.StreamResponse(headers={hdrs.CONTENT_TYPE: "text/plain"})
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        transport = request.transport

        async def write(data: bytes) -> None:
            await within(resp.write(data), self.config.timeouts.write)

        with contextlib.suppress(ConnectionError, TimeoutError):
            await serve_log(
                container.log_path,
                opts,
                write,
                now=self.config.clock(),
                poll=self.config.log_poll_interval,
                alive=lambda: not self._stopping and transport is not None and not transport.is_closing(),
            )
            await within(resp.write_eof(), self.config.timeouts.write)
        return resp

    def _exec_env(self, pod: Pod, container: Container, tty: bool) -> dict[str, str]:
        env = {"PATH": self.config.exec_path, "HOSTNAME": pod.name, "HOME": str(pod.cwd)}
        if tty:
            env["TERM"] = "xterm"
        return env | container.env

    async def _exec(self, request: web.Request) -> web.StreamResponse:
        pod, container = self._lookup(request)
        try:
            opts = parse_stream_options(request.query)
        except ValueError as e:
            return _text(400, str(e))
        argv = request.query.getall("command", [])
        env = self._exec_env(pod, container, opts.tty)
        label = f"exec:{pod.namespace}/{pod.name}/{container.name}"

        def run(io: SessionIO) -> Awaitable[dict[str, Any] | None]:
            return run_exec(
                argv, cwd=pod.cwd, env=env, opts=opts, io=io, timeouts=self.config.timeouts, label=label
            )

        return await self._remotecommand(request, opts, run, label)

    async def _attach(self, request: web.Request) -> web.StreamResponse:
        pod, container = self._lookup(request)
        try:
            opts = parse_stream_options(request.query)
        except ValueError as e:
            return _text(400, str(e))

        offset = log_size(container.log_path)  # output from the moment of the request, not of the upgrade

        def echo(data: bytes) -> None:
            self.pods.append_log(pod.namespace, pod.name, container.name, data, "stdout")

        def run(io: SessionIO) -> Awaitable[dict[str, Any] | None]:
            poll = self.config.log_poll_interval
            return run_attach(container, opts=opts, io=io, poll=poll, echo=echo, offset=offset)

        return await self._remotecommand(
            request, opts, run, f"attach:{pod.namespace}/{pod.name}/{container.name}"
        )

    async def _remotecommand(
        self, request: web.Request, opts: StreamOptions, run: transports.Runner, label: str
    ) -> web.StreamResponse:
        t = self.config.timeouts
        kind = _upgrade(request)
        if kind == "websocket":
            return await transports.serve_websocket(request, opts, run, t, label)
        if kind != "spdy":
            return _text(400, "Upgrade request required")
        offered = _header_list(request, _STREAM_PROTOCOL_HEADER)
        chosen = transports.negotiate(offered, transports.REMOTECOMMAND_PROTOCOLS)
        if chosen is None:
            return self._no_protocol(offered, transports.REMOTECOMMAND_PROTOCOLS)
        pipe = await upgrade_raw(request, self._spdy_headers(chosen))
        conn = SpdyConnection(pipe, write_timeout=t.write, idle_timeout=t.idle)
        await transports.serve_spdy(conn, opts, run, t, label)
        return pipe.response

    async def _portforward(self, request: web.Request) -> web.StreamResponse:
        ns, name = request.match_info["ns"], request.match_info["pod"]
        pod = self.pods.get(ns, name)
        uid = request.match_info.get("uid")
        if pod is None or (uid and uid != pod.uid):
            return _text(404, f'pod "{ns}/{name}" does not exist')
        t = self.config.timeouts
        label = f"portforward:{ns}/{name}"

        async def dial(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
            target = self._targets.get((ns, name, port))
            if target is None:
                raise LookupError(f"dial tcp 127.0.0.1:{port}: connect: connection refused")
            return await asyncio.open_connection(*target)

        kind = _upgrade(request)
        if kind == "websocket":
            if portforward.SPDY_TUNNEL_PROTOCOL in _header_list(request, hdrs.SEC_WEBSOCKET_PROTOCOL):
                protocols = (portforward.SPDY_TUNNEL_PROTOCOL,)
                ws = web.WebSocketResponse(protocols=protocols, max_msg_size=0, timeout=t.write)
                await ws.prepare(request)
                tunnel = WebSocketPipe(ws, request, t.write)
                conn = SpdyConnection(tunnel, write_timeout=t.write, idle_timeout=t.idle)
                await portforward.SpdyPortForward(
                    conn, dial, pod=name, uid=pod.uid, timeouts=t, label=label
                ).run()
                return ws
            try:
                ports = portforward.parse_ports(request.query.getall("port", []))
            except ValueError as e:
                return _text(400, str(e))
            if not ports:
                return _text(400, 'query parameter "port" is required')
            return await portforward.serve_websocket_channels(
                request, ports, dial, pod=name, uid=pod.uid, timeouts=t
            )
        if kind != "spdy":
            return _text(400, "Upgrade request required")
        offered = _header_list(request, _STREAM_PROTOCOL_HEADER)
        if offered and portforward.PORTFORWARD_PROTOCOL not in offered:
            return self._no_protocol(offered, (portforward.PORTFORWARD_PROTOCOL,))
        # No header at all is a legacy client; apimachinery accepts it without naming a protocol.
        pipe = await upgrade_raw(
            request, self._spdy_headers(portforward.PORTFORWARD_PROTOCOL if offered else None)
        )
        conn = SpdyConnection(pipe, write_timeout=t.write, idle_timeout=t.idle)
        await portforward.SpdyPortForward(conn, dial, pod=name, uid=pod.uid, timeouts=t, label=label).run()
        return pipe.response

    @staticmethod
    def _spdy_headers(protocol: str | None) -> dict[str, str]:
        headers: dict[str, str] = {"Connection": "Upgrade", "Upgrade": SPDY}
        if protocol:
            headers[_STREAM_PROTOCOL_HEADER] = protocol
        return headers

    @staticmethod
    def _no_protocol(offered: list[str], supported: tuple[str, ...]) -> web.Response:
        resp = _text(
            403,
            f"unable to upgrade: unable to negotiate protocol: client supports {offered}, "
            f"server supports {list(supported)}",
        )
        resp.headers["X-Accepted-Stream-Protocol-Versions"] = ", ".join(supported)
        return resp
