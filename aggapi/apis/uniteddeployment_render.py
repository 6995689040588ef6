"""What a UnitedDeployment asks for in one pool: the pure computation shared by the API (a dry run of the
tweaks when a UnitedDeployment is written) and the controller (the workload it creates or updates).

A pool's workload is the template, then the tweaks that select the pool in list order (replicas, container
images, JSON patches), then what the controller always sets (name, namespace, pool labels, selector,
nodeSelector, the pool's tolerations, revisionHistoryLimit if the template has none). Setting those last
means a patch cannot take a workload out of its pool or out of the UnitedDeployment's selector.
"""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from aggapi.machinery.labels import SelectorError, selector_from_object
from aggapi.machinery.patch import PatchError, json_patch

Obj = dict[str, Any]

NODEPOOL_LABEL = "apps.openyurt.io/nodepool"  # node membership: the workload's nodeSelector
POOL_NAME_LABEL = "apps.openyurt.io/pool-name"  # on workloads and their pods
REVISION_LABEL = "apps.openyurt.io/revision"  # on workloads only (a pod label would restart pods on scale)
UD_LABEL = "edge.aggapi.io/uniteddeployment"  # the owning UnitedDeployment's name, for `kubectl get -l`

DEPLOYMENT, STATEFULSET = "Deployment", "StatefulSet"
TEMPLATE_FIELDS = {DEPLOYMENT: "deploymentTemplate", STATEFULSET: "statefulSetTemplate"}
RESOURCES = {DEPLOYMENT: "deployments", STATEFULSET: "statefulsets"}
DEFAULT_HISTORY = 10


class RenderError(ValueError):
    """A tweak cannot be applied (a patch path that does not exist, ...); str() says which."""


@dataclass(frozen=True, slots=True)
class Pool:
    """What a workload needs to know of a NodePool."""

    name: str
    labels: Mapping[str, str]
    taints: tuple[Mapping[str, Any], ...] = ()

    @staticmethod
    def of(obj: Obj) -> Pool:
        meta, spec = obj.get("metadata") or {}, obj.get("spec") or {}
        taints = tuple(t for t in spec.get("taints") or [] if isinstance(t, dict))
        return Pool(str(meta.get("name", "")), dict(meta.get("labels") or {}), taints)


@dataclass(frozen=True, slots=True)
class Rendered:
    kind: str  # Deployment | StatefulSet
    name: str
    pool: str
    obj: Obj  # apps/v1 object, without ownerReferences
    revision: str  # also in obj's metadata.labels[REVISION_LABEL]
    replicas: int


def template_of(spec: Mapping[str, Any]) -> tuple[str, Obj]:
    """(kind, template) of spec.workloadTemplate; ("", {}) when neither is set."""
    wt = spec.get("workloadTemplate") or {}
    if not isinstance(wt, dict):
        return "", {}
    for kind, field in TEMPLATE_FIELDS.items():
        tpl = wt.get(field)
        if isinstance(tpl, dict):
            return kind, tpl
    return "", {}


def workload_name(ud_name: str, pool: str) -> str:
    return f"{ud_name}-{pool}"


def short_hash(value: Any) -> str:
    """10 hex digits of the SHA-256 of canonical JSON: stable across replicas and restarts."""
    raw = json.dumps(value, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(raw).hexdigest()[:10]


def update_revision(spec: Mapping[str, Any]) -> str:
    """The UnitedDeployment-wide revision: everything in spec that shapes workloads, pools aside."""
    keys = ("workloadTemplate", "workloadTweaks", "selector", "revisionHistoryLimit")
    return short_hash({k: spec.get(k) for k in keys})


def _selects(selector: Any, labels: Mapping[str, str]) -> bool:
    if not isinstance(selector, dict):
        return False
    try:
        return selector_from_object(selector).matches(labels)
    except SelectorError:
        return False


def targets(spec: Mapping[str, Any], pools: Iterable[Pool]) -> list[Pool]:
    """Existing pools named in spec.pools or matched by spec.nodepoolSelector, sorted by name."""
    names = {str(p) for p in spec.get("pools") or []}
    selector = spec.get("nodepoolSelector")
    picked = [p for p in pools if p.name in names or (selector is not None and _selects(selector, p.labels))]
    return sorted(picked, key=lambda p: p.name)


def tweak_applies(tweak: Mapping[str, Any], pool: Pool) -> bool:
    return pool.name in (tweak.get("pools") or []) or (
        tweak.get("nodepoolSelector") is not None and _selects(tweak.get("nodepoolSelector"), pool.labels)
    )


def tolerations_for(taints: Iterable[Mapping[str, Any]]) -> list[Obj]:
    """A toleration per pool taint (same key, value and effect), so pods may run on the pool's nodes."""
    out = []
    for t in taints:
        tol: Obj = {"key": t.get("key"), "effect": t.get("effect")}
        if t.get("value"):
            tol.update(operator="Equal", value=t["value"])
        else:
            tol["operator"] = "Exists"
        out.append(tol)
    return out


def pod_containers(obj: Obj) -> list[Obj]:
    """The init and app containers of a workload object's pod template."""
    pod = ((obj.get("spec") or {}).get("template") or {}).get("spec") or {}
    return [c for f in ("initContainers", "containers") for c in pod.get(f) or [] if isinstance(c, dict)]


def apply_tweak(obj: Obj, tweak: Mapping[str, Any]) -> Obj:
    """One tweak on a rendered workload (a copy is returned); RenderError when it cannot be applied."""
    obj = copy.deepcopy(obj)
    spec = obj.setdefault("spec", {})
    if tweak.get("replicas") is not None:
        spec["replicas"] = tweak["replicas"]
    for i, ci in enumerate(tweak.get("containerImages") or []):
        hits = [c for c in pod_containers(obj) if c.get("name") == ci.get("name")]
        if not hits:
            raise RenderError(f"containerImages[{i}]: the template has no container {ci.get('name')!r}")
        for c in hits:
            c["image"] = ci.get("image")
    if tweak.get("patches"):
        try:
            obj = json_patch(obj, tweak["patches"])
        except PatchError as exc:
            raise RenderError(f"patches: {exc}") from None
        if not isinstance(obj, dict):
            raise RenderError("patches: the result is not an object")
    return obj


def base_object(ud: Obj) -> tuple[str, Obj]:
    """The template as an apps/v1 object (kind, object) before tweaks."""
    kind, tpl = template_of(ud.get("spec") or {})
    tmeta = tpl.get("metadata") or {}
    obj: Obj = {
        "apiVersion": "apps/v1",
        "kind": kind,
        "metadata": {
            "labels": dict(tmeta.get("labels") or {}),
            "annotations": dict(tmeta.get("annotations") or {}),
        },
        "spec": copy.deepcopy(tpl.get("spec") or {}),
    }
    obj["spec"].setdefault("replicas", 1)
    return kind, obj


def _set_pool(obj: Obj, ud: Obj, pool: Pool) -> None:
    """What the controller owns in every workload, set after the tweaks."""
    meta, spec = obj.setdefault("metadata", {}), obj.setdefault("spec", {})
    ud_meta, ud_spec = ud.get("metadata") or {}, ud.get("spec") or {}
    if not isinstance(meta.get("labels"), dict):
        meta["labels"] = {}
    meta["labels"].update({POOL_NAME_LABEL: pool.name, UD_LABEL: str(ud_meta.get("name", ""))})
    meta["labels"].pop(REVISION_LABEL, None)
    if not meta.get("annotations"):
        meta.pop("annotations", None)
    selector = copy.deepcopy(ud_spec.get("selector") or {})
    selector.setdefault("matchLabels", {})[POOL_NAME_LABEL] = pool.name
    spec["selector"] = selector
    template = spec.setdefault("template", {})
    tmeta = template.setdefault("metadata", {})
    if not isinstance(tmeta.get("labels"), dict):
        tmeta["labels"] = {}
    tmeta["labels"][POOL_NAME_LABEL] = pool.name
    pod = template.setdefault("spec", {})
    if not isinstance(pod.get("nodeSelector"), dict):
        pod["nodeSelector"] = {}
    pod["nodeSelector"][NODEPOOL_LABEL] = pool.name
    tolerations = [t for t in pod.get("tolerations") or [] if isinstance(t, dict)]
    tolerations += [t for t in tolerations_for(pool.taints) if t not in tolerations]
    if tolerations:
        pod["tolerations"] = tolerations
    if "revisionHistoryLimit" not in spec:
        spec["revisionHistoryLimit"] = ud_spec.get("revisionHistoryLimit", DEFAULT_HISTORY)


def render(ud: Obj, pool: Pool) -> Rendered:
    """The workload `ud` wants in `pool`; RenderError when one of its tweaks cannot be applied."""
    meta, spec = ud.get("metadata") or {}, ud.get("spec") or {}
    kind, obj = base_object(ud)
    if not kind:
        raise RenderError("spec.workloadTemplate has neither deploymentTemplate nor statefulSetTemplate")
    for i, tweak in enumerate(spec.get("workloadTweaks") or []):
        if isinstance(tweak, dict) and tweak_applies(tweak, pool):
            try:
                obj = apply_tweak(obj, tweak)
            except RenderError as exc:
                raise RenderError(f"spec.workloadTweaks[{i}].{exc}") from None
    obj["apiVersion"], obj["kind"] = "apps/v1", kind
    name = workload_name(str(meta.get("name", "")), pool.name)
    obj["metadata"] = {
        **{k: v for k, v in (obj.get("metadata") or {}).items() if k in ("labels", "annotations")},
        "name": name,
        "namespace": str(meta.get("namespace", "")),
    }
    _set_pool(obj, ud, pool)
    replicas = obj["spec"].get("replicas")
    if not isinstance(replicas, int) or isinstance(replicas, bool) or replicas < 0:
        raise RenderError(f"spec.replicas of the {kind} must be a non-negative integer, got {replicas!r}")
    # Scaling is not a new revision (as with kube's Deployments): replicas stay out of the hash.
    revision = short_hash({**obj, "spec": {k: v for k, v in obj["spec"].items() if k != "replicas"}})
    obj["metadata"]["labels"][REVISION_LABEL] = revision
    return Rendered(kind, name, pool.name, obj, revision, replicas)
