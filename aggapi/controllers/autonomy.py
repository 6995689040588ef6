"""The autonomy controller: pods on nodes annotated `node.openyurt.io/autonomy-duration` tolerate the
node lifecycle NoExecute taints (`node.kubernetes.io/not-ready`, `node.kubernetes.io/unreachable`) for that
long ("0": forever), so the taint manager does not evict them while the node is cut off from the cloud.

The annotation is read from the Node, so a pool's `spec.annotations` (pushed onto members by the NodePool
controller) works the same way. Keys on the queue are pods ("namespace/name"); a Node whose annotation
changes queues its pods. Pods come from an informer over all pods, kept slim and indexed by spec.nodeName,
run only while this replica leads.

Kubernetes' pod-update validation allows adding tolerations and changing tolerationSeconds of existing
ones, never removing a toleration. This controller is stricter still: it never gives a toleration without
tolerationSeconds (tolerate forever) a finite value. Hence what it can undo (docs/autonomy.md):

- the original NoExecute tolerations of the two keys are recorded once, in the pod annotation
  `node.openyurt.io/original-tolerations` (`{"tolerations": [...], "added": [keys we added]}`);
- when autonomy is removed, a toleration whose original tolerationSeconds was a number gets it back, as
  long as autonomy left it finite (a duration, not "0");
- tolerations we added stay (recorded under "added"); one made "forever" stays forever.

Writes are JSON merge patches carrying the pod's resourceVersion: a pod that changed meanwhile answers
409 and is retried once the informer has the new version.
"""

from __future__ import annotations

import asyncio
import copy
import json
import logging
import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from aggapi.controllers.controller import Controller, patch_or_requeue
from aggapi.controllers.informer import EventHandler, Informer, InformerConfig, Obj, object_key
from aggapi.controllers.kube import KubeListWatcher, ListWatchConfig
from aggapi.controllers.nodepool import Observer
from aggapi.controllers.nodes import is_edge_node
from aggapi.controllers.workqueue import WorkQueue
from aggapi.machinery.validation import parse_go_duration

log = logging.getLogger(__name__)

AUTONOMY_ANNOTATION = "node.openyurt.io/autonomy-duration"
ORIGINAL_ANNOTATION = "node.openyurt.io/original-tolerations"
NOT_READY = "node.kubernetes.io/not-ready"
UNREACHABLE = "node.kubernetes.io/unreachable"
KEYS = (NOT_READY, UNREACHABLE)
NO_EXECUTE = "NoExecute"
NODE_INDEX = "node"


@dataclass(frozen=True, slots=True)
class Autonomy:
    seconds: int | None  # None: tolerate forever ("0")


class InvalidAutonomy(ValueError):
    """The annotation is not a usable Go duration: pods are left as they are."""


def autonomy_value(node: Obj | None) -> str | None:
    if node is None:
        return None
    value = ((node.get("metadata") or {}).get("annotations") or {}).get(AUTONOMY_ANNOTATION)
    return None if value is None else str(value)


def parse_autonomy(value: str | None) -> Autonomy | None:
    """None without the annotation; raises InvalidAutonomy for a bad or negative duration."""
    if value is None:
        return None
    try:
        seconds = parse_go_duration(value.strip())
    except ValueError as exc:
        raise InvalidAutonomy(str(exc)) from None
    if seconds < 0:
        raise InvalidAutonomy(f"negative duration {value!r}")
    if seconds == 0:
        return Autonomy(None)
    return Autonomy(max(1, math.ceil(seconds)))  # tolerationSeconds is whole seconds; never 0 (= evict now)


FOREVER = Autonomy(None)


def effective_autonomy(node: Obj, *, edge_default: bool) -> Autonomy | None:
    """The tolerations a node's pods get: the annotation's when set; else, with `edge_default`, "forever"
    on edge nodes (the health controller evicts by verdict instead, see docs/health.md); else none.
    Raises InvalidAutonomy for a bad annotation (pods are then left as they are)."""
    autonomy = parse_autonomy(autonomy_value(node))
    if autonomy is None and edge_default and is_edge_node(node):
        return FOREVER
    return autonomy


def _manages(tol: Any, key: str) -> bool:
    return isinstance(tol, dict) and tol.get("key") == key and tol.get("effect") == NO_EXECUTE


def _identity(tol: Obj) -> tuple[str, str, str, str]:
    return (
        str(tol.get("key") or ""),
        str(tol.get("operator") or "Equal"),
        str(tol.get("value") or ""),
        str(tol.get("effect") or ""),
    )


def read_record(pod: Obj) -> Obj | None:
    raw = ((pod.get("metadata") or {}).get("annotations") or {}).get(ORIGINAL_ANNOTATION)
    if not raw:
        return None
    try:
        record = json.loads(raw)
    except ValueError:
        return None
    if not isinstance(record, dict):
        return None
    tols = [t for t in record.get("tolerations") or [] if isinstance(t, dict)]
    added = [str(k) for k in record.get("added") or []]
    return {"tolerations": tols, "added": added}


def _with_seconds(tol: Obj, seconds: Any) -> Obj:
    out = {k: v for k, v in tol.items() if k != "tolerationSeconds"}
    if seconds is not None:
        out["tolerationSeconds"] = seconds
    return out


def apply_autonomy(tols: list[Any], autonomy: Autonomy, record: Obj | None) -> tuple[list[Any], Obj]:
    """The tolerations with autonomy applied, and the (possibly new) record of the originals."""
    if record is None:
        originals = [copy.deepcopy(t) for t in tols if any(_manages(t, k) for k in KEYS)]
        record = {"tolerations": originals, "added": []}
    out = list(tols)
    for key in KEYS:
        matches = [i for i, t in enumerate(out) if _manages(t, key)]
        if not matches:
            new: Obj = {"key": key, "operator": "Exists", "effect": NO_EXECUTE}
            out.append(_with_seconds(new, autonomy.seconds))
            if key not in record["added"]:
                record["added"].append(key)
            continue
        for i in matches:
            if autonomy.seconds is not None and out[i].get("tolerationSeconds") is None:
                continue  # forever already, and a forever toleration cannot be given a finite value
            out[i] = _with_seconds(out[i], autonomy.seconds)
    return out, record


def restore(tols: list[Any], record: Obj) -> list[Any]:
    """The tolerations with the recorded original tolerationSeconds put back where that is allowed."""
    originals = {_identity(t): t.get("tolerationSeconds") for t in record["tolerations"]}
    out = list(tols)
    for i, t in enumerate(out):
        if not any(_manages(t, k) for k in KEYS):
            continue
        ident = _identity(t)
        if ident not in originals:
            continue  # added by us: cannot be removed
        was, now = originals[ident], t.get("tolerationSeconds")
        if was is not None and now is not None and was != now:
            out[i] = _with_seconds(t, was)
    return out


def pod_patch(pod: Obj, autonomy: Autonomy | None) -> Obj | None:
    """The merge patch bringing `pod` in line with its node's autonomy (None: nothing to change)."""
    meta = pod.get("metadata") or {}
    tols = list((pod.get("spec") or {}).get("tolerations") or [])
    record = read_record(pod)
    annotations: Obj = {}
    if autonomy is not None:
        new_tols, new_record = apply_autonomy(tols, autonomy, copy.deepcopy(record))
        if new_record != record:
            annotations[ORIGINAL_ANNOTATION] = json.dumps(new_record, sort_keys=True, separators=(",", ":"))
    elif record is not None:
        new_tols = restore(tols, record)
    else:
        return None
    if new_tols == tols and not annotations:
        return None
    patch_meta: Obj = {"resourceVersion": meta.get("resourceVersion")}
    if annotations:
        patch_meta["annotations"] = annotations
    return {"metadata": patch_meta, "spec": {"tolerations": new_tols}}


def slim_pod(pod: Obj) -> Obj:
    """What the controller keeps of a pod: names, resourceVersion, the record, nodeName, tolerations."""
    meta = pod.get("metadata") or {}
    spec = pod.get("spec") or {}
    keep = {k: meta[k] for k in ("name", "namespace", "uid", "resourceVersion") if k in meta}
    record = (meta.get("annotations") or {}).get(ORIGINAL_ANNOTATION)
    if record is not None:
        keep["annotations"] = {ORIGINAL_ANNOTATION: record}
    out_spec = {k: spec[k] for k in ("nodeName", "tolerations") if k in spec}
    return {"metadata": keep, "spec": out_spec}


def _node_of(pod: Obj) -> list[str]:
    name = (pod.get("spec") or {}).get("nodeName")
    return [str(name)] if name else []


def _name(obj: Obj) -> str:
    return str((obj.get("metadata") or {}).get("name", ""))


@dataclass(frozen=True, slots=True)
class AutonomyControllerConfig:
    workers: int = 4
    request_timeout: float = 10.0
    pods_path: str = "/api/v1/pods"
    # Pods on edge nodes without the annotation tolerate the taints forever (set with --health-eviction).
    edge_default: bool = False


class AutonomyController:
    def __init__(
        self,
        api: Any,
        nodes: Informer,
        *,
        config: AutonomyControllerConfig | None = None,
        observer: Observer | None = None,
    ) -> None:
        self._api = api
        self.nodes = nodes
        self.config = config or AutonomyControllerConfig()
        self._observer = observer
        self._pods: Informer | None = None
        self._queue: WorkQueue | None = None
        self._invalid: dict[str, str] = {}  # node → the bad value last warned about
        self.patches = 0
        nodes.add_handler(EventHandler(on_add=self._node_changed, on_update=self._node_updated))

    # ---- events → keys ------------------------------------------------------------------------------

    def _add_all(self, keys: Iterable[str]) -> None:
        if self._queue is not None:  # not leading: nothing to do
            for key in keys:
                self._queue.add(key)

    def _pods_of(self, node: str) -> list[str]:
        return [] if self._pods is None else [object_key(p) for p in self._pods.by_index(NODE_INDEX, node)]

    def _node_changed(self, node: Obj) -> None:
        self._add_all(self._pods_of(_name(node)))

    def _node_updated(self, old: Obj, new: Obj) -> None:
        if autonomy_value(old) != autonomy_value(new) or (
            self.config.edge_default and is_edge_node(old) != is_edge_node(new)
        ):
            self._node_changed(new)

    def _pod_event(self, pod: Obj) -> None:
        if _node_of(pod):
            self._add_all([object_key(pod)])

    def _pod_handler(self) -> EventHandler:
        return EventHandler(on_add=self._pod_event, on_update=lambda _old, new: self._pod_event(new))

    # ---- leading ------------------------------------------------------------------------------------

    async def lead(self) -> None:
        """Run the pod informer and the workers until cancelled (only while this replica leads)."""
        pods = Informer(
            KubeListWatcher(self._api, ListWatchConfig(self.config.pods_path)),
            InformerConfig("pods"),
            indexers={NODE_INDEX: _node_of},
            transform=slim_pod,
        )
        pods.add_handler(self._pod_handler())
        queue = WorkQueue("autonomy", observer=self._observer)
        ctl = Controller(
            "autonomy", queue, self.reconcile, workers=self.config.workers, observer=self._observer
        )
        self._pods, self._queue = pods, queue
        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(pods.run(), name="autonomy-pod-informer")
                await pods.wait_synced()
                await self.nodes.wait_synced()
                for pod in pods.items():  # a new leader checks every bound pod once
                    self._pod_event(pod)
                tg.create_task(ctl.run(), name="autonomy-workers")
        finally:
            queue.shutdown()
            self._pods = self._queue = None

    def _autonomy(self, node_name: str, node: Obj) -> Autonomy | None:
        value = autonomy_value(node)
        try:
            result = effective_autonomy(node, edge_default=self.config.edge_default)
        except InvalidAutonomy as exc:
            if self._invalid.get(node_name) != value:
                self._invalid[node_name] = value or ""
                log.warning(
                    "node %s: ignoring %s=%r (%s); its pods are left as they are",
                    node_name,
                    AUTONOMY_ANNOTATION,
                    value,
                    exc,
                )
            raise
        self._invalid.pop(node_name, None)
        return result

    async def reconcile(self, key: str) -> None:
        pods = self._pods
        pod = pods.get(key) if pods is not None else None
        if pod is None or not _node_of(pod):
            return
        node_name = _node_of(pod)[0]
        node = self.nodes.get(node_name)
        if node is None:
            return  # a deleted node's pods are garbage-collected by kube: nothing to tolerate
        try:
            autonomy = self._autonomy(node_name, node)
        except InvalidAutonomy:
            return
        patch = pod_patch(pod, autonomy)
        if patch is None:
            return
        ns, name = (pod.get("metadata") or {}).get("namespace") or "", _name(pod)
        path = f"/api/v1/namespaces/{ns}/pods/{name}"
        if not await patch_or_requeue(
            self._api, path, patch, f"pod {key}", timeout=self.config.request_timeout
        ):
            return
        self.patches += 1
        what = "restored" if autonomy is None else "applied"
        log.info("pod %s on node %s: autonomy tolerations %s", key, node_name, what)
