"""The generic registry Store: kube's genericregistry.Store for any ResourceDef. It never names a kind."""

from __future__ import annotations

import contextlib
import copy
import uuid
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from aggapi.machinery import apierrors
from aggapi.machinery.timefmt import format_rfc3339
from aggapi.registry.meta import generate_name, spec_changed, validate_meta, validate_meta_update
from aggapi.registry.resource import AdmitDelete, FieldError, Obj, ResourceDef, Strategy
from aggapi.registry.schema import with_schema_errors
from aggapi.storage import errors
from aggapi.storage.interface import ListOptions, ListResult, Preconditions, Storage, Watch, WatchOptions

ObjList = list[Obj]

# An update function receives a private copy of the current object and returns the desired one.
ObjectUpdate = Callable[[Obj], Awaitable[Obj]]

MODIFIED_MSG = "the object has been modified; please apply your changes to the latest version and try again"


def utcnow() -> datetime:
    return datetime.now(UTC)


class Store:
    def __init__(
        self,
        rdef: ResourceDef,
        storage: Storage,
        *,
        prefix: str = "/registry",
        clock: Callable[[], datetime] = utcnow,
        admit_delete: AdmitDelete | None = None,
    ) -> None:
        self.rdef = rdef
        self.admit_delete = admit_delete
        self.storage = storage
        self.root = f"{prefix.rstrip('/')}/{rdef.group}/{rdef.resource}/"
        self.clock = clock

    # ---- keys and errors --------------------------------------------------------------------------

    def key(self, namespace: str, name: str) -> str:
        if not name or "/" in name or name in (".", ".."):
            raise apierrors.bad_request(f'invalid resource name "{name}"')
        return f"{self.root}{namespace}/{name}" if self.rdef.namespaced else f"{self.root}{name}"

    def list_prefix(self, namespace: str) -> str:
        return f"{self.root}{namespace}/" if self.rdef.namespaced and namespace else self.root

    @contextmanager
    def _errors(self, name: str = "") -> Iterator[None]:
        """Storage errors become the API errors kube-apiserver answers with (storeerr.Interpret*)."""
        g, r = self.rdef.group, self.rdef.resource
        try:
            yield
        except errors.KeyNotFound:
            raise apierrors.not_found(g, r, name) from None
        except errors.KeyExists:
            raise apierrors.already_exists(g, r, name) from None
        except (errors.Conflict, errors.PreconditionFailed) as exc:
            raise apierrors.conflict(g, r, name, str(exc)) from None
        except errors.Expired as exc:
            raise apierrors.gone(str(exc)) from None
        except errors.TooLargeResourceVersion as exc:
            err = apierrors.timeout(f"Too large resource version: {exc.requested}, current: {exc.current}")
            err.causes.append(apierrors.Cause("ResourceVersionTooLarge", "Too large resource version"))
            raise err from None
        except errors.InvalidContinue as exc:
            raise apierrors.bad_request(str(exc)) from None
        except errors.Unavailable as exc:
            raise apierrors.service_unavailable(f"storage is unavailable: {exc}") from None

    def _invalid(self, name: str, errs: list[FieldError]) -> apierrors.StatusError:
        causes = [apierrors.Cause(e.reason, e.message, e.field) for e in errs]
        return apierrors.invalid(self.rdef.group, self.rdef.kind, name, causes)

    def _strategy(self, subresource: str) -> Strategy:
        if subresource == "status" and self.rdef.status_strategy is not None:
            return self.rdef.status_strategy
        return self.rdef.strategy

    # ---- reads ------------------------------------------------------------------------------------

    async def get(self, namespace: str, name: str, *, resource_version: str = "") -> Obj:
        with self._errors(name):
            return await self.storage.get(self.key(namespace, name), resource_version=resource_version)

    async def list(self, namespace: str, opts: ListOptions) -> ListResult:
        with self._errors():
            return await self.storage.get_list(self.list_prefix(namespace), opts)

    async def watch(self, namespace: str, opts: WatchOptions) -> Watch:
        with self._errors():
            return await self.storage.watch(self.list_prefix(namespace), opts)

    # ---- create -----------------------------------------------------------------------------------

    async def create(self, namespace: str, obj: Obj, *, dry_run: bool = False) -> Obj:
        meta = obj.setdefault("metadata", {})
        if not isinstance(meta, dict):
            raise apierrors.bad_request("metadata must be an object")
        if meta.get("resourceVersion"):
            raise apierrors.bad_request("resourceVersion should not be set on objects to be created")
        self._set_namespace(meta, namespace)
        if not meta.get("name") and meta.get("generateName"):
            meta["name"] = generate_name(str(meta["generateName"]))
        for system in ("uid", "deletionTimestamp", "deletionGracePeriodSeconds", "selfLink", "managedFields"):
            meta.pop(system, None)
        meta["uid"] = str(uuid.uuid4())
        meta["creationTimestamp"] = format_rfc3339(self.clock())
        meta["generation"] = 1
        self.rdef.strategy.prepare_for_create(obj)
        name = str(meta.get("name", ""))
        errs = validate_meta(meta, namespaced=self.rdef.namespaced) + with_schema_errors(
            obj, self.rdef.schema, self.rdef.strategy.validate(obj)
        )
        if errs:
            raise self._invalid(name, errs)
        with self._errors(name):
            return await self.storage.create(self.key(namespace, name), obj, dry_run=dry_run)

    def _set_namespace(self, meta: dict[str, Any], namespace: str) -> None:
        if not self.rdef.namespaced:
            meta.pop("namespace", None)  # cluster-scoped: kube drops it
            return
        if meta.get("namespace") and meta["namespace"] != namespace:
            raise apierrors.bad_request(
                "the namespace of the provided object does not match the namespace sent on the request"
            )
        meta["namespace"] = namespace

    # ---- update -----------------------------------------------------------------------------------

    async def update(
        self,
        namespace: str,
        name: str,
        desired: ObjectUpdate,
        *,
        subresource: str = "",
        dry_run: bool = False,
    ) -> Obj:
        """Apply `desired` to the current object with compare-and-swap retries (PUT and PATCH)."""
        strategy = self._strategy(subresource)

        async def attempt(current: Obj) -> Obj:
            new = await desired(copy.deepcopy(current))
            return self._before_update(new, current, strategy, namespace, name)

        key = self.key(namespace, name)
        with self._errors(name):
            updated = await self.storage.guaranteed_update(key, attempt, dry_run=dry_run)
            meta = updated.get("metadata", {})
            if meta.get("deletionTimestamp") and not meta.get("finalizers"):
                # The last finalizer is gone: the deletion that was waiting for it completes now.
                pre = Preconditions(resource_version=meta.get("resourceVersion"))
                with contextlib.suppress(errors.KeyNotFound):  # someone else completed it
                    await self.storage.delete(key, preconditions=pre, dry_run=dry_run)
            return updated

    def _before_update(self, new: Obj, old: Obj, strategy: Strategy, namespace: str, name: str) -> Obj:
        if not isinstance(new.get("metadata"), dict):
            raise apierrors.bad_request("metadata must be an object")
        nm, om = new["metadata"], old["metadata"]
        if nm.get("name", name) != name:
            raise apierrors.bad_request(
                f"the name of the object ({nm.get('name')}) does not match the name on the URL ({name})"
            )
        nm["name"] = name
        self._set_namespace(nm, namespace)
        if nm.get("uid") and nm["uid"] != om.get("uid"):
            raise apierrors.conflict(
                self.rdef.group,
                self.rdef.resource,
                name,
                f"Precondition failed: UID in precondition: {nm['uid']}, UID in object meta: {om.get('uid')}",
            )
        rv = nm.get("resourceVersion")
        if rv and rv != om.get("resourceVersion"):
            raise apierrors.conflict(self.rdef.group, self.rdef.resource, name, MODIFIED_MSG)
        for system in (
            "uid",
            "creationTimestamp",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "generation",
        ):
            if system in om:
                nm[system] = om[system]
            else:
                nm.pop(system, None)
        nm.pop("selfLink", None)
        nm.pop("managedFields", None)
        nm["resourceVersion"] = om.get("resourceVersion")
        strategy.prepare_for_update(new, old)
        if spec_changed(new, old):
            new["metadata"]["generation"] = int(om.get("generation", 1)) + 1
        errs = (
            validate_meta(new["metadata"], namespaced=self.rdef.namespaced)
            + validate_meta_update(new, old)
            + with_schema_errors(new, self.rdef.schema, strategy.validate_update(new, old))
        )
        if errs:
            raise self._invalid(name, errs)
        return new

    # ---- delete -----------------------------------------------------------------------------------

    async def delete(
        self,
        namespace: str,
        name: str,
        *,
        preconditions: Preconditions | None = None,
        propagation: str = "",
        dry_run: bool = False,
    ) -> tuple[Obj, bool]:
        """Delete, or mark for deletion while finalizers remain. Returns (object, deleted now)."""
        key = self.key(namespace, name)
        with self._errors(name):
            current = await self.storage.get(key)
            if self.admit_delete is not None:
                await self.admit_delete(current)  # refuses with a StatusError
            extra = {"Foreground": "foregroundDeletion", "Orphan": "orphan"}.get(propagation)
            finalizers = list(current.get("metadata", {}).get("finalizers") or [])
            if not finalizers and not extra:
                return await self.storage.delete(key, preconditions=preconditions, dry_run=dry_run), True

            async def mark(obj: Obj) -> Obj:
                meta = obj["metadata"]
                fins = list(meta.get("finalizers") or [])
                if extra and extra not in fins:
                    fins.append(extra)
                meta["finalizers"] = fins
                if not meta.get("deletionTimestamp"):
                    meta["deletionTimestamp"] = format_rfc3339(self.clock())
                    meta["deletionGracePeriodSeconds"] = 0
                    meta["generation"] = int(meta.get("generation", 1)) + 1
                return obj

            marked = await self.storage.guaranteed_update(
                key, mark, preconditions=preconditions, dry_run=dry_run
            )
            return marked, False

    async def delete_collection(
        self, namespace: str, opts: ListOptions, *, propagation: str = "", dry_run: bool = False
    ) -> ObjList:
        listed = await self.list(namespace, ListOptions(predicate=opts.predicate))
        out: ObjList = []
        for obj in listed.items:
            meta = obj["metadata"]
            try:
                deleted, _ = await self.delete(
                    meta.get("namespace", ""), meta["name"], propagation=propagation, dry_run=dry_run
                )
            except apierrors.StatusError as exc:
                if exc.code == 404:  # raced with another deleter: the goal is reached
                    continue
                raise
            out.append(deleted)
        return out
