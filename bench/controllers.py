"""`make bench`: the NodePool controller on a cluster of 5,000 Nodes in 50 pools.

One run starts its own etcd, a devcluster (the KAS stand-in, DESIGN §6) and `aggapi serve --kubeconfig`
pointing at it (so the NodePool controller runs and leads), all on 127.0.0.1, through the same
`tests/support` helpers as the controller tests. It then creates 50 NodePools (through aggapi) and
5,000 Nodes (through the devcluster; label `apps.openyurt.io/nodepool=pool-NN`, Ready=True) with
bounded concurrency, and measures:

  1. the time from the last Node create until every pool's status (nodes, readyNodeNum,
     unreadyNodeNum) is right, polling the pool list; baseline: the devcluster's own LIST of all the
     Nodes in pages of 500, as the controller's Node informer makes it (median of 3; an unpaginated
     LIST is printed too);
  2. 500 Nodes (10 per pool) flipped to Ready=False with status merge patches: the time from the last
     patch answer until every pool status shows them; same baseline;
  3. reconcile throughput: the `aggapi_controller_reconcile_total{controller="nodepool"}` delta (all
     results) from aggapi's /metrics over each phase's elapsed time; baseline: the Node writes/s the
     devcluster took in that phase;
  4. aggapi RSS with that cluster cached (Node informer + pools) vs the same process idle (leading, 0
     Nodes, 0 pools).

Nothing here asserts on timing: the exit status is non-zero only when something broke (an error
answer, a phase over its time limit, a pool status that never became right, a process that exited).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import ssl
import statistics
import sys
import tempfile
import time
import traceback
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "controllers"))

from api import Broken, Results, fmt, machine, proc_cpu, proc_status, raise_nofile, run_pool
from npkit import POOL_LABEL, NPEnv, start_np_aggapi
from support.aggapi import NP, client_ssl, nodepool
from support.devcluster import Devcluster
from support.etcd import EtcdServer, start_etcd

from aggapi.devlab import make_pki
from edge.kubelet_sim import NodeIdentity, node_object

JSON_CT = {"Content-Type": "application/json"}
MERGE_PATCH = {"Content-Type": "application/merge-patch+json"}
NODES = "/api/v1/nodes"
TIMEOUT = aiohttp.ClientTimeout(total=120)
PAGE = 500  # the controller's Node informer page size (aggapi.controllers.kube)


def pool_of(i: int, pools: int) -> str:
    return f"pool-{i % pools:02d}"


def node_name(i: int) -> str:
    return f"bench-node-{i:05d}"


def flipped(i: int, nodes: int, flips: int) -> bool:
    """Spread the flips over the pools: every (nodes // flips)-th node."""
    step = max(1, nodes // flips)
    return i % step == 0 and i // step < flips


def reconciles(text: str, controller: str = "nodepool") -> dict[str, float]:
    """`aggapi_controller_reconcile_total` of one controller, by result (success, error, requeue)."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("aggapi_controller_reconcile_total{") and f'controller="{controller}"' in line:
            result = line.split('result="', 1)[1].split('"', 1)[0] if 'result="' in line else "?"
            out[result] = out.get(result, 0.0) + float(line.rsplit(" ", 1)[1])
    return out


def reconcile_total(text: str) -> float:
    return sum(reconciles(text).values())


def leader_status(text: str) -> float:
    for line in text.splitlines():
        if line.startswith("aggapi_leader_election_master_status"):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


class Bench:
    def __init__(self, args: argparse.Namespace, etcd: EtcdServer, dc: Devcluster, env: NPEnv, res: Results):
        self.args, self.etcd, self.dc, self.env, self.res = args, etcd, dc, env, res
        assert env.aggapi.proc is not None and dc.child is not None and dc.child.proc is not None
        self.agg_pid, self.dc_pid = env.aggapi.proc.pid, dc.child.proc.pid
        self.n, self.pools, self.flips = args.nodes, args.pools, min(args.flips, args.nodes)
        self.budget = float(args.phase_timeout)
        self.ready = [True] * self.n
        self.agg: aiohttp.ClientSession
        self.kas: aiohttp.ClientSession

    # ---- plumbing -------------------------------------------------------------------------------

    async def call(self, s: aiohttp.ClientSession, method: str, url: str, want: int, **kw: Any) -> Any:
        async with s.request(method, url, **kw) as r:
            data = await r.read()
            if r.status != want:
                raise Broken(f"{method} {url}: HTTP {r.status} {data[:300]!r}")
            return json.loads(data) if data[:1] == b"{" else data.decode()

    async def metrics(self) -> str:
        text: str = await self.call(self.agg, "GET", self.env.aggapi.url + "/metrics", 200)
        return text

    def cpu(self) -> tuple[float, float]:
        return proc_cpu(self.agg_pid), proc_cpu(self.dc_pid)

    def expected(self) -> dict[str, tuple[set[str], int]]:
        want: dict[str, tuple[set[str], int]] = {f"pool-{p:02d}": (set(), 0) for p in range(self.pools)}
        for i in range(self.n):
            names, ready = want[pool_of(i, self.pools)]
            names.add(node_name(i))
            want[pool_of(i, self.pools)] = (names, ready + self.ready[i])
        return want

    async def converge(self, what: str) -> tuple[float, int, str]:
        """Poll the pool list until every pool status is right: (seconds, polls, last mismatch)."""
        want = self.expected()
        t0 = time.perf_counter()
        deadline = time.monotonic() + self.budget
        polls, wrong = 0, ""
        while True:  # bounded by the deadline
            polls += 1
            body = await self.call(self.agg, "GET", self.env.aggapi.url + NP, 200)
            got = {item["metadata"]["name"]: item.get("status") or {} for item in body["items"]}
            wrong = ""
            for name, (names, ready) in want.items():
                st = got.get(name)
                if st is None:
                    wrong = f"{name} missing"
                elif (
                    st.get("readyNodeNum") != ready
                    or st.get("unreadyNodeNum") != len(names) - ready
                    or set(st.get("nodes") or []) != names
                ):
                    wrong = (
                        f"{name}: ready {st.get('readyNodeNum')}/{ready}, unready "
                        f"{st.get('unreadyNodeNum')}/{len(names) - ready}, nodes {len(st.get('nodes') or [])}"
                        f"/{len(names)}"
                    )
                if wrong:
                    break
            if not wrong:
                return time.perf_counter() - t0, polls, ""
            if time.monotonic() > deadline:
                raise Broken(f"{what}: pool statuses not right after {self.budget:.0f}s ({wrong})")
            await asyncio.sleep(0.05)

    async def list_baseline(self) -> tuple[float, float]:
        """Median seconds of the devcluster listing every Node in pages of PAGE, and in one LIST."""
        url = self.dc.url + NODES

        async def paged() -> int:
            token, count = "", 0
            while True:  # ends when the devcluster returns no continue token
                params = {"limit": str(PAGE), **({"continue": token} if token else {})}
                body = await self.call(self.kas, "GET", url, 200, params=params)
                count += len(body["items"])
                token = (body.get("metadata") or {}).get("continue") or ""
                if not token:
                    return count

        async def whole() -> int:
            body = await self.call(self.kas, "GET", url, 200)
            return len(body["items"])

        out = []
        for fn in (paged, whole):
            times = []
            for _ in range(3):
                t0 = time.perf_counter()
                count = await fn()
                times.append(time.perf_counter() - t0)
                if count != self.n:
                    raise Broken(f"devcluster listed {count} nodes, expected {self.n}")
            out.append(statistics.median(times))
        return out[0], out[1]

    # ---- the run --------------------------------------------------------------------------------

    async def run(self) -> None:
        agg_conn = aiohttp.TCPConnector(ssl=client_ssl(self.env.aggapi.pki), limit=self.args.concurrency)
        dpki = self.dc.pki
        kas_ssl = ssl.create_default_context(cafile=str(dpki.ca))
        kas_ssl.load_cert_chain(str(dpki.admin_cert), str(dpki.admin_key))
        kas_conn = aiohttp.TCPConnector(ssl=kas_ssl, limit=self.args.concurrency)
        async with (
            aiohttp.ClientSession(connector=agg_conn, timeout=TIMEOUT) as self.agg,
            aiohttp.ClientSession(connector=kas_conn, timeout=TIMEOUT) as self.kas,
        ):
            await self.wait_leader()
            await asyncio.sleep(1)  # let the freshly started informers settle before the idle RSS
            self.res.raw["rss_idle"] = proc_status(self.agg_pid, "VmRSS")
            print(f"aggapi idle RSS (leading, 0 nodes, 0 pools): {self.res.raw['rss_idle'] / 2**20:.1f} MiB")
            await self.phase("create", self.create)
            await self.phase("flip", self.flip)

    async def phase(self, name: str, fn: Callable[[], Awaitable[None]]) -> None:
        try:
            async with asyncio.timeout(self.budget * 3):
                await fn()
        except (Broken, TimeoutError, aiohttp.ClientError, OSError, ValueError, KeyError) as exc:
            self.res.fail(f"{name}: {exc or type(exc).__name__}")
            if self.args.verbose:
                traceback.print_exc()
        for proc, who in (
            (self.env.aggapi.proc, "aggapi"),
            (self.dc.child and self.dc.child.proc, "devcluster"),
        ):
            if proc is not None and proc.poll() is not None:
                raise Broken(f"{who} exited with {proc.returncode} during {name}")

    async def wait_leader(self) -> None:
        deadline = time.monotonic() + 60
        while leader_status(await self.metrics()) != 1.0:  # bounded by the deadline
            if time.monotonic() > deadline:
                raise Broken("aggapi did not become leader within 60s")
            await asyncio.sleep(0.1)

    async def create(self) -> None:
        print(f"\n[create: {self.pools} NodePools through aggapi, {self.n} Nodes through the devcluster]")
        agg_np = self.env.aggapi.url + NP

        async def post_pool(p: int) -> None:
            body = nodepool(f"pool-{p:02d}", type="Edge")
            await self.call(self.agg, "POST", agg_np, 201, data=json.dumps(body), headers=JSON_CT)

        await run_pool(self.pools, min(self.pools, self.args.concurrency), post_pool, self.budget)

        async def post_node(i: int) -> None:
            ident = NodeIdentity(node_name(i), f"10.{i // 65536 % 256}.{i // 256 % 256}.{i % 256}")
            obj = node_object(ident, labels={POOL_LABEL: pool_of(i, self.pools)})
            await self.call(self.kas, "POST", self.dc.url + NODES, 201, data=json.dumps(obj), headers=JSON_CT)

        r0 = reconciles(await self.metrics())
        m0, cpu0 = sum(r0.values()), self.cpu()
        t0 = time.perf_counter()
        run = await run_pool(self.n, self.args.concurrency, post_node, self.budget)
        print(f"  node creates: {run.describe()}")
        secs, polls, _ = await self.converge("after creation")
        elapsed = time.perf_counter() - t0
        r1 = reconciles(await self.metrics())
        m1, cpu1 = sum(r1.values()), self.cpu()
        by_result = {k: v - r0.get(k, 0.0) for k, v in r1.items() if v - r0.get(k, 0.0)}
        print(f"  pool statuses right {secs:.2f}s after the last create ({polls} polls)")
        self.res.raw["rss_loaded"] = proc_status(self.agg_pid, "VmRSS")
        paged, whole = await self.list_baseline()
        self.res.note(
            f"setup: {self.n} Node creates at {self.args.concurrency} concurrency: {run.describe()}"
        )
        self.res.note(
            f"devcluster LIST of {self.n} Nodes in one page (no limit), median of 3: {whole * 1e3:.0f} ms"
        )
        self.res.raw["create"] = {
            "node_creates_per_s": run.rate,
            "converge_s": secs,
            "list_paged_s": paged,
            "list_whole_s": whole,
            "reconciles": by_result,
            "elapsed_s": elapsed,
            "cpu_aggapi_s": cpu1[0] - cpu0[0],
            "cpu_devcluster_s": cpu1[1] - cpu0[1],
        }
        self.res.add(
            f"pool status converged after the last of {self.n} Node creates",
            secs * 1e3,
            "ms",
            f"devcluster LIST of {self.n} Nodes, pages of {PAGE} (median of 3)",
            paged * 1e3,
            "lower",
        )
        self.res.add(
            "reconciles/s, creates until converged",
            (m1 - m0) / elapsed,
            "/s",
            "devcluster Node creates/s",
            run.rate,
            "higher",
        )
        self.res.note(
            f"create phase: {m1 - m0:.0f} nodepool reconciles {by_result} in {elapsed:.1f}s; "
            f"CPU aggapi {cpu1[0] - cpu0[0]:.1f}s, devcluster {cpu1[1] - cpu0[1]:.1f}s"
        )
        self.res.add(
            f"aggapi RSS, {self.n} Nodes + {self.pools} pools cached",
            self.res.raw["rss_loaded"] / 2**20,
            "MiB",
            "idle (leading, 0 Nodes, 0 pools)",
            self.res.raw["rss_idle"] / 2**20,
            "lower",
        )

    async def flip(self) -> None:
        targets = [i for i in range(self.n) if flipped(i, self.n, self.flips)]
        print(f"\n[flip: {len(targets)} Nodes to Ready=False with status merge patches]")

        async def patch(k: int) -> None:
            i = targets[k]
            cond = {"type": "Ready", "status": "False", "reason": "KubeletNotReady", "message": "bench"}
            body = json.dumps({"status": {"conditions": [cond]}})
            url = f"{self.dc.url}{NODES}/{node_name(i)}/status"
            await self.call(self.kas, "PATCH", url, 200, data=body, headers=MERGE_PATCH)

        for i in targets:
            self.ready[i] = False
        r0 = reconciles(await self.metrics())
        m0, cpu0 = sum(r0.values()), self.cpu()
        t0 = time.perf_counter()
        run = await run_pool(len(targets), self.args.concurrency, patch, self.budget)
        print(f"  status patches: {run.describe()}")
        secs, polls, _ = await self.converge("after the flips")
        elapsed = time.perf_counter() - t0
        r1 = reconciles(await self.metrics())
        m1, cpu1 = sum(r1.values()), self.cpu()
        by_result = {k: v - r0.get(k, 0.0) for k, v in r1.items() if v - r0.get(k, 0.0)}
        print(f"  pool statuses right {secs:.2f}s after the last patch ({polls} polls)")
        paged = self.res.raw["create"]["list_paged_s"]
        self.res.raw["flip"] = {
            "patches_per_s": run.rate,
            "converge_s": secs,
            "reconciles": by_result,
            "elapsed_s": elapsed,
        }
        self.res.add(
            f"pool status converged after the last of {len(targets)} Ready=False patches",
            secs * 1e3,
            "ms",
            f"devcluster LIST of {self.n} Nodes, pages of {PAGE}",
            paged * 1e3,
            "lower",
        )
        self.res.add(
            "reconciles/s, patches until converged",
            (m1 - m0) / elapsed,
            "/s",
            "devcluster status patches/s",
            run.rate,
            "higher",
        )
        self.res.note(
            f"flip phase: {m1 - m0:.0f} nodepool reconciles {by_result} in {elapsed:.1f}s; "
            f"CPU aggapi {cpu1[0] - cpu0[0]:.1f}s, devcluster {cpu1[1] - cpu0[1]:.1f}s"
        )
        self.res.raw["rss_after_flip"] = proc_status(self.agg_pid, "VmRSS")


def report(res: Results, info: dict[str, str], args: argparse.Namespace) -> None:
    print("\n## Results\n")
    print(
        f"{info['date']} — aggapi {info['aggapi']} — {info['nproc']} CPUs ({info['cpu']}), {info['memory']}"
    )
    print(
        f"sizes: {args.nodes} Nodes, {args.pools} pools, {args.flips} flips, concurrency {args.concurrency}\n"
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
    if res.failures:
        print("\nBROKEN:")
        for f in res.failures:
            print(f"- {f}")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--nodes", type=int, default=5000)
    p.add_argument("--pools", type=int, default=50)
    p.add_argument("--flips", type=int, default=500, help="Nodes flipped to Ready=False")
    p.add_argument("--concurrency", type=int, default=32)
    p.add_argument("--phase-timeout", type=float, default=120, help="seconds any one wait may take")
    p.add_argument("--json", type=Path, help="also write the raw figures here")
    p.add_argument("--keep", action="store_true", help="keep the temp dir (etcd data, logs)")
    p.add_argument("-v", "--verbose", action="store_true")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    raise_nofile()
    info = machine()
    for k, v in info.items():
        print(f"{k:>8}: {v}")
    res = Results()
    tmp = Path(tempfile.mkdtemp(prefix="aggapi-bench-ctl-"))
    etcd: EtcdServer | None = None
    dc: Devcluster | None = None
    env: NPEnv | None = None
    started = time.monotonic()
    try:
        pki = make_pki(tmp / "pki")
        etcd = start_etcd(tmp / "etcd")
        dc = Devcluster(tmp / "devcluster", etcd.client_url)
        dc.start()
        env = start_np_aggapi(etcd, pki, dc, tmp / "np", lease=f"bench-{uuid.uuid4().hex[:8]}")
        print(f"etcd {etcd.client_url}, devcluster {dc.url}, aggapi {env.aggapi.url}, work dir {tmp}")
        asyncio.run(Bench(args, etcd, dc, env, res).run())
    except (Broken, RuntimeError, OSError, TimeoutError, aiohttp.ClientError) as exc:
        res.fail(f"{type(exc).__name__}: {exc}")
        if args.verbose:
            traceback.print_exc()
    finally:
        if env is not None:
            env.aggapi.stop()
        if dc is not None:
            dc.stop()
        if etcd is not None:
            etcd.stop()
    res.raw["total_seconds"] = time.monotonic() - started
    report(res, info, args)
    print(f"\ntotal {res.raw['total_seconds']:.0f}s")
    if args.json:
        out = {
            "machine": info,
            "rows": [r.__dict__ for r in res.rows],
            "raw": res.raw,
            "failures": res.failures,
        }
        args.json.write_text(json.dumps(out, indent=2, default=str))
    if res.failures and env is not None and env.aggapi.log_file.exists():
        tail = env.aggapi.log_file.read_text(errors="replace").splitlines()[-30:]
        print("\naggapi log tail:\n" + "\n".join(tail))
    if args.keep or res.failures:
        print(f"work dir kept: {tmp}")
    else:
        shutil.rmtree(tmp, ignore_errors=True)
    return 1 if res.failures else 0


if __name__ == "__main__":
    sys.exit(main())
