"""`make bench`: the edge tunnel measured against direct loopback TCP, in one run, on this machine.

Processes: a target (the "kubelet"), one tunnel agent (`aggapi-edge tunnel-agent`), a tunnel server with
its HTTP CONNECT egress on a unix socket (what kube-apiserver uses), and this load generator. The tunnel
path is client → CONNECT (UDS) → server → gRPC/mTLS → agent → target; the baseline is client → target.

  1. bulk 256 MiB each way: MB/s through the tunnel vs direct (ratio);
  2. small request round trip (one line each way on an open connection) p50/p99, and connection setup
     (connect + first answer) p50/p99, tunnel vs direct;
  3. 100 parallel downloads, one of them stalled (never read): aggregate MB/s of the other 99 vs the
     same 99 with no stall;
  4. 1,000 connected agents: server RSS per agent and the server's CPU while idle.

Nothing asserts on timing; the exit status is non-zero only if something broke. `--record` (default
docs/benchmarks.md) rewrites only that file's "## Tunnel" section.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from datetime import datetime
from pathlib import Path

import grpc

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests" / "tunnel"))  # bench and tests run the same helpers

from tunnelkit import StaticNodes, make_pki, target_server  # noqa: E402

from aggapi.machinery.aio import within  # noqa: E402
from aggapi.tunnel import EgressConfig, EgressServer, TunnelServer, TunnelServerConfig  # noqa: E402
from edge.tunnel.agent import TunnelAgent  # noqa: E402
from edge.tunnel.config import AgentConfig  # noqa: E402

MiB = 1 << 20
Conn = tuple[asyncio.StreamReader, asyncio.StreamWriter]
T = 120.0  # bound on any single network wait


def addr(i: int) -> str:
    """Node i's own loopback address (127.1.x.y), as edge nodes get 127.0.1.N in tests."""
    return f"127.1.{i // 250}.{i % 250 + 1}"


class BenchNodes(StaticNodes):
    def __init__(self) -> None:
        super().__init__({})

    async def addresses(self, node: str) -> set[str] | None:
        m = re.fullmatch(r"bench-(\d+)", node)
        return {addr(int(m.group(1)))} if m else None


# --- child process roles (this file runs itself with --role) -------------------------------------------


async def role_server(a: argparse.Namespace) -> None:
    d = Path(a.pki)
    cfg = TunnelServerConfig(
        cert_file=d / "server.crt",
        key_file=d / "server.key",
        agent_ca_file=d / "agent-ca.crt",
        port=a.agent_port,
        allowed_ports=frozenset({a.target_port}),
    )
    server = TunnelServer(cfg, BenchNodes())
    async with asyncio.TaskGroup() as tg:
        tg.create_task(server.run(), name="bench-tunnel-server")
        if a.uds:
            egress = EgressServer(EgressConfig(uds_path=Path(a.uds)), server)
            tg.create_task(egress.run(), name="bench-egress")
        await server.wait_started()
        status = Path(a.status)
        while True:  # the parent reads the number of connected agents from here
            await asyncio.to_thread(status.write_text, json.dumps({"agents": len(server.agents())}))
            await asyncio.sleep(0.25)


async def role_target(a: argparse.Namespace) -> None:
    async with target_server(a.host, a.target_port):
        await asyncio.Event().wait()


async def role_agents(a: argparse.Namespace) -> None:
    d = Path(a.pki)
    async with asyncio.TaskGroup() as tg:
        for i in range(a.first, a.first + a.count):
            cfg = AgentConfig(
                node_name=f"bench-{i}",
                servers=(f"127.0.0.1:{a.agent_port}",),
                cert_file=d / f"node-bench-{i}.crt",
                key_file=d / f"node-bench-{i}.key",
                ca_file=d / "server-ca.crt",
                addresses=(addr(i),),
            )
            tg.create_task(TunnelAgent(cfg).run(), name=f"bench-agent-{i}")


# --- the parent --------------------------------------------------------------------------------------


class Procs:
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, name: str, *args: str) -> subprocess.Popen[bytes]:
        with (self.tmp / f"{name}.log").open("wb") as log:
            p = subprocess.Popen([sys.executable, *args], cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
        self.procs[name] = p
        return p

    def role(self, name: str, role: str, *args: str) -> subprocess.Popen[bytes]:
        return self.start(name, str(Path(__file__).resolve()), "--role", role, *args)

    def pid(self, name: str) -> int:
        return self.procs[name].pid

    def stop(self, name: str) -> None:
        p = self.procs.pop(name, None)
        if p is None:
            return
        if p.poll() is None:
            p.terminate()
        try:
            p.wait(timeout=15)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(timeout=15)

    def stop_all(self) -> None:
        for name in list(self.procs):
            self.stop(name)


def proc_cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def proc_rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


async def poll(pred: Callable[[], bool], what: str, timeout: float = 60) -> float:
    start = time.monotonic()
    while not pred():
        if time.monotonic() - start > timeout:
            raise TimeoutError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)
    return time.monotonic() - start


def agents_connected(status: Path) -> int:
    try:
        return int(json.loads(status.read_text())["agents"])
    except (OSError, ValueError, KeyError):
        return 0


def port_open(path: Path) -> bool:
    return path.exists()


# --- measurements ------------------------------------------------------------------------------------


class Paths:
    """Open a connection to the target directly, or through the tunnel (CONNECT over the egress UDS)."""

    def __init__(self, uds: Path, host: str, port: int) -> None:
        self.uds, self.host, self.port = uds, host, port

    async def direct(self) -> Conn:
        return await within(asyncio.open_connection(self.host, self.port, limit=4 * MiB), T)

    async def tunnel(self) -> Conn:
        r, w = await within(asyncio.open_unix_connection(str(self.uds), limit=4 * MiB), T)
        w.write(f"CONNECT {self.host}:{self.port} HTTP/1.1\r\n\r\n".encode())
        head = await within(r.readuntil(b"\r\n\r\n"), T)
        if not head.startswith(b"HTTP/1.1 200"):
            raise RuntimeError(f"CONNECT failed: {head!r} {await r.read(500)!r}")
        return r, w


Opener = Callable[[], Awaitable[Conn]]


async def upload(open_: Opener, size: int) -> float:
    r, w = await open_()
    block, h = os.urandom(MiB), hashlib.sha256()
    start = time.perf_counter()
    w.write(f"SINK {size}\n".encode())
    for _ in range(size // MiB):
        w.write(block)
        h.update(block)
        await within(w.drain(), T)
    answer = await within(r.readline(), T)
    elapsed = time.perf_counter() - start
    w.close()
    if answer.strip().decode() != h.hexdigest():
        raise RuntimeError("upload: the target got different bytes")
    return size / elapsed / 1e6


async def download(open_: Opener, size: int) -> float:
    r, w = await open_()
    start = time.perf_counter()
    w.write(f"SEND {size}\n".encode())
    got = 0
    while got < size:
        data = await within(r.read(MiB), T)
        if not data:
            raise RuntimeError(f"download: EOF after {got} of {size} bytes")
        got += len(data)
    elapsed = time.perf_counter() - start
    w.close()
    return size / elapsed / 1e6


async def round_trips(open_: Opener, n: int) -> list[float]:
    r, w = await open_()
    w.write(b"PING\n")
    await within(r.readline(), T)
    out = []
    for _ in range(n):
        start = time.perf_counter()
        w.write(b"PING\n")
        if await within(r.readline(), T) != b"ok\n":
            raise RuntimeError("bad PING answer")
        out.append(time.perf_counter() - start)
    w.close()
    return out


async def setups(open_: Opener, n: int) -> list[float]:
    out = []
    for _ in range(n):
        start = time.perf_counter()
        r, w = await open_()
        w.write(b"PING\n")
        await within(r.readline(), T)
        out.append(time.perf_counter() - start)
        w.close()
    return out


async def parallel(open_: Opener, n: int, each: int, stall: bool) -> float:
    conns = [await open_() for _ in range(n)]
    stalled: Conn | None = None
    if stall:
        stalled = await open_()
        stalled[1].write(b"FIRE\n")  # and never read it
        await asyncio.sleep(1.0)  # let it fill every buffer on its way
    start = time.perf_counter()

    async def one(c: Conn) -> None:
        r, w = c
        w.write(f"SEND {each}\n".encode())
        got = 0
        while got < each:
            data = await within(r.read(MiB), T)
            if not data:
                raise RuntimeError("parallel: early EOF")
            got += len(data)

    await asyncio.gather(*(one(c) for c in conns))
    elapsed = time.perf_counter() - start
    for _, w in conns + ([stalled] if stalled else []):
        w.close()
    return n * each / elapsed / 1e6


def pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(p / 100 * len(xs)))]


class Report:
    def __init__(self) -> None:
        self.rows: list[tuple[str, str, str, str]] = []

    def add(self, what: str, tunnel: float, base: float | None, unit: str, fmt: str = "{:.1f}") -> None:
        b = fmt.format(base) + f" {unit}" if base is not None else "—"
        ratio = f"{tunnel / base:.2f}x" if base else "—"
        self.rows.append((what, fmt.format(tunnel) + f" {unit}", b, ratio))
        print(f"  {what:<48} {self.rows[-1][1]:>16} {b:>16} {ratio:>8}", flush=True)

    def table(self) -> str:
        lines = ["| measurement | tunnel | baseline | tunnel / baseline |", "|---|---|---|---|"]
        lines += [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in self.rows]
        return "\n".join(lines)


async def run(a: argparse.Namespace, tmp: Path, procs: Procs, rep: Report) -> dict[str, float]:
    extra: dict[str, float] = {}
    pki = make_pki(tmp / "pki")
    for i in range(a.agents + 1):
        pki.node_cert(f"bench-{i}")
    host, target_port, agent_port = addr(0), _free_port(addr(0)), _free_port()
    uds, status = tmp / "egress.sock", tmp / "status.json"
    common = ["--pki", str(pki.dir), "--agent-port", str(agent_port), "--target-port", str(target_port)]
    procs.role("target", "target", "--host", host, *common)
    procs.role("server", "server", "--uds", str(uds), "--status", str(status), *common)
    await poll(uds.exists, "egress socket")
    d = pki.dir
    procs.start(
        "agent", "-m", "edge", "tunnel-agent", "--server", f"127.0.0.1:{agent_port}",
        "--node-name", "bench-0",
        "--cert", str(d / "node-bench-0.crt"), "--key", str(d / "node-bench-0.key"),
        "--ca", str(d / "server-ca.crt"), "--address", host, "--allow", f"{host}:{target_port}",
    )  # fmt: skip
    await poll(lambda: agents_connected(status) >= 1, "the data-plane agent")
    paths = Paths(uds, host, target_port)
    size = a.bulk_mib * MiB
    await asyncio.sleep(1.0)
    extra["agent_rss_idle_mib"] = proc_rss(procs.pid("agent")) / MiB
    print(f"\ndata-plane agent RSS, connected and idle: {extra['agent_rss_idle_mib']:.1f} MiB")

    print(f"\n1. bulk {a.bulk_mib} MiB          {'':<28} {'tunnel':>16} {'direct':>16} {'ratio':>8}")
    await download(paths.tunnel, 8 * MiB)  # warm-up
    rep.add(f"upload {a.bulk_mib} MiB (client → node)", await upload(paths.tunnel, size),
            await upload(paths.direct, size), "MB/s")  # fmt: skip
    rep.add(f"download {a.bulk_mib} MiB (node → client)", await download(paths.tunnel, size),
            await download(paths.direct, size), "MB/s")  # fmt: skip
    print(f"  agent RSS now {proc_rss(procs.pid('agent')) / MiB:.1f} MiB")

    print("\n2. small requests")
    rt_t, rt_d = await round_trips(paths.tunnel, a.rtts), await round_trips(paths.direct, a.rtts)
    su_t, su_d = await setups(paths.tunnel, a.setups), await setups(paths.direct, a.setups)
    for name, t, b in (("round trip", rt_t, rt_d), ("connect + first answer", su_t, su_d)):
        for p in (50, 99):
            rep.add(f"{name} p{p}", pct(t, p) * 1e6, pct(b, p) * 1e6, "µs", "{:.0f}")

    print("\n3. 100 parallel connections, one stalled")
    each = a.parallel_mib * MiB
    # Interleaved rounds, best of each: the first round also pays for warming up.
    free, stalled = [], []
    for _ in range(a.rounds):
        free.append(await parallel(paths.tunnel, 99, each, stall=False))
        stalled.append(await parallel(paths.tunnel, 99, each, stall=True))
    rep.add(f"99 x {a.parallel_mib} MiB downloads, one stalled (vs none)", max(stalled), max(free), "MB/s")
    direct = max([await parallel(paths.direct, 99, each, stall=False) for _ in range(a.rounds)])
    rep.add("99 downloads, no stall: tunnel (vs direct TCP)", max(free), direct, "MB/s")
    extra["agent_rss_mib"] = proc_rss(procs.pid("agent")) / MiB
    print(f"  data-plane agent RSS after all that: {extra['agent_rss_mib']:.1f} MiB")
    procs.stop("agent")
    procs.stop("server")

    print(f"\n4. {a.agents} connected agents")
    status2 = tmp / "status2.json"
    agent_port2 = _free_port()
    common2 = ["--pki", str(pki.dir), "--agent-port", str(agent_port2), "--target-port", str(target_port)]
    procs.role("server2", "server", "--status", str(status2), *common2)
    await poll(status2.exists, "server 2")
    await asyncio.sleep(1.0)
    rss0 = proc_rss(procs.pid("server2"))
    per_proc = 250
    start = time.monotonic()
    for first in range(1, a.agents + 1, per_proc):
        count = min(per_proc, a.agents + 1 - first)
        procs.role(f"agents-{first}", "agents", "--first", str(first), "--count", str(count), *common2)
    await poll(lambda: agents_connected(status2) >= a.agents, f"{a.agents} agents", timeout=300)
    extra["connect_all_s"] = time.monotonic() - start
    await asyncio.sleep(3.0)
    rss1 = proc_rss(procs.pid("server2"))
    cpu0, t0 = proc_cpu(procs.pid("server2")), time.monotonic()
    await asyncio.sleep(a.idle_seconds)
    cpu = (proc_cpu(procs.pid("server2")) - cpu0) / (time.monotonic() - t0)
    extra.update(server_rss0_mib=rss0 / MiB, server_rss_mib=rss1 / MiB, idle_cpu=cpu)
    rep.add(
        f"server RSS per agent ({a.agents} agents)", (rss1 - rss0) / a.agents / 1024, None, "KiB", "{:.0f}"
    )
    rep.add(f"server CPU idle with {a.agents} agents", cpu * 100, None, "% of a core", "{:.2f}")
    print(f"  server RSS {rss0 / MiB:.0f} MiB idle → {rss1 / MiB:.0f} MiB with {a.agents} agents; "
          f"all connected in {extra['connect_all_s']:.1f}s")  # fmt: skip
    return extra


def _free_port(host: str = "127.0.0.1") -> int:
    import socket

    with socket.socket() as s:
        s.bind((host, 0))
        port: int = s.getsockname()[1]
        return port


def machine() -> dict[str, str]:
    cpuinfo = Path("/proc/cpuinfo").read_text()
    model = next(
        (ln.split(":", 1)[1].strip() for ln in cpuinfo.splitlines() if ln.startswith("model name")), "?"
    )
    return {
        "date": datetime.now().astimezone().strftime("%Y-%m-%d %H:%M:%S %Z"),
        "cpu": f"{model} x {len(os.sched_getaffinity(0))}",
        "kernel": f"{platform.system()} {platform.release()} {platform.machine()}",
        "python": sys.version.split()[0],
        "grpcio": grpc.__version__,
        "loadavg": " ".join(Path("/proc/loadavg").read_text().split()[:3]),
    }


def record(
    path: Path, info: dict[str, str], rep: Report, extra: dict[str, float], a: argparse.Namespace
) -> None:
    """Replace the "## Tunnel" section of `path` (or append it); other sections stay as they are."""
    section = "\n".join(
        [
            "## Tunnel",
            "",
            f"`python bench/tunnel.py` — {info['date']}; {info['cpu']}; {info['kernel']}; "
            f"Python {info['python']}, grpcio {info['grpcio']}; load average before: {info['loadavg']}.",
            "Tunnel path: client → HTTP CONNECT over the egress unix socket → tunnel server → gRPC/mTLS → "
            "agent process → target; baseline: client → target over loopback TCP. All processes share the "
            "machine.",
            "",
            rep.table(),
            "",
            f"Data-plane agent RSS: {extra.get('agent_rss_idle_mib', 0):.1f} MiB connected and idle, "
            f"{extra.get('agent_rss_mib', 0):.1f} MiB after sections 1-3 (peak, Python keeps freed memory). "
            f"{a.agents} agents connected in {extra.get('connect_all_s', 0):.1f} s; server RSS "
            f"{extra.get('server_rss0_mib', 0):.0f} MiB with none, "
            f"{extra.get('server_rss_mib', 0):.0f} MiB with all; "
            f"idle CPU measured over {a.idle_seconds:g} s (ping interval 15 s, HTTP/2 keepalive 20 s).",
            "",
        ]
    )
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    pattern = re.compile(r"^## Tunnel\n.*?(?=^## |\Z)", re.S | re.M)
    text = (
        pattern.sub(lambda _: section + "\n", text)
        if pattern.search(text)
        else text.rstrip("\n") + "\n\n" + section
    )
    path.write_text(text)
    print(f"\nrecorded in {path}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bulk-mib", type=int, default=256)
    p.add_argument("--rtts", type=int, default=2000)
    p.add_argument("--setups", type=int, default=300)
    p.add_argument("--parallel-mib", type=int, default=2, help="per connection in section 3")
    p.add_argument("--rounds", type=int, default=3, help="of section 3, interleaved")
    p.add_argument("--agents", type=int, default=1000)
    p.add_argument("--idle-seconds", type=float, default=15.0)
    p.add_argument("--record", type=Path, default=REPO / "docs" / "benchmarks.md")
    p.add_argument("--no-record", action="store_true")
    p.add_argument("--keep", action="store_true", help="keep the work dir (logs)")
    # internal: child processes
    p.add_argument("--role", choices=["server", "target", "agents"], help=argparse.SUPPRESS)
    for flag in ("--pki", "--uds", "--status", "--host"):
        p.add_argument(flag, default="", help=argparse.SUPPRESS)
    for flag in ("--agent-port", "--target-port", "--first", "--count"):
        p.add_argument(flag, type=int, default=0, help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.role:
        role = {"server": role_server, "target": role_target, "agents": role_agents}[a.role]
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(role(a))
        return 0

    import resource

    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    info = machine()
    for k, v in info.items():
        print(f"{k:>8}: {v}")
    tmp = Path(tempfile.mkdtemp(prefix="aggapi-bench-tunnel-"))
    procs, rep = Procs(tmp), Report()
    failed = False
    try:
        extra = asyncio.run(run(a, tmp, procs, rep))
    except (RuntimeError, OSError, TimeoutError) as e:
        print(f"\nFAILED: {type(e).__name__}: {e}")
        failed, extra = True, {}
    finally:
        procs.stop_all()
    if not failed and not a.no_record:
        record(a.record, info, rep, extra, a)
    if a.keep or failed:
        print(f"work dir kept: {tmp}")
    else:
        shutil.rmtree(tmp, ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
