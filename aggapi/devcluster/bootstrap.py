"""What kube-apiserver itself keeps in place: the system namespaces, the `default/kubernetes` Service and
its Endpoints, and `kube-system/extension-apiserver-authentication` with the client and front-proxy
CAs. Reconciled at start and then periodically, so a deleted or edited object comes back."""

from __future__ import annotations

import asyncio
import copy
import logging
from collections.abc import Mapping
from dataclasses import dataclass

from aggapi.auth.authconfig import CONFIGMAP_NAME, CONFIGMAP_NAMESPACE
from aggapi.devcluster.stores import Stores
from aggapi.machinery import apierrors
from aggapi.registry.resource import Obj
from aggapi.registry.store import Store

log = logging.getLogger(__name__)

SYSTEM_NAMESPACES = ("default", "kube-system", "kube-public", "kube-node-lease")


@dataclass(frozen=True, slots=True)
class Published:
    auth_configmap: Mapping[str, str]
    host: str  # where the `kubernetes` Service's endpoints point
    port: int


def _obj(api_version: str, kind: str, name: str, namespace: str = "", **fields: object) -> Obj:
    meta: dict[str, object] = {"name": name}
    if namespace:
        meta["namespace"] = namespace
    return {"apiVersion": api_version, "kind": kind, "metadata": meta, **fields}


async def ensure(store: Store, namespace: str, want: Obj, *, fields: tuple[str, ...] = ()) -> None:
    """Create `want` if missing; if present, make the listed top-level fields equal to `want`'s."""
    name = str(want["metadata"]["name"])
    try:
        current = await store.get(namespace, name)
    except apierrors.StatusError as exc:
        if exc.code != 404:
            raise
        try:
            await store.create(namespace, copy.deepcopy(want))
            log.info("created %s %s", want["kind"], f"{namespace}/{name}" if namespace else name)
        except apierrors.StatusError as exc2:
            if exc2.code != 409:  # created concurrently: fine
                raise
        return
    if all(current.get(f) == want.get(f) for f in fields):
        return

    async def desired(obj: Obj) -> Obj:
        for f in fields:
            obj[f] = copy.deepcopy(want[f])
        return obj

    await store.update(namespace, name, desired)
    log.info("updated %s %s", want["kind"], f"{namespace}/{name}" if namespace else name)


class Bootstrap:
    def __init__(
        self, stores: Stores, published: Published, *, interval: float = 5.0, retry: float = 0.5
    ) -> None:
        self._stores = stores
        self._pub = published
        self._interval = interval
        self._retry = retry
        self.done = asyncio.Event()

    async def reconcile(self) -> None:
        ns = self._stores("", "namespaces")
        for name in SYSTEM_NAMESPACES:
            await ensure(ns, "", _obj("v1", "Namespace", name))
        p = self._pub
        await ensure(
            self._stores("", "configmaps"),
            CONFIGMAP_NAMESPACE,
            _obj("v1", "ConfigMap", CONFIGMAP_NAME, CONFIGMAP_NAMESPACE, data=dict(p.auth_configmap)),
            fields=("data",),
        )
        svc_spec = {
            "type": "ClusterIP",
            "ports": [{"name": "https", "port": 443, "protocol": "TCP", "targetPort": p.port}],
        }
        await ensure(
            self._stores("", "services"),
            "default",
            _obj("v1", "Service", "kubernetes", "default", spec=svc_spec),
        )
        subsets = [
            {"addresses": [{"ip": p.host}], "ports": [{"name": "https", "port": p.port, "protocol": "TCP"}]}
        ]
        await ensure(
            self._stores("", "endpoints"),
            "default",
            _obj("v1", "Endpoints", "kubernetes", "default", subsets=subsets),
            fields=("subsets",),
        )

    async def run(self) -> None:
        while True:
            try:
                await self.reconcile()
                if not self.done.is_set():
                    log.info("published %s/%s and the system namespaces", CONFIGMAP_NAMESPACE, CONFIGMAP_NAME)
                self.done.set()
            except apierrors.StatusError as exc:  # storage still starting: try again soon
                log.warning("bootstrap: %s", exc)
            await asyncio.sleep(self._interval if self.done.is_set() else self._retry)
