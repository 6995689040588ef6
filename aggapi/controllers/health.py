"""The health eviction controller: evicts the pods of an edge node whose peer-vote verdict has been
Unhealthy continuously for the grace period, through kube's Eviction API (PodDisruptionBudgets apply).

Pods on edge nodes tolerate the not-ready/unreachable NoExecute taints forever (the autonomy controller
applies that default, see autonomy.effective_autonomy), so a lost heartbeat alone never evicts them; this
controller is what evicts instead, and only on a verdict of Unhealthy (never Unknown or Healthy).

The node's autonomy annotation still counts: "0" never evicts; a finite duration D evicts only after
max(grace, D); an unusable value never evicts. How long a node has been Unhealthy is measured here, by
the leader, from when it first saw the verdict (a new leader starts counting afresh: errs towards later).

Keys on the queue are node names. A tick (every `interval`) reads each edge node's verdict and queues
the nodes that are due; a node whose evictions were refused (429: a budget allows no disruption) is
retried with the queue's backoff, not at every tick. Pods come from an informer indexed by spec.nodeName,
run only while this replica leads.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aggapi.apis.edgenode import UNHEALTHY
from aggapi.controllers.autonomy import InvalidAutonomy, autonomy_value, parse_autonomy
from aggapi.controllers.controller import Controller, Requeue
from aggapi.controllers.informer import Informer, InformerConfig, Obj, object_key
from aggapi.controllers.kube import KubeListWatcher, ListWatchConfig
from aggapi.controllers.kubejson import KubeUnavailable, kube_request
from aggapi.controllers.nodepool import Observer
from aggapi.controllers.nodes import is_edge_node
from aggapi.controllers.workqueue import Backoff, WorkQueue

log = logging.getLogger(__name__)

NODE_INDEX = "node"
DEFAULT_GRACE = 300.0
RETRY = Backoff(base=1.0, cap=60.0)


@dataclass(frozen=True, slots=True)
class HealthEvictionConfig:
    grace_period: float = DEFAULT_GRACE
    interval: float = 1.0  # how often verdicts are read (the health service recomputes them every 1 s)
    workers: int = 2
    request_timeout: float = 10.0
    retry: Backoff = RETRY  # after a 429 from a disruption budget
    pods_path: str = "/api/v1/pods"


def eviction_delay(node: Obj, grace: float) -> float | None:
    """How long the node must be Unhealthy before its pods are evicted; None: never."""
    try:
        autonomy = parse_autonomy(autonomy_value(node))
    except InvalidAutonomy:
        return None  # like the autonomy controller: a typo must not make pods evictable
    if autonomy is None:
        return grace
    if autonomy.seconds is None:
        return None  # "0": never evict
    return max(grace, float(autonomy.seconds))


def slim_pod(pod: Obj) -> Obj:
    meta = pod.get("metadata") or {}
    keep = {k: meta[k] for k in ("name", "namespace", "uid", "deletionTimestamp") if k in meta}
    node = (pod.get("spec") or {}).get("nodeName")
    return {"metadata": keep, "spec": {"nodeName": node} if node else {}}


def _node_of(pod: Obj) -> list[str]:
    name = (pod.get("spec") or {}).get("nodeName")
    return [str(name)] if name else []


def _name(obj: Obj) -> str:
    return str((obj.get("metadata") or {}).get("name", ""))


class HealthEvictionController:
    def __init__(
        self,
        api: Any,
        nodes: Informer,
        verdicts: Callable[[str], str],
        *,
        config: HealthEvictionConfig | None = None,
        observer: Observer | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._api = api
        self.nodes = nodes
        self._verdicts = verdicts
        self.config = config or HealthEvictionConfig()
        self._observer = observer
        self._clock = clock
        self._sleep = sleep
        self._unhealthy_since: dict[str, float] = {}
        self._pods: Informer | None = None
        self._queue: WorkQueue | None = None
        self.evictions = 0
        self.refused = 0  # 429 answers (a disruption budget allows no disruption now)

    # ---- verdicts → keys ----------------------------------------------------------------------------

    def due(self, node: Obj) -> bool:
        """Unhealthy (continuously, as far as this controller saw) for at least the node's delay."""
        since = self._unhealthy_since.get(_name(node))
        delay = eviction_delay(node, self.config.grace_period)
        return since is not None and delay is not None and self._clock() - since >= delay

    def tick(self) -> list[str]:
        """Track every edge node's verdict; queue the due nodes not waiting for a retry. Returns them."""
        now = self._clock()
        seen: set[str] = set()
        queued = []
        for node in self.nodes.items():
            if not is_edge_node(node):
                continue
            name = _name(node)
            if self._verdicts(name) != UNHEALTHY:
                continue
            seen.add(name)
            if self._unhealthy_since.setdefault(name, now) == now:
                log.info("node %s: verdict Unhealthy; its pods are evicted if it lasts", name)
            queue = self._queue
            if queue is not None and self.due(node) and queue.requeues(name) == 0:
                queue.add(name)
                queued.append(name)
        for gone in set(self._unhealthy_since) - seen:
            del self._unhealthy_since[gone]
        return queued

    # ---- leading ------------------------------------------------------------------------------------

    async def lead(self) -> None:
        """Run the pod informer, the workers and the verdict ticks until cancelled (while leading)."""
        pods = Informer(
            KubeListWatcher(self._api, ListWatchConfig(self.config.pods_path)),
            InformerConfig("health-pods"),
            indexers={NODE_INDEX: _node_of},
            transform=slim_pod,
        )
        queue = WorkQueue("health-eviction", backoff=self.config.retry, observer=self._observer)
        ctl = Controller(
            "health-eviction", queue, self.reconcile, workers=self.config.workers, observer=self._observer
        )
        self._pods, self._queue = pods, queue
        self._unhealthy_since.clear()  # a new leader counts afresh
        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(pods.run(), name="health-pod-informer")
                await pods.wait_synced()
                await self.nodes.wait_synced()
                tg.create_task(ctl.run(), name="health-eviction-workers")
                while True:
                    self.tick()
                    await self._sleep(self.config.interval)
        finally:
            queue.shutdown()
            self._pods = self._queue = None

    async def reconcile(self, name: str) -> None:
        node = self.nodes.get(name)
        pods = self._pods
        if node is None or pods is None or self._verdicts(name) != UNHEALTHY or not self.due(node):
            return  # recovered (or gone) meanwhile: evict nothing
        refused = []
        for pod in pods.by_index(NODE_INDEX, name):
            if (pod.get("metadata") or {}).get("deletionTimestamp"):
                continue
            if not await self._evict(pod, name):
                refused.append(object_key(pod))
        if refused:
            raise Requeue(f"node {name}: eviction of {', '.join(refused)} refused by a disruption budget")

    async def _evict(self, pod: Obj, node: str) -> bool:
        """True when the pod is evicted (or gone); False on 429."""
        meta = pod.get("metadata") or {}
        ns, name = str(meta.get("namespace") or ""), _name(pod)
        body: Obj = {
            "apiVersion": "policy/v1",
            "kind": "Eviction",
            "metadata": {"name": name, "namespace": ns},
        }
        if meta.get("uid"):
            body["deleteOptions"] = {"preconditions": {"uid": meta["uid"]}}
        try:
            ans = await kube_request(
                self._api,
                "POST",
                f"/api/v1/namespaces/{ns}/pods/{name}/eviction",
                body,
                timeout=self.config.request_timeout,
            )
        except KubeUnavailable as exc:
            raise Requeue(str(exc)) from exc
        if ans.status == 429:
            self.refused += 1
            log.warning(
                "node %s is Unhealthy: eviction of pod %s/%s refused (429 %s); retrying later",
                node,
                ns,
                name,
                ans.message,
            )
            return False
        if ans.status in (404, 409):
            return True  # gone, or replaced by a new pod of the same name (uid precondition)
        if not ans.ok:
            raise RuntimeError(f"evicting pod {ns}/{name}: {ans.status} {ans.message}")
        self.evictions += 1
        log.warning("node %s is Unhealthy: evicted pod %s/%s", node, ns, name)
        return True
