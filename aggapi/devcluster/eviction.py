"""pods/eviction: kube's Eviction API (`POST /api/v1/namespaces/{ns}/pods/{name}/eviction`, a policy/v1
Eviction), which deletes a pod unless a PodDisruptionBudget forbids it.

As kube does: the Eviction's name must be the pod's (400); a pod already being deleted, or Pending,
Succeeded or Failed, is deleted without looking at budgets; a pod matched by more than one budget is
refused (500); a budget that allows no disruption answers 429 TooManyRequests with a Status; otherwise
the pod is deleted (with the Eviction's deleteOptions) and 201 answers a Success Status.

Simplification (the devcluster runs no disruption controller): a budget's disruptionsAllowed is computed
on the spot, not read from its status. Over the pods of the namespace its selector matches: expected =
all of them, healthy = those not being deleted (no readiness check); with minAvailable (number or
percentage of expected, rounded up) allowed = healthy - minAvailable; with maxUnavailable allowed =
maxUnavailable - (expected - healthy); with neither, allowed = healthy. Evictions are serialized per
namespace so that two cannot both spend the last allowed disruption; the budget's status is not written.
"""

from __future__ import annotations

import asyncio
import math
from typing import Any

from aiohttp import web

from aggapi.http import body as bodies
from aggapi.http import options
from aggapi.http.handlers import ResourceHandler, respond
from aggapi.http.requestinfo import RequestInfo
from aggapi.machinery import apierrors
from aggapi.machinery.labels import SelectorError, selector_from_object
from aggapi.registry.resource import Obj
from aggapi.storage.interface import ListOptions

IGNORE_BUDGET_PHASES = ("Pending", "Succeeded", "Failed")


def _deleting(pod: Obj) -> bool:
    return bool((pod.get("metadata") or {}).get("deletionTimestamp"))


def _matches(pdb: Obj, pod: Obj) -> bool:
    sel = (pdb.get("spec") or {}).get("selector")
    if not isinstance(sel, dict):
        return False  # a nil selector matches no pod (policy/v1)
    try:
        return selector_from_object(sel).matches((pod.get("metadata") or {}).get("labels") or {})
    except SelectorError:
        return False


def _count(value: Any, expected: int) -> int:
    """An IntOrString against `expected` ("50%" rounds up, as the disruption controller does)."""
    if isinstance(value, str) and value.endswith("%"):
        try:
            return math.ceil(int(value[:-1]) * expected / 100)
        except ValueError:
            raise apierrors.internal(f"invalid percentage {value!r} in a PodDisruptionBudget") from None
    try:
        return int(value)
    except (TypeError, ValueError):
        raise apierrors.internal(f"invalid value {value!r} in a PodDisruptionBudget") from None


def disruptions_allowed(pdb: Obj, pods: list[Obj]) -> int:
    """What status.disruptionsAllowed would say (see the module docstring)."""
    spec = pdb.get("spec") or {}
    matching = [p for p in pods if _matches(pdb, p)]
    expected = len(matching)
    healthy = sum(1 for p in matching if not _deleting(p))
    if spec.get("minAvailable") is not None:
        return max(0, healthy - _count(spec["minAvailable"], expected))
    if spec.get("maxUnavailable") is not None:
        return max(0, _count(spec["maxUnavailable"], expected) - (expected - healthy))
    return healthy


def install_eviction(pods: ResourceHandler, pdbs: ResourceHandler) -> None:
    locks: dict[str, asyncio.Lock] = {}

    async def eviction(request: web.Request, info: RequestInfo) -> web.StreamResponse:
        if request.method != "POST":
            raise apierrors.method_not_allowed(request.method, "pods/eviction")
        doc: Any = bodies.parse_document(
            await bodies.read_body(request), request.headers.get("Content-Type", "")
        )
        if not isinstance(doc, dict) or doc.get("kind", "Eviction") != "Eviction":
            raise apierrors.bad_request("the body must be a policy/v1 Eviction")
        name = (doc.get("metadata") or {}).get("name")
        if name != info.name:
            raise apierrors.bad_request("name in URL does not match name in Eviction object")
        delete_opts = doc.get("deleteOptions") or {}
        pre, policy, dry = options.delete_options(request.query, delete_opts)
        lock = locks.setdefault(info.namespace, asyncio.Lock())
        async with lock:
            pod = await pods.store.get(info.namespace, info.name)
            phase = (pod.get("status") or {}).get("phase")
            if not _deleting(pod) and phase not in IGNORE_BUDGET_PHASES:
                budgets = (await pdbs.store.list(info.namespace, ListOptions())).items
                mine = [b for b in budgets if _matches(b, pod)]
                if len(mine) > 1:
                    raise apierrors.internal(
                        "This pod has more than one PodDisruptionBudget, which the eviction subresource "
                        "does not support."
                    )
                if mine:
                    listed = (await pods.store.list(info.namespace, ListOptions())).items
                    pdb_name = str((mine[0].get("metadata") or {}).get("name", ""))
                    if disruptions_allowed(mine[0], listed) <= 0:
                        err = apierrors.too_many_requests(
                            "Cannot evict pod as it would violate the pod's disruption budget.", retry_after=0
                        )
                        err.causes = [
                            apierrors.Cause(
                                "DisruptionBudget",
                                f"The disruption budget {pdb_name} needs more healthy pods to allow "
                                "this eviction",
                            )
                        ]
                        raise err
            await pods.store.delete(
                info.namespace, info.name, preconditions=pre, propagation=policy, dry_run=dry
            )
        return respond(
            {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201},
            status=201,
        )

    pods.add_subresource("eviction", eviction)
