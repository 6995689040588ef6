"""`make bench`: the edge shadow-apiserver (`aggapi-edge shadow`, issue 7) against the devcluster.

One run starts its own etcd and a devcluster (the KAS stand-in, DESIGN §6) through the `tests/support`
helpers, issues a node client certificate (`system:node:edge-1`), and runs the real `aggapi-edge shadow`
process with `--server` pointing at a cuttable TCP relay (in this process) in front of the devcluster.
All on 127.0.0.1, sharing the machine's cores. It prints, each beside a baseline from the same run:

  1. online latency through the shadow, p50/p99 of N sequential requests as the kubelet
     (`User-Agent: kubelet/v1.30.0 ...`, so the reads are cached): GET of one pod and LIST of a
     namespace of 100 pods; baseline: the same requests direct to the devcluster with the same node
     certificate (interleaved request by request). The same requests direct through the relay are a note
     (the relay's own cost is part of the shadow's path here).
  2. cache-hit latency offline (relay cut, the shadow has declared the cloud unreachable): the same GET
     and LIST, answered from the shadow's cache; baseline: the direct requests, interleaved.
  3. RSS (`VmRSS`) of the shadow process idle (started, online, nothing cached) and with 1,000 pods,
     1,000 Services and 1,000 EndpointSlices cached by a kubelet-like (pods of its node) and a
     kube-proxy-like (Services, EndpointSlices) client that list+watch through it; baseline: a bare
     `python -c 'import aiohttp; ...'` interpreter in the same run. YurtHub's published 30-40 MB idle is
     printed as a reference only (another program, not measured here). Plus the disk footprint (du).
  4. link loss → first answer from the cache: the relay is cut at t0 (listener closed, connections reset),
     a cached GET is polled every 50 ms (1 s client timeout), and the first 200 answer after t0 is
     timed; every such answer must come from the cache, which the shadow's
     `aggapi_shadow_requests_total{served_from="cache"}` counter confirms. The time until the shadow
     declares the cloud unreachable (`aggapi_shadow_cloud_healthy` 0) is printed as well. At the default
     `--probe-period=10s` and at 1s; baseline: probe period x `--unhealthy-after` (3). The same with a
     black-hole link (connections accepted, nothing forwarded, open ones reset) is printed too.

Nothing asserts on timing: the exit status is 1 only when the bench itself broke (an error answer, a wait
over its limit, a process that exited).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import json
import re
import shutil
import ssl
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from api import Broken, machine, pct, proc_cpu, proc_status, run_pool
from support.devcluster import Devcluster
from support.etcd import EtcdServer, start_etcd

from aggapi.devcluster.labkit import free_port
from aggapi.devcluster.pki import issue_user
from edge.kubelet_sim import NodeIdentity, node_object

NODE = "edge-1"
KUBELET_UA = "kubelet/v1.30.0 (linux/amd64) kubernetes/abc"
KUBE_PROXY_UA = "kube-proxy/v1.30.0 (linux/amd64) kubernetes/abc"
ADMIN_UA = "shadow-bench-admin/1.0"
JSON = "application/json"
CLIENT_GO_ACCEPT = "application/vnd.kubernetes.protobuf,application/json"  # kube-proxy's default
NS_LIST = "bench-list"  # 100 pods: the LIST and GET of section 1
NS_BULK = "bench-bulk"  # the other 900 pods, the Services and EndpointSlices
LIST_PODS = 100
PROXY_SELECTOR = "!service.kubernetes.io/headless,!service.kubernetes.io/service-proxy-name"
UNHEALTHY_AFTER = 3  # the shadow's default --unhealthy-after
PROBE_TIMEOUT = 2.0  # the shadow's default --probe-timeout
POLL_EVERY = 0.05
POLL_TIMEOUT = 1.0
YURTHUB_IDLE_MB = (30.0, 40.0)
BIN = Path(sys.executable).parent / "aggapi-edge"
ROOT = str(Path(__file__).resolve().parent.parent)
CLIENT_DIRS = ("kubelet/pods", "kube-proxy/services", "kube-proxy/endpointslices.discovery.k8s.io")
POLICY = """\
rules:
  - groups: ["system:nodes"]
    verbs: ["get", "list", "watch"]
    apiGroups: ["", "discovery.k8s.io", "coordination.k8s.io", "apps"]
    resources: ["*"]
  - groups: ["system:nodes"]
    verbs: ["create", "update", "patch"]
    apiGroups: ["", "coordination.k8s.io", "events.k8s.io"]
    resources: ["leases", "nodes", "nodes/status", "events"]
"""


# ---- objects ---------------------------------------------------------------------------------------------


def pod(i: int) -> dict[str, Any]:
    ns = NS_LIST if i < LIST_PODS else NS_BULK
    name = f"app-{i:04d}"
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": ns,
            "labels": {"app": f"app-{i % 50:02d}", "pod-template-hash": "7c9f8d6b5"},
            "annotations": {"kubectl.kubernetes.io/default-container": "main"},
        },
        "spec": {
            "nodeName": NODE,
            "restartPolicy": "Always",
            "serviceAccountName": "default",
            "containers": [
                {
                    "name": "main",
                    "image": f"registry.example.com/team/app-{i % 50:02d}:1.4.{i % 7}",
                    "ports": [{"containerPort": 8080, "protocol": "TCP", "name": "http"}],
                    "env": [{"name": "POD_INDEX", "value": str(i)}, {"name": "LOG_LEVEL", "value": "info"}],
                    "resources": {
                        "requests": {"cpu": "50m", "memory": "64Mi"},
                        "limits": {"cpu": "500m", "memory": "256Mi"},
                    },
                    "readinessProbe": {"httpGet": {"path": "/healthz", "port": 8080}, "periodSeconds": 10},
                }
            ],
            "tolerations": [
                {"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute"}
            ],
        },
        "status": {
            "phase": "Running",
            "hostIP": "127.0.1.9",
            "podIP": f"10.244.{i // 250}.{i % 250 + 2}",
            "conditions": [
                {"type": t, "status": "True", "lastTransitionTime": "2026-11-28T00:00:00Z"}
                for t in ("Initialized", "Ready", "ContainersReady", "PodScheduled")
            ],
        },
    }


def service(i: int) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": f"svc-{i:04d}", "namespace": NS_BULK, "labels": {"app": f"svc-{i:04d}"}},
        "spec": {
            "type": "ClusterIP",
            "clusterIP": f"10.96.{i // 250}.{i % 250 + 2}",
            "clusterIPs": [f"10.96.{i // 250}.{i % 250 + 2}"],
            "selector": {"app": f"svc-{i:04d}"},
            "ports": [{"name": "http", "port": 80, "targetPort": 8080, "protocol": "TCP"}],
            "sessionAffinity": "None",
        },
    }


def endpointslice(i: int) -> dict[str, Any]:
    return {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": f"svc-{i:04d}-x7k2p",
            "namespace": NS_BULK,
            "labels": {
                "kubernetes.io/service-name": f"svc-{i:04d}",
                "endpointslice.kubernetes.io/managed-by": "endpointslice-controller.k8s.io",
            },
        },
        "addressType": "IPv4",
        "endpoints": [
            {
                "addresses": [f"10.244.{(i + k) // 250}.{(i + k) % 250 + 2}"],
                "conditions": {"ready": True, "serving": True, "terminating": False},
                "nodeName": NODE,
            }
            for k in range(2)
        ],
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
    }


# ---- a cuttable relay ------------------------------------------------------------------------------------


class Relay:
    """127.0.0.1:<port> → the devcluster, byte for byte, in this process's event loop.

    cut(): the listener closes (new connections are refused) and open connections are reset.
    blackhole(): open connections are reset; new ones are accepted but nothing is forwarded.
    """

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = 0
        self._flowing = asyncio.Event()
        self._flowing.set()
        self._server: asyncio.Server | None = None
        self._conns: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _reset_all(self) -> None:
        for w in list(self._conns):
            w.transport.abort()
        self._conns.clear()
        for t in list(self._tasks):
            t.cancel()
        async with asyncio.timeout(5):
            await asyncio.gather(*self._tasks, return_exceptions=True)

    async def cut(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        await self._reset_all()

    async def blackhole(self) -> None:
        self._flowing.clear()
        await self._reset_all()

    async def restore(self) -> None:
        self._flowing.set()
        if self._server is None:
            await self.start()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self._conns.add(writer)
        try:
            await self._flowing.wait()  # a black hole holds the connection here until it is reset
            async with asyncio.timeout(5):
                up_r, up_w = await asyncio.open_connection("127.0.0.1", self.target_port)
            self._conns.add(up_w)
            await asyncio.gather(self._pipe(reader, up_w), self._pipe(up_r, writer))
        except (OSError, TimeoutError, asyncio.CancelledError):
            pass
        finally:
            writer.transport.abort()
            self._conns.discard(writer)
            self._tasks.discard(task)

    @staticmethod
    async def _pipe(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        try:
            while data := await r.read(65536):  # ends when a side closes or is reset by cut()
                w.write(data)
                await w.drain()
        finally:
            w.transport.abort()


# ---- the shadow process ----------------------------------------------------------------------------------


@dataclass
class ShadowProc:
    tmp: Path
    relay_port: int
    cert: Path
    key: Path
    ca: Path
    cache: Path
    probe_period: str | None  # None: the default (10s)
    port: int = field(default_factory=free_port)
    health: int = field(default_factory=free_port)
    extra: tuple[str, ...] = ()
    proc: asyncio.subprocess.Process | None = None
    log: Path = field(init=False)

    def __post_init__(self) -> None:
        self.log = self.tmp / f"shadow-{self.port}.log"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        args = [
            "shadow",
            f"--node-name={NODE}",
            f"--server=https://127.0.0.1:{self.relay_port}",
            f"--server-ca-file={self.ca}",
            f"--node-cert-file={self.cert}",
            f"--node-key-file={self.key}",
            f"--cache-dir={self.cache}",
            f"--port={self.port}",
            "--secure-port=0",
            f"--health-port={self.health}",
        ]
        if self.probe_period is not None:
            args.append(f"--probe-period={self.probe_period}")
        args += self.extra
        with self.log.open("ab") as out:
            self.proc = await asyncio.create_subprocess_exec(
                str(BIN), *args, stdin=asyncio.subprocess.DEVNULL, stdout=out, stderr=out
            )

    def check(self) -> None:
        if self.proc is not None and self.proc.returncode is not None:
            raise Broken(f"shadow exited with {self.proc.returncode}:\n{tail(self.log)}")

    async def stop(self) -> None:
        if self.proc is None or self.proc.returncode is not None:
            return
        self.proc.terminate()
        try:
            async with asyncio.timeout(10):
                await self.proc.wait()
        except TimeoutError:
            self.proc.kill()
            async with asyncio.timeout(10):
                await self.proc.wait()

    async def metrics(
        self, http: aiohttp.ClientSession
    ) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
        async with asyncio.timeout(5), http.get(f"http://127.0.0.1:{self.health}/metrics") as r:
            return parse_metrics(await r.text())

    async def wait_ready(self, http: aiohttp.ClientSession, mode: str, limit: float = 60) -> float:
        """Seconds until /readyz answers 200 with `mode` ("online" / "offline") in its body."""
        t0 = time.perf_counter()
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline:
            self.check()
            try:
                async with asyncio.timeout(2), http.get(f"http://127.0.0.1:{self.health}/readyz") as r:
                    if r.status == 200 and mode in await r.text():
                        return time.perf_counter() - t0
            except (aiohttp.ClientError, TimeoutError):
                pass
            await asyncio.sleep(0.05)
        raise Broken(f"shadow not ready ({mode}) within {limit:.0f}s:\n{tail(self.log)}")


def tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)$")
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def parse_metrics(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    out: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
    for line in text.splitlines():
        m = _SAMPLE.match(line)
        if m:
            out[(m[1], frozenset(_LABEL.findall(m[2] or "")))] = float(m[3])
    return out


def served(m: dict[tuple[str, frozenset[tuple[str, str]]], float], verb: str, source: str) -> float:
    return sum(
        v
        for (name, labels), v in m.items()
        if name == "aggapi_shadow_requests_total"
        and ("verb", verb) in labels
        and ("served_from", source) in labels
        and ("component", "kubelet") in labels
    )


def gauge(m: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str) -> float:
    return m.get((name, frozenset()), float("nan"))


# ---- results ---------------------------------------------------------------------------------------------


@dataclass
class Row:
    what: str
    value: str
    baseline_what: str
    baseline: str
    ratio: str
    better: str


@dataclass
class Results:
    rows: list[Row] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)

    def add(self, what: str, v: float, unit: str, bwhat: str, b: float, better: str = "lower") -> None:
        self.rows.append(Row(what, fmt(v, unit), bwhat, fmt(b, unit), f"{v / b:.3g}" if b else "-", better))

    def note(self, text: str) -> None:
        print(f"  note: {text}")
        self.notes.append(text)


def fmt(v: float, unit: str) -> str:
    if unit == "ms":
        return f"{v:,.1f} ms" if v >= 10 else f"{v:,.2f} ms"
    if unit == "s":
        return f"{v:,.2f} s" if v >= 0.1 else f"{v * 1e3:,.1f} ms"
    if unit == "MiB":
        return f"{v:,.1f} MiB"
    return f"{v:,.3g} {unit}"


# ---- the benchmark ---------------------------------------------------------------------------------------


@dataclass
class Env:
    tmp: Path
    dc: Devcluster
    cert: Path
    key: Path
    args: argparse.Namespace
    res: Results
    relay: Relay = field(init=False)
    http: aiohttp.ClientSession = field(init=False)  # plain HTTP to the shadow and its health port
    direct: aiohttp.ClientSession = field(init=False)  # HTTPS with the node certificate
    admin: aiohttp.ClientSession = field(init=False)


def node_ssl(ca: Path, cert: Path, key: Path) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(ca))
    ctx.load_cert_chain(str(cert), str(key))
    return ctx


async def request(
    s: aiohttp.ClientSession,
    method: str,
    url: str,
    *,
    ua: str = KUBELET_UA,
    accept: str = JSON,
    body: dict[str, Any] | None = None,
    limit: float = 30,
) -> tuple[int, bytes]:
    headers = {"User-Agent": ua, "Accept": accept}
    data = None
    if body is not None:
        headers["Content-Type"] = JSON
        data = json.dumps(body)
    async with asyncio.timeout(limit), s.request(method, url, headers=headers, data=data) as r:
        return r.status, await r.read()


async def timed_get(s: aiohttp.ClientSession, url: str) -> float:
    t0 = time.perf_counter()
    code, body = await request(s, "GET", url)
    dt = time.perf_counter() - t0
    if code != 200:
        raise Broken(f"GET {url}: {code} {body[:300]!r}")
    return dt


async def interleaved(
    n: int, warmup: int, targets: dict[str, Callable[[], Awaitable[float]]]
) -> dict[str, list[float]]:
    """n rounds; each round times one request of every target, one after another."""
    out: dict[str, list[float]] = {k: [] for k in targets}
    for _ in range(warmup):
        for f in targets.values():
            await f()
    for _ in range(n):
        for k, f in targets.items():
            out[k].append(await f())
    return out


class Bench:
    def __init__(self, env: Env) -> None:
        self.env = env
        self.res = env.res
        self.args = env.args
        self.cache = env.tmp / "cache"
        self.dc_url = env.dc.url
        self.watch_tasks: list[asyncio.Task[None]] = []
        self.shadow: ShadowProc | None = None
        self.direct_online: dict[str, list[float]] = {}
        self.cached_total = 0.0

    def new_shadow(self, probe_period: str | None) -> ShadowProc:
        e = self.env
        return ShadowProc(
            e.tmp,
            e.relay.port,
            e.cert,
            e.key,
            e.dc.pki.ca,
            self.cache,
            probe_period,
            extra=tuple(self.args.shadow_arg),
        )

    async def run(self) -> None:
        e = self.env
        async with contextlib.AsyncExitStack() as stack:
            e.http = await stack.enter_async_context(aiohttp.ClientSession())
            e.direct = await stack.enter_async_context(
                aiohttp.ClientSession(
                    connector=aiohttp.TCPConnector(ssl=node_ssl(e.dc.pki.ca, e.cert, e.key))
                )
            )
            admin_ctx = node_ssl(e.dc.pki.ca, e.dc.pki.admin_cert, e.dc.pki.admin_key)
            e.admin = await stack.enter_async_context(
                aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=admin_ctx, limit=64))
            )
            e.relay = Relay(e.dc.port)
            await e.relay.start()
            stack.push_async_callback(e.relay.cut)
            try:
                await self.sections()
            finally:
                for t in self.watch_tasks:
                    t.cancel()
                await asyncio.gather(*self.watch_tasks, return_exceptions=True)
                if self.shadow is not None:
                    await self.shadow.stop()

    async def sections(self) -> None:
        e, res = self.env, self.res
        # -- 3a: idle RSS, beside bare interpreters started at the same time
        print("\n[3a] RSS idle")
        self.shadow = sh = self.new_shadow(None)
        bare = await start_bare("import aiohttp")
        shadow_mods = await start_bare("import edge.shadow.server")
        try:
            await sh.start()
            took = await sh.wait_ready(e.http, "online")
            print(f"  shadow pid {sh.pid} online after {took:.2f}s (cache empty)")
            await asyncio.sleep(2)
            idle = proc_status(sh.pid, "VmRSS") / 2**20
            bare_rss = proc_status(bare.pid, "VmRSS") / 2**20
            mods_rss = proc_status(shadow_mods.pid, "VmRSS") / 2**20
        finally:
            for p in (bare, shadow_mods):
                p.kill()
                async with asyncio.timeout(10):
                    await p.wait()
        print(f"  shadow idle {idle:.1f} MiB; bare python+aiohttp {bare_rss:.1f} MiB")
        res.add(
            "shadow RSS, idle (online, nothing cached)",
            idle,
            "MiB",
            "bare `python -c 'import aiohttp; sleep'`",
            bare_rss,
        )
        res.note(
            "RSS of a bare interpreter that only imported the shadow's modules "
            f"(`import edge.shadow.server`): {mods_rss:.1f} MiB"
        )

        # -- objects
        print(f"\n[setup] creating {self.args.objects} pods, Services and EndpointSlices in the devcluster")
        await self.create_objects()

        # -- 3b: caching through the shadow by kubelet-like and kube-proxy-like clients
        print("\n[3b] list+watch through the shadow, RSS with the objects cached")
        cpu0 = proc_cpu(sh.pid)
        await self.cache_objects(sh)
        loaded = proc_status(sh.pid, "VmRSS") / 2**20
        res.add(
            f"shadow RSS, {self.args.objects:,} pods + {self.args.objects:,} Services + "
            f"{self.args.objects:,} EndpointSlices cached, 3 watches open",
            loaded,
            "MiB",
            "bare `python -c 'import aiohttp; sleep'`",
            bare_rss,
        )
        n = 3 * self.args.objects
        res.note(
            f"RSS grew {loaded - idle:.1f} MiB from idle: {(loaded - idle) * 2**20 / n:,.0f} B per client "
            f"object ({n:,}), {(loaded - idle) * 2**20 / self.cached_total:,.0f} B per cached object "
            f"({self.cached_total:,.0f}, see the next note); shadow CPU for the initial lists and watches "
            f"{proc_cpu(sh.pid) - cpu0:.2f} s"
        )
        lo, hi = YURTHUB_IDLE_MB
        res.rows.append(
            Row(
                "shadow RSS, idle (vs a published figure)",
                fmt(idle, "MiB"),
                "YurtHub idle, published (reference only: another program, NOT measured in this run)",
                f"{lo:.0f}-{hi:.0f} MB",
                f"{idle * 2**20 / (hi * 1e6):.2f}-{idle * 2**20 / (lo * 1e6):.2f}",
                "lower",
            )
        )
        self.disk_footprint()
        for t in self.watch_tasks:
            t.cancel()
        await asyncio.gather(*self.watch_tasks, return_exceptions=True)
        self.watch_tasks.clear()

        # -- 1: online latency
        print(f"\n[1] online latency, {self.args.n} sequential requests per kind, interleaved")
        await self.online_latency(sh)

        # -- 4 (default period, cut) and 2 (offline cache hits)
        print("\n[4] link loss -> answers from cache, --probe-period default (10s), relay cut")
        await self.link_loss(sh, 10.0, "cut", "default 10s")
        print(f"\n[2] offline cache-hit latency, {self.args.n} sequential requests per kind")
        await self.offline_latency(sh)
        await sh.stop()

        # -- 4 again: 1 s probe period, and black-hole links
        runs: list[tuple[str | None, float, str]] = [("1s", 1.0, "cut")]
        if not self.args.no_blackhole:
            runs += [(None, 10.0, "blackhole"), ("1s", 1.0, "blackhole")]
        for period_flag, period, mode in runs:
            await e.relay.restore()
            self.shadow = sh = self.new_shadow(period_flag)
            await sh.start()
            took = await sh.wait_ready(e.http, "online")
            label = f"{period_flag or 'default 10s'}"
            res.note(
                f"shadow (--probe-period {label}) restarted on the cache of "
                f"{len(list(self.cache.rglob('*.json'))):,} files: online after {took:.2f}s (load + relist)"
            )
            await timed_get(e.http, sh.url + self.get_path)  # a client is talking to it: a pooled connection
            print(f"\n[4] link loss -> answers from cache, --probe-period {label}, relay {mode}")
            await self.link_loss(sh, period, mode, label)
            await sh.stop()

    # ---- setup ---------------------------------------------------------------------------------------

    @property
    def get_path(self) -> str:
        return f"/api/v1/namespaces/{NS_LIST}/pods/app-0007"

    @property
    def list_path(self) -> str:
        return f"/api/v1/namespaces/{NS_LIST}/pods"

    async def create_objects(self) -> None:
        e, n = self.env, self.args.objects
        for ns in (NS_LIST, NS_BULK):
            body = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}
            code, out = await request(
                e.admin, "POST", self.dc_url + "/api/v1/namespaces", ua=ADMIN_UA, body=body
            )
            if code != 201:
                raise Broken(f"create namespace {ns}: {code} {out[:300]!r}")
        kinds: list[tuple[str, Callable[[int], dict[str, Any]], Callable[[dict[str, Any]], str]]] = [
            ("pods", pod, lambda o: f"/api/v1/namespaces/{o['metadata']['namespace']}/pods"),
            ("services", service, lambda o: f"/api/v1/namespaces/{NS_BULK}/services"),
            (
                "endpointslices",
                endpointslice,
                lambda o: f"/apis/discovery.k8s.io/v1/namespaces/{NS_BULK}/endpointslices",
            ),
        ]
        for what, make, path in kinds:

            async def op(i: int, make: Callable[[int], dict[str, Any]] = make, path: Any = path) -> None:
                obj = make(i)
                code, out = await request(e.admin, "POST", self.dc_url + path(obj), ua=ADMIN_UA, body=obj)
                if code != 201:
                    raise Broken(f"create {obj['metadata']['name']}: {code} {out[:300]!r}")

            r = await run_pool(n, 32, op, 120)
            print(f"  {what}: {r.describe()}")

    async def cache_objects(self, sh: ShadowProc) -> None:
        e, n = self.env, self.args.objects
        clients = [
            # The kubelet's own list has fieldSelector=spec.nodeName=<node>; the devcluster only knows the
            # metadata.* field selectors, so this one is unselected (every pod here is on edge-1 anyway).
            (KUBELET_UA, JSON, "/api/v1/pods", ""),
            (KUBE_PROXY_UA, CLIENT_GO_ACCEPT, "/api/v1/services", f"labelSelector={quote(PROXY_SELECTOR)}"),
            (
                KUBE_PROXY_UA,
                CLIENT_GO_ACCEPT,
                "/apis/discovery.k8s.io/v1/endpointslices",
                f"labelSelector={quote(PROXY_SELECTOR)}",
            ),
        ]
        for ua, accept, path, sel in clients:
            items, rv, took = await self.paged_list(e.http, sh.url, ua, accept, path, sel)
            _, _, took_direct = await self.paged_list(e.direct, self.dc_url, ua, accept, path, sel)
            print(
                f"  {ua.split('/')[0]} LIST {path}?{sel or '(all)'}: {items} items, through the shadow "
                f"(recording) {took * 1e3:.0f} ms, direct {took_direct * 1e3:.0f} ms"
            )
            self.res.note(
                f"first {ua.split('/')[0]} LIST of {items:,} {path.rsplit('/', 1)[1]} (pages of 500) "
                f"through the shadow, recording them: {took * 1e3:.0f} ms; the same LIST direct: "
                f"{took_direct * 1e3:.0f} ms"
            )
            q = "&".join(
                x for x in (sel, "watch=true&allowWatchBookmarks=true", f"resourceVersion={rv}") if x
            )
            url = f"{sh.url}{path}?{q}"
            self.watch_tasks.append(asyncio.create_task(self.hold_watch(url, ua, accept)))
        deadline = time.monotonic() + 60
        while True:
            m = await sh.metrics(e.http)
            self.cached_total = gauge(m, "aggapi_shadow_cache_objects")
            per_dir = {d: self.object_files(d) for d in CLIENT_DIRS}
            if all(v >= n for v in per_dir.values()):
                break
            if time.monotonic() > deadline:
                raise Broken(f"the shadow cached {per_dir} object files, want {n} each")
            await asyncio.sleep(0.2)
        # The shadow's own topology feeder (servicetopology filter) lists Services through it as well: wait
        # until the cache stops growing (the same count 1 s apart).
        last = -1.0
        while self.cached_total != last and time.monotonic() < deadline:
            last = self.cached_total
            await asyncio.sleep(1)
            self.cached_total = gauge(await sh.metrics(e.http), "aggapi_shadow_cache_objects")
        every = {
            str(d.relative_to(self.cache)): self.object_files(d.relative_to(self.cache))
            for d in self.cache.glob("*/*")
            if d.is_dir() and not d.name.startswith("_")
        }
        print(
            f"  cache: {self.cached_total:.0f} objects (metric aggapi_shadow_cache_objects); files: {every}"
        )
        self.res.note(
            f"objects in the shadow's cache after the lists (`aggapi_shadow_cache_objects`): "
            f"{self.cached_total:,.0f}; object files per component/resource: {every}"
        )
        await asyncio.sleep(1)

    def object_files(self, rel: str | Path) -> int:
        return sum(1 for p in (self.cache / rel).rglob("*.json") if "_views" not in p.parts)

    async def paged_list(
        self, s: aiohttp.ClientSession, base: str, ua: str, accept: str, path: str, sel: str
    ) -> tuple[int, str, float]:
        items, cont, rv = 0, "", ""
        t0 = time.perf_counter()
        while True:
            url = f"{base}{path}?{sel}{'&' if sel else ''}limit=500" + (
                f"&continue={quote(cont)}" if cont else ""
            )
            code, body = await request(s, "GET", url, ua=ua, accept=accept)
            if code != 200:
                raise Broken(f"LIST {url}: {code} {body[:300]!r}")
            obj = json.loads(body)
            items += len(obj.get("items") or [])
            meta = obj.get("metadata") or {}
            rv = str(meta.get("resourceVersion", ""))
            cont = str(meta.get("continue") or "")
            if not cont:
                return items, rv, time.perf_counter() - t0

    async def hold_watch(self, url: str, ua: str, accept: str) -> None:
        """Read a watch until cancelled (or the stream ends, or 10 min)."""
        with contextlib.suppress(aiohttp.ClientError, TimeoutError):
            async with (
                asyncio.timeout(600),
                self.env.http.get(url, headers={"User-Agent": ua, "Accept": accept}) as r,
            ):
                async for _ in r.content.iter_any():
                    pass

    def disk_footprint(self) -> None:
        def du(flag: str, *paths: Path) -> int:
            out = subprocess.run(
                ["du", "-s", "-c", flag, *map(str, paths)],
                capture_output=True,
                text=True,
                timeout=30,
                check=False,  # a file replaced while du walks makes it exit 1; the total is still printed
            ).stdout
            return int(out.splitlines()[-1].split()[0])  # the "total" line

        used, apparent = du("-k", self.cache) * 1024, du("-b", self.cache)
        dirs = [self.cache / d for d in CLIENT_DIRS]
        c_used, c_apparent = du("-k", *dirs) * 1024, du("-b", *dirs)
        files = sum(1 for _ in self.cache.rglob("*") if _.is_file())
        fs = subprocess.run(
            ["stat", "-f", "-c", "%T", str(self.cache)],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        ).stdout.strip()
        n = 3 * self.args.objects
        print(
            f"  disk: {used / 2**20:.1f} MiB used (du -sk), {apparent / 2**20:.1f} MiB apparent, "
            f"{files} files"
        )
        self.res.note(
            f"disk footprint of the whole cache ({self.cached_total:,.0f} objects, {files:,} files with the "
            f"list views): {used / 2**20:.1f} MiB on disk (`du -sk`, {fs}), {apparent / 2**20:.2f} MiB "
            f"apparent (`du -sb`). The {n:,} client objects alone (kubelet pods, kube-proxy Services and "
            f"EndpointSlices, with their views): {c_used / 2**20:.1f} MiB on disk = {c_used / n:,.0f} B per "
            f"object, {c_apparent / 2**20:.2f} MiB apparent = {c_apparent / n:,.0f} B per object"
        )

    # ---- measurements --------------------------------------------------------------------------------

    async def online_latency(self, sh: ShadowProc) -> None:
        e, n = self.env, self.args.n
        relay = f"https://127.0.0.1:{e.relay.port}"
        m0 = await sh.metrics(e.http)
        cpu0 = proc_cpu(sh.pid)
        got: dict[str, list[float]] = {}
        for kind, path in (("GET pod", self.get_path), (f"LIST {LIST_PODS} pods", self.list_path)):
            lat = await interleaved(
                n,
                5,
                {
                    "shadow": functools.partial(timed_get, e.http, sh.url + path),
                    "direct": functools.partial(timed_get, e.direct, self.dc_url + path),
                    "relay": functools.partial(timed_get, e.direct, relay + path),
                },
            )
            for k, v in lat.items():
                got[f"{kind} {k}"] = v
            self.direct_online[kind] = lat["direct"]
            for q, qn in ((0.5, "p50"), (0.99, "p99")):
                self.res.add(
                    f"{kind} through the shadow, online, {qn}",
                    pct(lat["shadow"], q) * 1e3,
                    "ms",
                    "direct to the devcluster (same node cert)",
                    pct(lat["direct"], q) * 1e3,
                )
            print(
                f"  {kind}: shadow p50 {ms(lat['shadow'], 0.5)} p99 {ms(lat['shadow'], 0.99)}; "
                f"direct p50 {ms(lat['direct'], 0.5)} p99 {ms(lat['direct'], 0.99)}; "
                f"direct via relay p50 {ms(lat['relay'], 0.5)} p99 {ms(lat['relay'], 0.99)}"
            )
            self.res.note(
                f"{kind} direct through the relay (the shadow's upstream path, without the shadow): p50 "
                f"{pct(lat['relay'], 0.5) * 1e3:.2f} ms, p99 {pct(lat['relay'], 0.99) * 1e3:.2f} ms"
            )
        m1 = await sh.metrics(e.http)
        cpu = proc_cpu(sh.pid) - cpu0
        remote = served(m1, "get", "remote") + served(m1, "list", "remote")
        remote -= served(m0, "get", "remote") + served(m0, "list", "remote")
        reqs = 2 * (n + 5)
        self.res.note(
            f"online: {remote:.0f} of {reqs} kubelet requests through the shadow counted served_from=remote; "
            f"shadow CPU {cpu:.2f} s = {cpu / reqs * 1e3:.2f} ms per request (GETs and LISTs together; each "
            f"answer is also written to the disk cache; fsync per file unless --cache-fsync=false)"
        )

    async def offline_latency(self, sh: ShadowProc) -> None:
        e, n = self.env, self.args.n
        m0 = await sh.metrics(e.http)
        cpu0 = proc_cpu(sh.pid)
        for kind, path in (("GET pod", self.get_path), (f"LIST {LIST_PODS} pods", self.list_path)):
            lat = await interleaved(
                n,
                5,
                {
                    "shadow": functools.partial(timed_get, e.http, sh.url + path),
                    "direct": functools.partial(timed_get, e.direct, self.dc_url + path),
                },
            )
            for q, qn in ((0.5, "p50"), (0.99, "p99")):
                self.res.add(
                    f"{kind} from the shadow's cache, offline, {qn}",
                    pct(lat["shadow"], q) * 1e3,
                    "ms",
                    "direct to the devcluster (online), interleaved",
                    pct(lat["direct"], q) * 1e3,
                )
            d1 = self.direct_online[kind]
            print(
                f"  {kind}: shadow offline p50 {ms(lat['shadow'], 0.5)} p99 {ms(lat['shadow'], 0.99)}; "
                f"direct p50 {ms(lat['direct'], 0.5)} p99 {ms(lat['direct'], 0.99)} "
                f"(in section 1: p50 {ms(d1, 0.5)} p99 {ms(d1, 0.99)})"
            )
        m1 = await sh.metrics(e.http)
        cpu = proc_cpu(sh.pid) - cpu0
        cache = served(m1, "get", "cache") + served(m1, "list", "cache")
        cache -= served(m0, "get", "cache") + served(m0, "list", "cache")
        reqs = 2 * (n + 5)
        self.res.note(
            f"offline: {cache:.0f} of {reqs} requests counted served_from=cache; shadow CPU {cpu:.2f} s = "
            f"{cpu / reqs * 1e3:.2f} ms per request; RSS after {proc_status(sh.pid, 'VmRSS') / 2**20:.1f} MiB"
        )
        if cache < reqs:
            self.res.failures.append(
                f"offline: only {cache:.0f} of {reqs} requests were served from the cache"
            )

    async def link_loss(self, sh: ShadowProc, period: float, mode: str, label: str) -> None:
        e, relay = self.env, self.env.relay
        url = sh.url + self.get_path
        m = await sh.metrics(e.http)
        cache0 = served(m, "get", "cache")
        if gauge(m, "aggapi_shadow_cloud_healthy") != 1:
            raise Broken("the shadow is not online before the link loss")
        if mode == "cut":
            await relay.cut()
        else:
            await relay.blackhole()
        t0 = time.perf_counter()
        first: float | None = None
        declared: float | None = None
        polls = answers = timeouts = errors = 0
        baseline = period * UNHEALTHY_AFTER
        deadline = t0 + baseline + 2 * period + PROBE_TIMEOUT + 10
        nxt = t0
        while time.perf_counter() < deadline:
            sh.check()
            polls += 1
            try:
                code, _ = await request(e.http, "GET", url, limit=POLL_TIMEOUT)
                if code == 200:
                    answers += 1
                    if first is None:
                        first = time.perf_counter() - t0
                else:
                    errors += 1
            except TimeoutError:
                timeouts += 1
            except aiohttp.ClientError:
                errors += 1
            m = await sh.metrics(e.http)
            if declared is None and gauge(m, "aggapi_shadow_cloud_healthy") == 0:
                declared = time.perf_counter() - t0
            if first is not None and declared is not None:
                break
            nxt += POLL_EVERY
            await asyncio.sleep(max(0.0, nxt - time.perf_counter()))
        from_cache = served(m, "get", "cache") - cache0
        how = "cut (refused + reset)" if mode == "cut" else "black hole (accepted, never forwarded)"
        print(
            f"  first answer from cache after {fmt_s(first)}; declared unreachable after {fmt_s(declared)}; "
            f"{polls} polls: {answers} answered 200, {timeouts} timed out ({POLL_TIMEOUT:.0f}s), "
            f"{errors} errors; "
            f"served_from=cache counter +{from_cache:.0f}"
        )
        if first is None:
            self.res.failures.append(
                f"link loss ({label}, {mode}): no answer from the cache before the deadline"
            )
            return
        if from_cache < answers:
            self.res.failures.append(
                f"link loss ({label}, {mode}): {answers} answers but only {from_cache:.0f} counted from cache"
            )
        bwhat = f"probe period x unhealthy-after ({period:g}s x {UNHEALTHY_AFTER})"
        self.res.add(
            f"link {how} → first GET answered from cache, --probe-period {label}", first, "s", bwhat, baseline
        )
        if declared is not None:
            self.res.add(
                f"link {how} → shadow declares the cloud unreachable, --probe-period {label}",
                declared,
                "s",
                bwhat,
                baseline,
            )
        self.res.note(
            f"link {mode}, --probe-period {label}: {polls} polls every {POLL_EVERY * 1e3:.0f} ms "
            f"({POLL_TIMEOUT:.0f} s client timeout) until both were seen: {answers} answered 200 (the "
            f"served_from=cache counter rose by {from_cache:.0f}), {timeouts} timed out, "
            f"{errors} other errors"
        )


def ms(values: list[float], q: float) -> str:
    return f"{pct(values, q) * 1e3:.2f} ms"


def fmt_s(v: float | None) -> str:
    return "never (within the deadline)" if v is None else f"{v:.3f}s"


async def start_bare(imports: str) -> asyncio.subprocess.Process:
    """A bare interpreter that imported `imports` and sleeps (killed by the caller)."""
    p = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        f"{imports}; import sys, time; print('ready', flush=True); time.sleep(120)",
        stdout=asyncio.subprocess.PIPE,
        stdin=asyncio.subprocess.DEVNULL,
        cwd=ROOT,
    )
    assert p.stdout is not None
    async with asyncio.timeout(30):
        line = await p.stdout.readline()
    if line.strip() != b"ready":
        raise Broken(f"bare interpreter ({imports}) did not start: {line!r}")
    return p


# ---- report ----------------------------------------------------------------------------------------------


def report(res: Results, info: dict[str, str], args: argparse.Namespace, total: float) -> None:
    print("\n## Results\n")
    print(
        f"{info['date']} — aggapi {info['aggapi']} — {info['nproc']} CPUs ({info['cpu']}), {info['memory']}, "
        f"{info['kernel']}, Python {info['python']}, aiohttp {info['aiohttp']}, {info['etcd']}"
    )
    print(
        f"sizes: {args.n} sequential requests per latency figure, {args.objects:,} each of pods, Services, "
        f"EndpointSlices; extra shadow flags: {' '.join(args.shadow_arg) or 'none'}; load average at start "
        f"{info['loadavg']}\n"
    )
    print("| # | measurement | shadow | baseline | baseline value | ratio shadow/baseline | better |")
    print("|---|---|---:|---|---:|---:|---|")
    for i, r in enumerate(res.rows, 1):
        print(f"| {i} | {r.what} | {r.value} | {r.baseline_what} | {r.baseline} | {r.ratio} | {r.better} |")
    if res.notes:
        print("\nNotes:")
        for n in res.notes:
            print(f"- {n}")
    print(
        f"\nload average at end {' '.join(Path('/proc/loadavg').read_text().split()[:3])}; total {total:.0f}s"
    )
    if res.failures:
        print("\nBROKEN:")
        for f in res.failures:
            print(f"- {f}")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--n", type=int, default=200, help="sequential requests per latency figure (200)")
    p.add_argument("--objects", type=int, default=1000, help="pods, Services and EndpointSlices each (1000)")
    p.add_argument("--no-blackhole", action="store_true", help="skip the black-hole link-loss runs")
    p.add_argument(
        "--shadow-arg",
        action="append",
        default=[],
        help="one more flag for every `aggapi-edge shadow` (repeatable): --shadow-arg=--cache-fsync=false",
    )
    p.add_argument("--keep", action="store_true", help="keep the temp dir (cache, logs)")
    p.add_argument("-v", "--verbose", action="store_true")
    args = p.parse_args(argv)
    if args.objects < LIST_PODS:
        p.error(f"--objects must be at least {LIST_PODS}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    info = machine()
    for k, v in info.items():
        print(f"{k:>8}: {v}")
    res = Results()
    tmp = Path(tempfile.mkdtemp(prefix="aggapi-bench-shadow-"))
    etcd: EtcdServer | None = None
    dc: Devcluster | None = None
    started = time.monotonic()
    try:
        etcd = start_etcd(tmp / "etcd")
        dc = Devcluster(tmp / "dc", etcd.client_url, "", POLICY)
        dc.start()
        dc.admin().apply("/api/v1/nodes", node_object(NodeIdentity(NODE, "127.0.1.9")))
        cert, key = issue_user(dc.pki, f"system:node:{NODE}", ["system:nodes"], tmp)
        print(f"etcd {etcd.client_url}, devcluster {dc.url} (prefix {dc.prefix}), work dir {tmp}")
        asyncio.run(Bench(Env(tmp, dc, cert, key, args, res)).run())
    except (
        Broken,
        RuntimeError,
        OSError,
        TimeoutError,
        aiohttp.ClientError,
        subprocess.SubprocessError,
    ) as exc:
        res.failures.append(f"{type(exc).__name__}: {exc}")
        if args.verbose:
            traceback.print_exc()
    finally:
        if dc is not None:
            dc.stop()
        if etcd is not None:
            etcd.stop()
    report(res, info, args, time.monotonic() - started)
    if args.keep or res.failures:
        print(f"work dir kept: {tmp}")
    else:
        shutil.rmtree(tmp, ignore_errors=True)
    return 1 if res.failures else 0


if __name__ == "__main__":
    sys.exit(main())
