"""`make bench`: aggapi's NodePool API measured against raw etcd, on the same etcd, in one run.

Every figure is printed next to a baseline measured in the same run on the same machine (DESIGN §6) and
the ratio aggapi / baseline. Nothing here asserts on timing: the exit status is non-zero only when
something broke (an error answer, a timeout, a watcher that missed or reordered events, a leaked watch).

Sections (default sizes; `--scale` multiplies the counts):
  1. creates/s at 64 concurrent clients (aiohttp over HTTPS, admin client cert, pooled connections)
     vs etcd txn (create_revision == 0 → put, else get) of a same-shaped JSON value via EtcdClient;
  2. GETs/s at 64 concurrency: resourceVersion=0 (watch cache) and "" (consistent: read from etcd)
     vs a linearizable etcd range of the same keys;
  3. LIST latency of 10,000 NodePools (JSON and Table, from the cache and consistent), median of a few
     runs, vs an etcd range of the whole prefix at one revision (and that range + json-decoding it);
  4. watch fan-out: 1,000 watchers, 100 sequential updates (each waits until every watcher has it),
     then 100 back-to-back updates; delivery latency vs one raw etcd watch seeing the same kind of puts;
  5. aggapi RSS with 10,000 objects cached vs the same process idle with 0 objects.

All processes (etcd, aggapi, this load generator) share the machine; the CPU seconds each one used in
every section are printed too, so a ratio can be read against who was busy.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import random
import re
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import grpc

# The real-etcd and `aggapi serve` helpers live with the tests (tests/support); import them from there
# rather than moving them: bench and tests must run the same thing.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from support.aggapi import NP, AggapiServer, client_ssl, nodepool
from support.etcd import ETCD_BIN, EtcdServer, start_etcd

from aggapi.devlab import LabPKI, make_pki
from aggapi.machinery.aio import within
from aggapi.storage.etcd import Compare, EtcdClient, EtcdConfig, OpGet, OpPut, prefix_end

JSON_CT = {"Content-Type": "application/json"}
TABLE_ACCEPT = {"Accept": "application/json;as=Table;v=v1;g=meta.k8s.io"}
MERGE_PATCH = {"Content-Type": "application/merge-patch+json"}
RAW_PREFIX = "/bench-raw/nodepools/"  # the etcd baseline's own keys, apart from aggapi's prefix
REQUEST_TIMEOUT = aiohttp.ClientTimeout(total=60)


class Broken(Exception):
    """Something did not work (as opposed to: was slow)."""


# ---- sizes and options ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Sizes:
    creates: int
    gets: int
    objects: int
    watchers: int
    updates: int
    concurrency: int
    list_runs: int


def sizes_from(args: argparse.Namespace) -> Sizes:
    s = args.scale
    creates = max(1, round(3000 * s))
    return Sizes(
        creates=creates,
        gets=max(1, round(5000 * s)),
        objects=max(creates, round(10_000 * s)),
        watchers=max(1, round(1000 * s)),
        updates=args.updates,
        concurrency=args.concurrency,
        list_runs=args.list_runs,
    )


def pool_name(i: int) -> str:
    return f"np-{i:06d}"


def pool_spec(i: int) -> dict[str, Any]:
    """A plausible NodePool spec (~0.5 KB stored): labels, an annotation and a taint."""
    return {
        "type": "Edge",
        "hostNetwork": False,
        "interConnectivity": True,
        "labels": {"bench.aggapi.io/pool": pool_name(i), "topology.kubernetes.io/zone": f"zone-{i % 8}"},
        "annotations": {"bench.aggapi.io/owner": "make-bench"},
        "taints": [{"key": "bench.aggapi.io/edge", "value": "true", "effect": "NoSchedule"}],
    }


def stored_value(i: int) -> bytes:
    """What aggapi stores for pool i (same fields, same compact JSON), for the raw etcd baseline."""
    obj = nodepool(pool_name(i), **pool_spec(i))
    obj["metadata"].update(
        uid=str(uuid.uuid4()),
        creationTimestamp=datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        generation=1,
    )
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()


# ---- measurement helpers ---------------------------------------------------------------------------------


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(q * (len(s) - 1))))]


@dataclass
class Run:
    done: int
    elapsed: float
    latencies: list[float]

    @property
    def rate(self) -> float:
        return self.done / self.elapsed if self.elapsed > 0 else float("nan")

    def describe(self) -> str:
        lat = self.latencies
        return (
            f"{self.done} ops in {self.elapsed:.2f}s = {self.rate:,.0f}/s "
            f"(latency p50 {pct(lat, 0.5) * 1e3:.1f} ms, p99 {pct(lat, 0.99) * 1e3:.1f} ms)"
        )


async def run_pool(n: int, concurrency: int, op: Callable[[int], Awaitable[None]], budget: float) -> Run:
    """op(0..n-1) by `concurrency` workers sharing one counter; the first error stops the run."""
    todo: Iterator[int] = iter(range(n))
    latencies: list[float] = []
    deadline = time.monotonic() + budget

    async def worker() -> None:
        for i in todo:  # bounded by n, and by the deadline below
            if time.monotonic() > deadline:
                raise Broken(f"pool did not finish {n} ops within {budget:.0f}s")
            t0 = time.perf_counter()
            await op(i)
            latencies.append(time.perf_counter() - t0)

    started = time.perf_counter()
    async with asyncio.timeout(budget + 30):
        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return Run(len(latencies), time.perf_counter() - started, latencies)


@dataclass
class CpuSnap:
    aggapi: float
    etcd: float
    bench: float
    machine: float  # busy CPU seconds of the whole machine (all cores), from /proc/stat

    @property
    def others(self) -> float:
        """CPU seconds used by everything else on the machine (other jobs, py-spy): noise to know about."""
        return max(0.0, self.machine - self.aggapi - self.etcd - self.bench)


def machine_busy() -> float:
    fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def proc_cpu(pid: int) -> float:
    """utime + stime of a process, in seconds."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def proc_status(pid: int, key: str) -> int:
    """A /proc/<pid>/status field in bytes (VmRSS, VmHWM)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
    raise Broken(f"no {key} in /proc/{pid}/status")


class Profiler:
    """Optional: py-spy records aggapi during each section (raw collapsed stacks, one file per section)."""

    def __init__(self, py_spy: str | None, out_dir: Path | None, pid: int) -> None:
        self.py_spy, self.out_dir, self.pid = py_spy, out_dir, pid
        self.proc: subprocess.Popen[bytes] | None = None
        self.files: dict[str, Path] = {}

    def start(self, section: str) -> None:
        if not self.py_spy or self.out_dir is None:
            return
        out = self.out_dir / f"{section}.txt"
        self.files[section] = out
        self.proc = subprocess.Popen(
            [
                *(self.py_spy, "record", "--pid", str(self.pid), "--format", "raw", "--rate", "200"),
                *("--nonblocking", "--output", str(out)),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def stop(self) -> None:
        if self.proc is None:
            return
        proc, self.proc = self.proc, None
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def top_frames(path: Path, n: int = 12) -> list[tuple[str, float, float]]:
    """(frame, self %, inclusive %) of a py-spy raw profile, the n highest by self time."""
    own: Counter[str] = Counter()
    incl: Counter[str] = Counter()
    total = 0
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        c = int(count)
        frames = [re.sub(r":\d+\)$", ")", f) for f in stack.split(";")]  # per function, not per line
        total += c
        own[frames[-1]] += c
        for f in set(frames):
            incl[f] += c
    if not total:
        return []
    return [(f, 100 * c / total, 100 * incl[f] / total) for f, c in own.most_common(n)]


# ---- results ----------------------------------------------------------------------------------------------


@dataclass
class Row:
    what: str
    value: float
    unit: str
    baseline_what: str
    baseline: float
    better: str  # "higher" or "lower": which way the ratio should go

    @property
    def ratio(self) -> float:
        return self.value / self.baseline if self.baseline else float("nan")


@dataclass
class Results:
    rows: list[Row] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    # section, ops, CPU seconds used, aggapi RSS (bytes) at the end of the section
    cpu: list[tuple[str, int, CpuSnap, int]] = field(default_factory=list)
    raw: dict[str, Any] = field(default_factory=dict)

    def add(self, *args: Any) -> None:
        row = Row(*args)
        self.rows.append(row)
        print(
            f"  => {row.what}: {fmt(row.value, row.unit)}; baseline {row.baseline_what}: "
            f"{fmt(row.baseline, row.unit)}; ratio {row.ratio:.3f}",
            flush=True,
        )

    def note(self, text: str) -> None:
        self.notes.append(text)
        print(f"  -- {text}", flush=True)

    def fail(self, text: str) -> None:
        self.failures.append(text)
        print(f"  !! BROKEN: {text}", flush=True)


def fmt(v: float, unit: str) -> str:
    if unit == "/s":
        return f"{v:,.0f} /s"
    if unit == "ms":
        return f"{v:,.1f} ms" if v >= 10 else f"{v:,.2f} ms"
    if unit == "MiB":
        return f"{v:,.1f} MiB"
    return f"{v:,.3g} {unit}"


# ---- the benchmark ---------------------------------------------------------------------------------------


class Bench:
    def __init__(
        self, args: argparse.Namespace, etcd: EtcdServer, server: AggapiServer, pki: LabPKI, res: Results
    ) -> None:
        self.args = args
        self.sizes = sizes_from(args)
        self.etcd = etcd
        self.server = server
        self.pki = pki
        self.res = res
        self.budget = float(args.section_timeout)
        assert server.proc is not None and etcd.proc is not None
        self.agg_pid, self.etcd_pid = server.proc.pid, etcd.proc.pid
        self.base = server.url + NP
        self.agg_keys = f"{server.prefix.rstrip('/')}/edge.aggapi.io/nodepools/"
        self.profiler = Profiler(args.py_spy, args.profile_dir, self.agg_pid)
        self.created = 0  # pools np-000000 .. created-1 exist
        self.list_session: aiohttp.ClientSession | None = None
        self.session: aiohttp.ClientSession
        self.etcd_client: EtcdClient

    def cpu(self) -> CpuSnap:
        ru = resource.getrusage(resource.RUSAGE_SELF)
        return CpuSnap(
            proc_cpu(self.agg_pid), proc_cpu(self.etcd_pid), ru.ru_utime + ru.ru_stime, machine_busy()
        )

    @contextlib.asynccontextmanager
    async def section(self, name: str, ops: int = 0) -> Any:
        print(f"\n[{name}]", flush=True)
        before = self.cpu()
        self.profiler.start(name)
        try:
            async with asyncio.timeout(self.budget):
                yield
        finally:
            self.profiler.stop()
            after = self.cpu()
            used = CpuSnap(
                after.aggapi - before.aggapi,
                after.etcd - before.etcd,
                after.bench - before.bench,
                after.machine - before.machine,
            )
            try:
                rss = proc_status(self.agg_pid, "VmRSS")
            except (OSError, Broken):  # aggapi is gone: guarded() reports that
                rss = 0
            self.res.cpu.append((name, ops, used, rss))

    async def guarded(self, name: str, fn: Callable[[], Awaitable[None]]) -> None:
        """Run one section; record (not raise) what broke, so later sections still report."""
        try:
            await fn()
        except (Broken, TimeoutError, aiohttp.ClientError, OSError, ValueError, KeyError) as exc:
            detail = str(exc) or type(exc).__name__
            self.res.fail(f"{name}: {detail}")
            if self.args.verbose:
                traceback.print_exc()
        if self.server.proc is not None and self.server.proc.poll() is not None:
            raise Broken(f"aggapi exited with {self.server.proc.returncode} during {name}")

    async def run(self) -> None:
        ctx = client_ssl(self.pki)
        conn = aiohttp.TCPConnector(
            ssl=ctx, limit=self.sizes.concurrency, limit_per_host=self.sizes.concurrency
        )
        self.etcd_client = EtcdClient(EtcdConfig((self.etcd.client_url,)))
        async with aiohttp.ClientSession(connector=conn, timeout=REQUEST_TIMEOUT) as self.session:
            try:
                await self.warm_up()
                self.res.raw["rss_idle"] = proc_status(self.agg_pid, "VmRSS")
                print(f"aggapi idle RSS (0 objects): {self.res.raw['rss_idle'] / 2**20:.1f} MiB", flush=True)
                await self.guarded("creates", self.creates)
                await self.guarded("fill", self.fill)
                await self.guarded("gets", self.gets)
                await self.guarded("lists", self.lists)
                await self.guarded("rss", self.rss)
                await self.guarded("watch", self.watch_fanout)
                await self.guarded("probe", self.probe_fresh_watches)
            finally:
                if self.list_session is not None:
                    await self.list_session.close()
                await self.etcd_client.close()

    # ---- plumbing -------------------------------------------------------------------------------

    async def warm_up(self) -> None:
        """Open the whole connection pool (TLS handshakes are not part of any figure) and the gRPC channel."""

        async def version(_: int) -> None:
            async with self.session.get(self.server.url + "/version") as r:
                await r.read()
                if r.status != 200:
                    raise Broken(f"/version: {r.status}")

        await run_pool(self.sizes.concurrency * 2, self.sizes.concurrency, version, 60)
        async with self.session.get(self.base, params={"resourceVersion": "0"}) as r:
            body = await r.read()
            if r.status != 200:
                raise Broken(f"first list: {r.status} {body[:300]!r}")
        await self.etcd_client.current_revision()

    async def post_pool(self, i: int) -> None:
        body = json.dumps(nodepool(pool_name(i), **pool_spec(i))).encode()
        async with self.session.post(self.base, data=body, headers=JSON_CT) as r:
            data = await r.read()
            if r.status != 201:
                raise Broken(f"create {pool_name(i)}: HTTP {r.status} {data[:300]!r}")

    async def cache_barrier(self) -> int:
        """Wait until aggapi's watch cache has seen etcd's current revision; returns that revision."""
        rev = await self.etcd_client.current_revision()
        deadline = time.monotonic() + 30
        while True:  # bounded by the deadline
            async with self.session.get(
                f"{self.base}/{pool_name(0)}", params={"resourceVersion": str(rev)}
            ) as r:
                await r.read()
                if r.status == 200:
                    return rev
            if time.monotonic() > deadline:
                raise Broken(f"watch cache did not reach revision {rev} in 30s (last HTTP {r.status})")
            await asyncio.sleep(0.1)

    # ---- 1. creates -----------------------------------------------------------------------------

    async def creates(self) -> None:
        n, c = self.sizes.creates, self.sizes.concurrency
        etcd = self.etcd_client

        async def raw_create(i: int) -> None:
            key = (RAW_PREFIX + pool_name(i)).encode()
            res = await etcd.txn(
                [Compare(key, "create", "==", 0)], [OpPut(key, stored_value(i))], [OpGet(key)]
            )
            if not res.succeeded:
                raise Broken(f"raw etcd create of {key!r} found the key already there")

        async with self.section("1a creates: raw etcd txn", n):
            raw = await run_pool(n, c, raw_create, self.budget)
        print(f"  etcd txn (value {len(stored_value(0))} B): {raw.describe()}")

        async with self.section("1b creates: aggapi POST", n):
            agg = await run_pool(n, c, self.post_pool, self.budget)
        self.created = n
        print(f"  aggapi POST: {agg.describe()}")
        stored = await etcd.range((self.agg_keys + pool_name(0)).encode())
        if not stored.kvs:
            raise Broken(f"aggapi's object is not at the expected etcd key {self.agg_keys + pool_name(0)}")
        self.res.note(
            f"value sizes: aggapi stored {len(stored.kvs[0].value)} B per NodePool, baseline writes "
            f"{len(stored_value(0))} B"
        )
        self.res.raw["creates"] = {"aggapi": agg.rate, "etcd": raw.rate}
        self.res.raw["create_latency_ms"] = {
            "aggapi_p50": pct(agg.latencies, 0.5) * 1e3,
            "aggapi_p99": pct(agg.latencies, 0.99) * 1e3,
            "etcd_p50": pct(raw.latencies, 0.5) * 1e3,
            "etcd_p99": pct(raw.latencies, 0.99) * 1e3,
        }
        self.res.add(f"creates/s @{c}", agg.rate, "/s", "etcd txn puts/s", raw.rate, "higher")

    async def fill(self) -> None:
        """Top up to `objects` NodePools (through aggapi, like the creates), then wait for the cache."""
        start, total = self.created, self.sizes.objects
        if total > start:
            async with self.section("fill to objects", total - start):
                run = await run_pool(
                    total - start, self.sizes.concurrency, lambda i: self.post_pool(start + i), self.budget
                )
            self.created = total
            print(f"  fill: {run.describe()}")
        rev = await self.cache_barrier()
        self.res.raw["filled_revision"] = rev
        self.res.raw["rss_loaded"] = proc_status(self.agg_pid, "VmRSS")
        rss = self.res.raw["rss_loaded"] / 2**20
        print(f"  {total} NodePools, cache at revision {rev}; aggapi RSS {rss:.1f} MiB")

    # ---- 2. GETs --------------------------------------------------------------------------------

    async def gets(self) -> None:
        n, c = self.sizes.gets, self.sizes.concurrency
        rng = random.Random(1)
        names = [pool_name(rng.randrange(self.created)) for _ in range(n)]

        def http_get(rv: str) -> Callable[[int], Awaitable[None]]:
            params = {"resourceVersion": rv}

            async def op(i: int) -> None:
                async with self.session.get(f"{self.base}/{names[i]}", params=params) as r:
                    data = await r.read()
                    if r.status != 200:
                        raise Broken(
                            f"GET {names[i]} (resourceVersion={rv!r}): HTTP {r.status} {data[:300]!r}"
                        )

            return op

        async def raw_get(i: int) -> None:
            res = await self.etcd_client.range((self.agg_keys + names[i]).encode())
            if not res.kvs:
                raise Broken(f"etcd range of {names[i]} found nothing")

        async with self.section("2a gets: raw etcd range", n):
            raw = await run_pool(n, c, raw_get, self.budget)
        print(f"  etcd range: {raw.describe()}")
        async with self.section("2b gets: aggapi rv=0 (cache)", n):
            cached = await run_pool(n, c, http_get("0"), self.budget)
        print(f"  aggapi GET rv=0: {cached.describe()}")
        async with self.section('2c gets: aggapi rv="" (etcd)', n):
            consistent = await run_pool(n, c, http_get(""), self.budget)
        print(f'  aggapi GET rv="": {consistent.describe()}')
        self.res.raw["gets"] = {"cache": cached.rate, "consistent": consistent.rate, "etcd": raw.rate}
        self.res.add(
            f"GETs/s @{c}, resourceVersion=0 (cache)", cached.rate, "/s", "etcd range/s", raw.rate, "higher"
        )
        self.res.add(
            f'GETs/s @{c}, resourceVersion="" (consistent, info)',
            consistent.rate,
            "/s",
            "etcd range/s",
            raw.rate,
            "higher",
        )

    # ---- 3. LISTs -------------------------------------------------------------------------------

    async def lists(self) -> None:
        runs, want = self.sizes.list_runs, self.created
        pkey = self.agg_keys.encode()
        rev = await self.etcd_client.current_revision()
        raw_ms: list[float] = []
        decode_ms: list[float] = []
        async with self.section("3a list: raw etcd range", runs):
            for _ in range(runs):
                t0 = time.perf_counter()
                got = await self.etcd_client.range(pkey, prefix_end(pkey), revision=rev)
                t1 = time.perf_counter()
                items = [json.loads(kv.value) for kv in got.kvs]
                t2 = time.perf_counter()
                if len(items) != want:
                    raise Broken(f"etcd range of the prefix returned {len(items)} keys, expected {want}")
                raw_ms.append((t1 - t0) * 1e3)
                decode_ms.append((t2 - t0) * 1e3)
        base, base_dec = statistics.median(raw_ms), statistics.median(decode_ms)
        print(f"  etcd range of {want} keys: median {base:.1f} ms; with json decode {base_dec:.1f} ms")
        self.res.raw["list_ms"] = {"etcd_range": base, "etcd_range_decode": base_dec}

        variants = [
            ("JSON", "0", {}),
            ("JSON", "", {}),
            ("Table", "0", TABLE_ACCEPT),
            ("Table", "", TABLE_ACCEPT),
        ]
        # One connection, as kubectl has: see rss() for what big responses leave behind per connection.
        conn = aiohttp.TCPConnector(ssl=client_ssl(self.pki), limit=1)
        self.list_session = aiohttp.ClientSession(connector=conn, timeout=REQUEST_TIMEOUT)
        for shape, rv, headers in variants:
            label = f"{shape}, rv={rv}" if rv else f'{shape}, rv=""'
            times: list[float] = []
            size = 0
            async with self.section(f"3b list: aggapi {label}", runs):
                for run in range(runs):
                    t0 = time.perf_counter()
                    async with self.list_session.get(
                        self.base, params={"resourceVersion": rv}, headers=headers
                    ) as r:
                        body = await r.read()
                    times.append((time.perf_counter() - t0) * 1e3)
                    if r.status != 200:
                        raise Broken(f"LIST {label}: HTTP {r.status} {body[:300]!r}")
                    if run == 0:
                        size = len(body)
                        doc = json.loads(body)
                        n = len(doc["rows"] if shape == "Table" else doc["items"])
                        if n != want:
                            raise Broken(f"LIST {label} returned {n} items, expected {want}")
            med = statistics.median(times)
            mib = size / 2**20
            print(
                f"  aggapi LIST {label}: median {med:.1f} ms of {runs} (min {min(times):.1f}), {mib:.1f} MiB"
            )
            self.res.raw["list_ms"][label] = med
            self.res.add(
                f"LIST {want} {label} ({'cache' if rv == '0' else 'consistent'}), median",
                med,
                "ms",
                "etcd range of the prefix",
                base,
                "lower",
            )
            self.res.raw["list_bytes"] = self.res.raw.get("list_bytes", {}) | {shape: size}
        self.res.note(
            f"LIST baseline: one etcd range of the {want} keys at one revision, median {base:.1f} ms; "
            f"json-decoding the values as well: {base_dec:.1f} ms (ratio of LIST JSON rv=0 to that: "
            f"{self.res.raw['list_ms']['JSON, rv=0'] / base_dec:.2f})"
        )

    # ---- 5. RSS ---------------------------------------------------------------------------------

    async def rss(self) -> None:
        mib, n = 2**20, max(1, self.created)
        idle = self.res.raw["rss_idle"]
        now = proc_status(self.agg_pid, "VmRSS")
        peak = proc_status(self.agg_pid, "VmHWM")
        loaded = self.res.raw.get("rss_loaded", now)
        if self.list_session is not None:
            await self.list_session.close()
            await asyncio.sleep(0.5)
        closed = proc_status(self.agg_pid, "VmRSS")
        self.res.raw.update(rss_after_lists=now, rss_peak=peak, rss_list_conn_closed=closed)
        per_obj = (now - idle) / n
        self.res.raw["rss_per_object"] = per_obj
        self.res.add(
            f"aggapi RSS, {self.created} objects cached (after the LISTs)", now / mib, "MiB",
            "idle, 0 objects", idle / mib, "lower",
        )  # fmt: skip
        self.res.note(
            f"RSS: idle {idle / mib:.1f} MiB; {self.created} objects loaded {loaded / mib:.1f} MiB "
            f"({(loaded - idle) / n:,.0f} B/object); after the LISTs {now / mib:.1f} MiB "
            f"({per_obj:,.0f} B/object; peak VmHWM {peak / mib:.1f} MiB); after the LIST client closed its "
            f"one connection {closed / mib:.1f} MiB ({(closed - idle) / n:,.0f} B/object)"
        )
        # What a big response leaves behind on each keep-alive connection: aiohttp's pool reuses idle
        # connections first-in first-out, so k sequential LISTs here go out on k different connections.
        k = 8
        before = proc_status(self.agg_pid, "VmRSS")
        for _ in range(k):
            async with self.session.get(self.base, params={"resourceVersion": "0"}) as r:
                await r.read()
                if r.status != 200:
                    raise Broken(f"LIST: HTTP {r.status}")
        after = proc_status(self.agg_pid, "VmRSS")
        per_conn = (after - before) / k
        self.res.raw["rss_per_pooled_list_connection"] = per_conn
        body = self.res.raw.get("list_bytes", {}).get("JSON", 0)
        self.res.note(
            f"{k} more JSON LISTs over {k} different pooled keep-alive connections: aggapi RSS "
            f"{before / mib:.1f} -> {after / mib:.1f} MiB, {per_conn / mib:.1f} MiB kept per connection "
            f"(response {body / mib:.1f} MiB) until the connection closes"
        )

    # ---- 4. watch fan-out -----------------------------------------------------------------------

    async def watch_fanout(self) -> None:
        await WatchFanout(self).run()

    # ---- probe: many watches from a revision the cache has not seen yet -------------------------

    async def probe_fresh_watches(self) -> None:
        """Not a figure, a check: informers start by a paginated LIST (served by etcd, so its
        resourceVersion is etcd's current revision, moved by writes outside aggapi's prefix) and then watch
        from that revision, many at once after a restart. Each such watch makes the cache prove it is
        current at that revision (when this check was written, by a progress request on its one etcd watch
        stream: concurrent requests broke that stream and stopped the cache for good). All must start
        (200), and the watch cache must still follow etcd afterwards."""
        n = self.sizes.concurrency
        await self.etcd_client.put(b"/bench-raw/elsewhere", b"x")  # etcd's revision moves past the cache's
        async with self.session.get(self.base, params={"limit": "500"}) as r:
            rv = (await r.json())["metadata"]["resourceVersion"]
        statuses: Counter[int] = Counter()
        bodies: dict[int, bytes] = {}
        params = {"watch": "true", "resourceVersion": rv, "timeoutSeconds": "1"}

        async def watch(_: int) -> None:
            async with self.session.get(self.base, params=params) as r:
                body = await r.read()  # the server ends each watch after timeoutSeconds
                statuses[r.status] += 1
                bodies.setdefault(r.status, body[:300])

        async with self.section(f"probe: {n} concurrent watches from a newer revision", n):
            await run_pool(n, n, watch, 30)
            name = f"probe-{uuid.uuid4().hex[:8]}"
            body = json.dumps(nodepool(name, type="Edge")).encode()
            async with self.session.post(self.base, data=body, headers=JSON_CT) as r:
                created = r.status
            seen = 0
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline:  # bounded: 5s
                async with self.session.get(f"{self.base}/{name}", params={"resourceVersion": "0"}) as r:
                    await r.read()
                    seen = r.status
                if seen == 200:
                    break
                await asyncio.sleep(0.1)
            async with self.session.get(self.server.url + "/livez", params={"verbose": ""}) as r:
                livez, livez_body = r.status, (await r.text()).strip().replace("\n", " | ")
        print(f"  watch answers: {dict(statuses)}; new object in the cache: HTTP {seen}; /livez {livez}")
        if set(statuses) != {200}:
            errs = {k: v.decode(errors="replace") for k, v in bodies.items() if k != 200}
            self.res.fail(
                f"probe: {n} concurrent watches from revision {rv} answered {dict(statuses)}: {errs}"
            )
        if created != 201 or seen != 200:
            self.res.fail(
                f"probe: after those watches the watch cache stopped following etcd (create {created}, "
                f"GET resourceVersion=0 of the new object after 5s: {seen}; /livez {livez}: {livez_body})"
            )


@dataclass
class WatcherLog:
    events: list[tuple[int, str, str, float]] = field(default_factory=list)  # rv, type, name, read time
    error: str = ""


class WatchFanout:
    """1,000 watchers on the NodePool collection; closed-loop then back-to-back updates of one pool."""

    POOLS = 4  # client sessions (connection pools) the watches are spread over

    def __init__(self, b: Bench) -> None:
        self.b = b
        self.w = b.sizes.watchers
        self.target = pool_name(0)
        self.arrivals: Counter[int] = Counter()
        self.waiting: dict[int, asyncio.Future[None]] = {}
        self.sent: dict[int, float] = {}
        self.returned: dict[int, float] = {}

    def arrived(self, rv: int) -> None:
        self.arrivals[rv] += 1
        fut = self.waiting.get(rv)
        if fut is not None and self.arrivals[rv] >= self.w and not fut.done():
            fut.set_result(None)

    async def all_arrived(self, rv: int, timeout: float) -> bool:
        if self.arrivals[rv] >= self.w:
            return True
        fut = self.waiting.setdefault(rv, asyncio.get_running_loop().create_future())
        try:
            await within(asyncio.shield(fut), timeout)
        except TimeoutError:
            return False
        return True

    async def reader(self, resp: aiohttp.ClientResponse, log: WatcherLog) -> None:
        try:
            async for line in resp.content:  # ends when the watch is closed at the end of the section
                t = time.perf_counter()
                if not line.strip():
                    continue
                ev = json.loads(line)
                if ev["type"] == "BOOKMARK":
                    continue
                meta = ev["object"]["metadata"]
                rv = int(meta["resourceVersion"])
                log.events.append((rv, ev["type"], meta.get("name", ""), t))
                self.arrived(rv)
        except (aiohttp.ClientError, ValueError, KeyError) as exc:
            log.error = f"{type(exc).__name__}: {exc}"

    async def update(self, i: int) -> int:
        patch = json.dumps({"spec": {"labels": {"bench.aggapi.io/seq": str(i)}}}).encode()
        t0 = time.perf_counter()
        async with self.b.session.patch(f"{self.b.base}/{self.target}", data=patch, headers=MERGE_PATCH) as r:
            data = await r.read()
        t1 = time.perf_counter()
        if r.status != 200:
            raise Broken(f"PATCH {self.target}: HTTP {r.status} {data[:300]!r}")
        rv = int(json.loads(data)["metadata"]["resourceVersion"])
        self.sent[rv], self.returned[rv] = t0, t1
        return rv

    async def registered_watchers(self) -> float:
        async with self.b.session.get(self.b.server.url + "/metrics") as r:
            text = (await r.read()).decode()
        m = re.search(r'^apiserver_registered_watchers\{resource="nodepools"\} (\S+)$', text, re.M)
        return float(m.group(1)) if m else float("nan")

    async def run(self) -> None:
        b, res, n = self.b, self.b.res, self.b.sizes.updates
        await self.raw_baseline()
        # Start from the revision the watch cache is at (a LIST from the cache says which), so opening the
        # watches needs no progress notification from etcd; the probe section covers that case.
        async with b.session.get(b.base, params={"resourceVersion": "0"}) as r:
            start_rv = (await r.json())["metadata"]["resourceVersion"]
        ctx = client_ssl(b.pki)
        per_pool = -(-self.w // self.POOLS)
        sessions = [
            aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(ssl=ctx, limit=per_pool, limit_per_host=per_pool)
            )
            for _ in range(self.POOLS)
        ]
        logs = [WatcherLog() for _ in range(self.w)]
        responses: list[aiohttp.ClientResponse] = []
        tasks: list[asyncio.Task[None]] = []
        params = {"watch": "true", "resourceVersion": start_rv, "timeoutSeconds": str(int(b.budget) + 60)}
        opening = asyncio.Semaphore(64)
        timeout = aiohttp.ClientTimeout(total=b.budget + 60, connect=30)

        async def open_one(k: int) -> None:
            async with opening:
                resp = await sessions[k % self.POOLS].get(b.base, params=params, timeout=timeout)
                responses.append(resp)
                if resp.status != 200:
                    raise Broken(f"watch {k}: HTTP {resp.status} {(await resp.read())[:300]!r}")
                # The response head is sent after the watcher is registered: from here on it gets every event.
                tasks.append(asyncio.create_task(self.reader(resp, logs[k]), name=f"bench-watch-{k}"))

        try:
            rss0 = proc_status(b.agg_pid, "VmRSS")
            async with b.section(f"4a watch: open {self.w} watchers", self.w):
                t0 = time.perf_counter()
                await asyncio.gather(*(open_one(k) for k in range(self.w)))
                opened = time.perf_counter() - t0
            registered = await self.registered_watchers()
            print(
                f"  {self.w} watches open in {opened:.1f}s; aggapi has {registered:.0f} registered watchers"
            )
            if registered < self.w:
                res.fail(f"aggapi reports {registered:.0f} registered watchers, {self.w} were opened")
            rss1 = proc_status(b.agg_pid, "VmRSS")
            res.raw["rss_per_watch"] = (rss1 - rss0) / self.w
            per_watch = (rss1 - rss0) / self.w / 1024
            res.note(
                f"opening {self.w} watches (one TLS connection each) took {opened:.1f}s and raised aggapi's "
                f"RSS {rss0 / 2**20:.1f} -> {rss1 / 2**20:.1f} MiB = {per_watch:,.0f} KiB per watch"
            )

            closed_rvs: list[int] = []
            async with b.section(f"4b watch: {n} updates, each awaited by all", n * self.w):
                for i in range(n):
                    rv = await self.update(i)
                    closed_rvs.append(rv)
                    if not await self.all_arrived(rv, 10):
                        got = self.arrivals[rv]
                        res.fail(f"update {i} (rv {rv}): only {got}/{self.w} watchers had it after 10s")
            burst_rvs: list[int] = []
            async with b.section(f"4c watch: {n} updates back-to-back", n * self.w):
                t_burst = time.perf_counter()
                for i in range(n):
                    burst_rvs.append(await self.update(n + i))
                for rv in burst_rvs:
                    if not await self.all_arrived(rv, 30):
                        res.fail(
                            f"burst rv {rv}: only {self.arrivals[rv]}/{self.w} watchers had it after 30s"
                        )
                        break
                burst_elapsed = time.perf_counter() - t_burst
            await asyncio.sleep(0.5)  # anything extra (duplicates, strays) shows up in the check below
            self.check(logs, closed_rvs, burst_rvs, burst_elapsed)
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            for resp in responses:
                resp.close()
            for s in sessions:
                await s.close()
        deadline = time.monotonic() + 15
        left = await self.registered_watchers()
        while left > 0 and time.monotonic() < deadline:  # bounded: 15s
            await asyncio.sleep(0.2)
            left = await self.registered_watchers()
        print(f"  after closing the client side: aggapi reports {left:.0f} registered watchers")
        if left > 0:
            res.fail(f"{left:.0f} watchers still registered in aggapi 15s after their clients disconnected")

    def check(
        self, logs: list[WatcherLog], closed: list[int], burst: list[int], burst_elapsed: float
    ) -> None:
        res = self.b.res
        expected = closed + burst
        complete = 0
        problems: Counter[str] = Counter()
        lat_sent: list[float] = []
        lat_ret: list[float] = []
        burst_sent: list[float] = []
        fan_out_done: dict[int, float] = {}
        closed_set = set(closed)
        for k, log in enumerate(logs):
            rvs = [e[0] for e in log.events]
            if log.error:
                problems[f"stream error ({log.error})"] += 1
            if rvs == expected and all(e[1] == "MODIFIED" and e[2] == self.target for e in log.events):
                complete += 1
            else:
                missing = set(expected) - set(rvs)
                extra = [rv for rv in rvs if rv not in set(expected)]
                dup = len(rvs) - len(set(rvs))
                why = f"{len(missing)} missing, {len(extra)} unexpected, {dup} duplicated"
                if not missing and not extra and not dup:
                    why = "out of order or wrong type/name"
                problems[why] += 1
                if problems[why] == 1:
                    print(f"  watcher {k}: {why}; got {len(rvs)} events, first missing {sorted(missing)[:5]}")
            for rv, _typ, _name, t in log.events:
                if rv in closed_set:
                    lat_sent.append(t - self.sent[rv])
                    lat_ret.append(t - self.returned[rv])
                    fan_out_done[rv] = max(fan_out_done.get(rv, 0.0), t - self.sent[rv])
                elif rv in self.sent:
                    burst_sent.append(t - self.sent[rv])
        n = len(closed)
        print(f"  {complete}/{self.w} watchers got all {n}+{len(burst)} events, in order, exactly once")
        res.raw["watch"] = {"complete_watchers": complete, "watchers": self.w, "problems": dict(problems)}
        if complete != self.w:
            res.fail(
                f"watch fan-out: {self.w - complete} of {self.w} watchers did not get exactly the "
                f"{len(expected)} events in order: {dict(problems)}"
            )
        counts = Counter(len(log.events) for log in logs)
        res.note(f"events per watcher (count: watchers): {dict(sorted(counts.items()))}")
        fan = list(fan_out_done.values())
        ms = 1e3
        res.raw["watch"].update(
            p50_from_response_ms=pct(lat_ret, 0.5) * ms,
            p99_from_response_ms=pct(lat_ret, 0.99) * ms,
            p50_from_send_ms=pct(lat_sent, 0.5) * ms,
            p99_from_send_ms=pct(lat_sent, 0.99) * ms,
            fanout_complete_p50_ms=pct(fan, 0.5) * ms,
            fanout_complete_max_ms=max(fan, default=float("nan")) * ms,
            burst_elapsed_s=burst_elapsed,
            burst_events_per_s=len(burst) * self.w / burst_elapsed if burst_elapsed else float("nan"),
            burst_p50_from_send_ms=pct(burst_sent, 0.5) * ms,
            burst_p99_from_send_ms=pct(burst_sent, 0.99) * ms,
        )
        w, raw = res.raw["watch"], res.raw["watch_raw"]
        label = f"{self.w} watchers, {n} sequential updates"
        for q in ("p50", "p99"):
            res.add(
                f"watch delivery {q}, {label} (from PATCH sent)",
                w[f"{q}_from_send_ms"],
                "ms",
                "1 etcd watch (from put sent)",
                raw[f"{q}_from_send_ms"],
                "lower",
            )
        res.note(
            f"watch delivery measured from the write's response instead (can be < 0: the event may be read "
            f"before the write's response): aggapi p50 {w['p50_from_response_ms']:.2f} ms, p99 "
            f"{w['p99_from_response_ms']:.2f} ms; etcd p50 {raw['p50_from_response_ms']:.2f} ms, p99 "
            f"{raw['p99_from_response_ms']:.2f} ms"
        )
        res.note(
            f"watch fan-out: the last of {self.w} watchers had an update after p50 "
            f"{w['fanout_complete_p50_ms']:.1f} ms, max {w['fanout_complete_max_ms']:.1f} ms "
            "(from PATCH sent); "
            f"{len(burst)} back-to-back updates reached all watchers in {burst_elapsed:.2f}s = "
            f"{w['burst_events_per_s']:,.0f} events/s (delivery p50 {w['burst_p50_from_send_ms']:.0f} ms, "
            f"p99 {w['burst_p99_from_send_ms']:.0f} ms from PATCH sent)"
        )

    async def raw_baseline(self) -> None:
        """The same number of sequential updates seen by ONE raw etcd watch (each awaited before the next)."""
        b, n = self.b, self.b.sizes.updates
        client = b.etcd_client
        key = (RAW_PREFIX + pool_name(0)).encode()
        value = stored_value(0)
        seen: dict[int, float] = {}
        waiting: dict[int, asyncio.Future[None]] = {}
        sent: dict[int, float] = {}
        returned: dict[int, float] = {}
        rev = await client.current_revision()
        watch = client.watch(key, start_revision=rev + 1, prev_kv=True)
        async with b.section("4r watch: raw etcd, 1 watcher", n), watch as w:

            async def pump() -> None:
                async for batch in w:  # ends when the watch is cancelled below
                    t = time.perf_counter()
                    for ev in batch.events:
                        seen[ev.kv.mod_revision] = t
                        fut = waiting.get(ev.kv.mod_revision)
                        if fut is not None and not fut.done():
                            fut.set_result(None)

            task = asyncio.create_task(pump(), name="bench-raw-watch")
            try:
                for i in range(n):
                    t0 = time.perf_counter()
                    r = await client.put(
                        key, value.replace(b'"generation":1', f'"generation":{i + 2}'.encode())
                    )
                    t1 = time.perf_counter()
                    sent[r], returned[r] = t0, t1
                    if r not in seen:
                        fut = waiting.setdefault(r, asyncio.get_running_loop().create_future())
                        await within(fut, 10)
            finally:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, grpc.aio.AioRpcError):
                    await task
        missing = [r for r in sent if r not in seen]
        if missing:
            b.res.fail(f"raw etcd watch missed revisions {missing[:10]}")
        from_sent = [seen[r] - sent[r] for r in sent if r in seen]
        from_ret = [seen[r] - returned[r] for r in sent if r in seen]
        b.res.raw["watch_raw"] = {
            "p50_from_response_ms": pct(from_ret, 0.5) * 1e3,
            "p99_from_response_ms": pct(from_ret, 0.99) * 1e3,
            "p50_from_send_ms": pct(from_sent, 0.5) * 1e3,
            "p99_from_send_ms": pct(from_sent, 0.99) * 1e3,
        }
        q = b.res.raw["watch_raw"]
        print(
            f"  raw etcd watch, {len(from_sent)}/{n} events: from put response p50 "
            f"{q['p50_from_response_ms']:.2f} ms p99 {q['p99_from_response_ms']:.2f} ms; "
            f"from put sent p50 {q['p50_from_send_ms']:.2f} ms p99 {q['p99_from_send_ms']:.2f} ms"
        )


# ---- report ---------------------------------------------------------------------------------------------


def source_version() -> str:
    """The commit measured, and whether the work tree differed from it (read-only git commands)."""
    root = Path(__file__).resolve().parent.parent

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", "-C", str(root), *args], capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()

    try:
        commit = git("rev-parse", "--short", "HEAD")
        dirty = len([ln for ln in git("status", "--porcelain", "--untracked-files=no").splitlines() if ln])
    except (OSError, subprocess.SubprocessError):
        return "?"
    return f"{commit}" + (f" + {dirty} modified files" if dirty else "")


def machine() -> dict[str, str]:
    cpuinfo = Path("/proc/cpuinfo").read_text()
    model = next(
        (ln.split(":", 1)[1].strip() for ln in cpuinfo.splitlines() if ln.startswith("model name")), "?"
    )
    mem = next(
        ln.split(":", 1)[1].strip()
        for ln in Path("/proc/meminfo").read_text().splitlines()
        if ln.startswith("MemTotal")
    )
    mem_gib = int(mem.split()[0]) / 2**20
    try:
        etcd_version = subprocess.run(
            [str(ETCD_BIN), "--version"], capture_output=True, text=True, timeout=10, check=False
        ).stdout.splitlines()[0]
    except (OSError, IndexError, subprocess.TimeoutExpired):
        etcd_version = "?"
    return {
        "date": datetime.now().astimezone().strftime("%Y-%m-%d %H:%M:%S %Z"),
        "aggapi": source_version(),
        "nproc": str(len(os.sched_getaffinity(0))),
        "cpu": model,
        "memory": f"{mem_gib:.1f} GiB",
        "kernel": f"{platform.system()} {platform.release()} {platform.machine()}",
        "python": sys.version.split()[0] + f" ({platform.python_implementation()})",
        "aiohttp": aiohttp.__version__,
        "grpcio": grpc.__version__,
        "etcd": etcd_version,
        "loadavg": " ".join(Path("/proc/loadavg").read_text().split()[:3]),
    }


def report(res: Results, info: dict[str, str], sizes: Sizes) -> None:
    print("\n## Results\n")
    print(
        f"{info['date']} — aggapi {info['aggapi']} — {info['nproc']} CPUs ({info['cpu']}), {info['memory']}, "
        f"Python {info['python']}, {info['etcd']}"
    )
    print(
        f"sizes: {sizes.creates} creates, {sizes.gets} GETs per kind, {sizes.objects} objects listed "
        f"({sizes.list_runs} runs each), {sizes.watchers} watchers x {sizes.updates} updates, "
        f"concurrency {sizes.concurrency}\n"
    )
    print("| # | measurement | aggapi | baseline | baseline value | ratio aggapi/baseline | better |")
    print("|---|---|---:|---|---:|---:|---|")
    for i, r in enumerate(res.rows, 1):
        print(
            f"| {i} | {r.what} | {fmt(r.value, r.unit)} | {r.baseline_what} | {fmt(r.baseline, r.unit)} "
            f"| {r.ratio:.3f} | {r.better} |"
        )
    if res.notes:
        print("\nNotes:")
        for n in res.notes:
            print(f"- {n}")
    print("\nCPU seconds used per section (all three processes share the machine):\n")
    print(
        "| section | ops | aggapi | etcd | bench client | other processes | aggapi ms/op | aggapi RSS after |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for name, ops, c, rss in res.cpu:
        per = f"{c.aggapi / ops * 1e3:.3f}" if ops else "-"
        print(
            f"| {name} | {ops} | {c.aggapi:.2f} | {c.etcd:.2f} | {c.bench:.2f} | {c.others:.2f} | {per} "
            f"| {rss / 2**20:.1f} MiB |"
        )
    total_others = sum(c.others for _, _, c, _ in res.cpu)
    print(
        f"\nOther processes used {total_others:.1f} CPU-seconds during the measured sections "
        f"(load average at start {info['loadavg']}, at end {Path('/proc/loadavg').read_text().split()[:3]})."
    )
    if res.failures:
        print("\nBROKEN:")
        for f in res.failures:
            print(f"- {f}")


def print_profiles(prof: Profiler) -> None:
    for section, path in prof.files.items():
        if not path.exists():
            print(f"\n(no profile for {section})")
            continue
        print(f"\nTop aggapi frames by own time, {section} (py-spy raw profile {path}):")
        for frame, own, incl in top_frames(path):
            print(f"  {own:5.1f}% own {incl:5.1f}% incl  {frame}")


def raise_nofile() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    print(f"RLIMIT_NOFILE: soft {resource.getrlimit(resource.RLIMIT_NOFILE)[0]} (was {soft}), hard {hard}")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument(
        "--scale",
        type=float,
        default=1.0,
        help="multiplies creates (3000), GETs (5000), listed objects (10000) and watchers (1000)",
    )
    p.add_argument("--concurrency", type=int, default=64)
    p.add_argument("--updates", type=int, default=100, help="watch updates per phase")
    p.add_argument("--list-runs", type=int, default=5)
    p.add_argument("--section-timeout", type=float, default=180, help="seconds any one section may take")
    p.add_argument("--json", type=Path, help="also write the raw figures here")
    p.add_argument(
        "--profile-dir", type=Path, help="record aggapi with py-spy per section into this directory"
    )
    p.add_argument("--py-spy", default=shutil.which("py-spy"), help="py-spy binary for --profile-dir")
    p.add_argument("--keep", action="store_true", help="keep the temp dir (etcd data, aggapi log)")
    p.add_argument("-v", "--verbose", action="store_true")
    args = p.parse_args(argv)
    if args.profile_dir is not None:
        if not args.py_spy:
            p.error("--profile-dir needs py-spy (--py-spy PATH)")
        args.profile_dir.mkdir(parents=True, exist_ok=True)
    else:
        args.py_spy = None
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    raise_nofile()
    info = machine()
    for k, v in info.items():
        print(f"{k:>8}: {v}")
    sizes = sizes_from(args)
    res = Results()
    tmp = Path(tempfile.mkdtemp(prefix="aggapi-bench-"))
    etcd: EtcdServer | None = None
    server: AggapiServer | None = None
    bench: Bench | None = None
    started = time.monotonic()
    try:
        pki = make_pki(tmp / "pki")
        etcd = start_etcd(tmp / "etcd")
        server = AggapiServer(pki, etcd.client_url, tmp / "aggapi")
        server.start()
        assert server.proc is not None
        print(
            f"etcd {etcd.client_url} (pid {etcd.proc.pid if etcd.proc else '?'}), aggapi {server.url} "
            f"(pid {server.proc.pid}, etcd prefix {server.prefix}), work dir {tmp}"
        )
        bench = Bench(args, etcd, server, pki, res)
        asyncio.run(bench.run())
    except (Broken, RuntimeError, OSError, TimeoutError, aiohttp.ClientError) as exc:
        res.fail(f"{type(exc).__name__}: {exc}")
        if args.verbose:
            traceback.print_exc()
    finally:
        if server is not None:
            server.stop()
        if etcd is not None:
            etcd.stop()
    res.raw["total_seconds"] = time.monotonic() - started
    report(res, info, sizes)
    print(f"\ntotal {res.raw['total_seconds']:.0f}s")
    if bench is not None:
        print_profiles(bench.profiler)
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "machine": info,
                    "sizes": sizes.__dict__,
                    "rows": [r.__dict__ for r in res.rows],
                    "raw": res.raw,
                    "failures": res.failures,
                },
                indent=2,
                default=str,
            )
        )
    if res.failures and server is not None and server.log_file.exists():
        print(
            "\naggapi log tail:\n" + "\n".join(server.log_file.read_text(errors="replace").splitlines()[-30:])
        )
    if args.keep or res.failures:
        print(f"work dir kept: {tmp}")
    else:
        shutil.rmtree(tmp, ignore_errors=True)
    return 1 if res.failures else 0


if __name__ == "__main__":
    sys.exit(main())
