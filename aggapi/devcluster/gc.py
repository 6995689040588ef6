"""A garbage-collector stand-in (kube-controller-manager's pkg/controller/garbagecollector), so that
objects owned through `metadata.ownerReferences` go away with their owners in the lab and in tests,
including owners served by aggregated APIs (a UnitedDeployment owns its per-pool Deployments).

Every `period`, each object of the dependent kinds the devcluster stores (deployments, statefulsets,
daemonsets, pods) that has ownerReferences and no deletionTimestamp is checked. Its owners are resolved
by the route kube's GC takes, as a client of the API: discovery of the reference's apiVersion gives the
resource for its kind (and whether it is namespaced), then a GET by name — through the devcluster's own
aggregation for aggregated groups. An owner is absent when the GET answers NotFound for that name, or
finds an object with another uid. When every owner is absent, the dependent is deleted (background
propagation, with uid and resourceVersion preconditions). Anything undecided (discovery fails, the kind
is not served, the aggregated server is unavailable) keeps the dependent, as kube's GC does.

Not done (docs/devcluster.md): foreground deletion and orphaning (the `foregroundDeletion` and `orphan`
finalizers of owners are never processed), removing dangling references from dependents that still
have a live owner, blockOwnerDeletion, watches (it polls), and dependents of other kinds.
"""

from __future__ import annotations

import asyncio
import json
import logging
import ssl
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from aggapi.devcluster.pki import DevclusterPKI
from aggapi.devcluster.stores import Stores
from aggapi.machinery import apierrors
from aggapi.registry.resource import Obj
from aggapi.storage.interface import ListOptions, Preconditions

log = logging.getLogger(__name__)

DEPENDENTS = (("apps", "deployments"), ("apps", "statefulsets"), ("apps", "daemonsets"), ("", "pods"))


class Undecided(Exception):
    """Whether an owner exists cannot be told now: keep the dependent and look again next round."""


def client_tls(pki: DevclusterPKI) -> ssl.SSLContext:
    """The devcluster's admin client certificate (system:masters), trusted like any kubeconfig: kube's GC
    may get and list every resource, and so may this."""
    ctx = ssl.create_default_context(cafile=str(pki.ca))
    ctx.load_cert_chain(str(pki.admin_cert), str(pki.admin_key))
    return ctx


def _prefix(api_version: str) -> str:
    return "/api/v1" if api_version == "v1" else f"/apis/{api_version}"


@dataclass(slots=True)
class OwnerLookup:
    """Owner existence over HTTP, remembered for one sweep."""

    session: aiohttp.ClientSession
    base: str
    timeout: float
    _resources: dict[str, dict[str, tuple[str, bool]] | None] = field(default_factory=dict)
    _owners: dict[tuple[str, ...], bool] = field(default_factory=dict)

    async def _get(self, path: str) -> tuple[int, Obj]:
        try:
            async with asyncio.timeout(self.timeout), self.session.get(self.base + path) as resp:
                text = await resp.text()
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            raise Undecided(f"GET {path}: {exc or type(exc).__name__}") from None
        try:
            body: Any = json.loads(text) if text.strip() else {}
        except ValueError:
            body = {"message": text.strip()[:200]}
        return resp.status, body if isinstance(body, dict) else {}

    async def _resource(self, api_version: str, kind: str) -> tuple[str, bool]:
        """(resource, namespaced) for a kind, from discovery of its group-version."""
        if api_version not in self._resources:
            code, body = await self._get(_prefix(api_version))
            if code == 404:
                self._resources[api_version] = None
            elif code != 200:
                raise Undecided(f"discovery of {api_version}: {code}")
            else:
                self._resources[api_version] = {
                    str(r.get("kind")): (str(r.get("name")), bool(r.get("namespaced")))
                    for r in body.get("resources") or []
                    if isinstance(r, dict) and "/" not in str(r.get("name", ""))
                }
        kinds = self._resources[api_version]
        if kinds is None or kind not in kinds:
            raise Undecided(f"{kind} in {api_version} is not served")
        return kinds[kind]

    async def exists(self, ref: Obj, namespace: str) -> bool:
        api_version, kind, name, uid = (str(ref.get(k, "")) for k in ("apiVersion", "kind", "name", "uid"))
        ident = (api_version, kind, namespace, name, uid)
        if ident not in self._owners:
            resource, namespaced = await self._resource(api_version, kind)
            if namespaced and not namespace:
                raise Undecided(f"namespaced owner {kind} {name} of a cluster-scoped object")
            where = f"/namespaces/{namespace}" if namespaced else ""
            code, body = await self._get(f"{_prefix(api_version)}{where}/{resource}/{name}")
            if code == 200:
                self._owners[ident] = ((body.get("metadata") or {}).get("uid")) == uid
            elif code == 404 and body.get("reason") == "NotFound":  # the object, not a route, is missing
                self._owners[ident] = False
            else:
                raise Undecided(f"GET {kind} {name}: {code} {body.get('message', '')}")
        return self._owners[ident]


class GarbageCollector:
    def __init__(
        self,
        stores: Stores,
        base_url: str,
        tls: ssl.SSLContext,
        *,
        period: float = 1.0,
        timeout: float = 5.0,
    ) -> None:
        self._stores = stores
        self._base = base_url.rstrip("/")
        self._tls = tls
        self.period = period
        self.timeout = timeout
        self.deleted = 0

    async def run(self) -> None:
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=self._tls)) as session:
            while True:
                try:
                    await self.sweep(session)
                except (apierrors.StatusError, RuntimeError) as exc:  # storage still starting: next round
                    log.warning("garbage collector: %s", exc)
                await asyncio.sleep(self.period)

    async def sweep(self, session: aiohttp.ClientSession) -> None:
        lookup = OwnerLookup(session, self._base, self.timeout)
        for group, resource in DEPENDENTS:
            store = self._stores(group, resource)
            for obj in (await store.list("", ListOptions())).items:
                meta = obj.get("metadata") or {}
                refs = [r for r in meta.get("ownerReferences") or [] if isinstance(r, dict)]
                if not refs or meta.get("deletionTimestamp"):
                    continue
                ns = str(meta.get("namespace") or "")
                try:
                    alive = [await lookup.exists(r, ns) for r in refs]
                except Undecided as exc:
                    log.debug("garbage collector: %s %s/%s kept: %s", resource, ns, meta.get("name"), exc)
                    continue
                if not any(alive):
                    await self._delete(group, resource, obj, refs)

    async def _delete(self, group: str, resource: str, obj: Obj, refs: list[Obj]) -> None:
        meta = obj["metadata"]
        ns, name = str(meta.get("namespace") or ""), str(meta["name"])
        owners = ", ".join(f"{r.get('kind')} {r.get('name')} (uid {r.get('uid')})" for r in refs)
        pre = Preconditions(uid=meta.get("uid"), resource_version=meta.get("resourceVersion"))
        try:
            await self._stores(group, resource).delete(ns, name, preconditions=pre, propagation="Background")
        except apierrors.StatusError as exc:
            if exc.code not in (404, 409):  # gone, or changed since it was listed: next round decides
                raise
            return
        self.deleted += 1
        log.info("garbage collector: deleted %s %s/%s: its owners are gone: %s", resource, ns, name, owners)
