"""kube-apiserver storage semantics over etcd: resourceVersion = mod_revision, compare-and-swap writes,
paginated consistent lists. Talks to etcd only through `aggapi.storage.etcd.EtcdClient`."""

from __future__ import annotations

import base64
import binascii
import copy
import json
import logging
import time
from collections.abc import Callable
from typing import Any

import orjson

from aggapi.storage import errors
from aggapi.storage.etcd import (
    Compare,
    EtcdClient,
    KeyValue,
    OpDelete,
    OpGet,
    OpPut,
    RangeResult,
    TxnResult,
    prefix_end,
)
from aggapi.storage.interface import ListOptions, ListResult, Obj, Preconditions, UpdateFunc

log = logging.getLogger(__name__)

# One etcd range when a selector filters lists: large enough to amortize round trips, small enough
# not to pull a whole big resource into memory at once (kube uses the same strategy).
_PAGE = 1000


def encode(obj: Obj) -> bytes:
    """Stored form: JSON without metadata.resourceVersion (etcd's mod_revision is the truth)."""
    meta = obj.get("metadata")
    if isinstance(meta, dict) and "resourceVersion" in meta:
        obj = {**obj, "metadata": {k: v for k, v in meta.items() if k != "resourceVersion"}}
    return orjson.dumps(obj)


def decode(kv: KeyValue, revision: int | None = None) -> Obj:
    obj: Obj = orjson.loads(kv.value)
    obj.setdefault("metadata", {})["resourceVersion"] = str(
        revision if revision is not None else kv.mod_revision
    )
    return obj


def encode_continue(rv: int, start_key: str) -> str:
    raw = json.dumps({"v": "meta.k8s.io/v1", "rv": rv, "start": start_key}, separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_continue(token: str) -> tuple[int, str]:
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        data = json.loads(raw)
        rv, start = int(data["rv"]), str(data["start"])
        if data.get("v") != "meta.k8s.io/v1" or rv <= 0 or start.startswith("/") or ".." in start:
            raise ValueError("bad token")
    except (ValueError, KeyError, TypeError, binascii.Error) as exc:
        raise errors.InvalidContinue(f"continue key is not valid: {exc}") from exc
    return rv, start


def check_preconditions(key: str, obj: Obj, pre: Preconditions | None) -> None:
    if pre is None:
        return
    meta = obj.get("metadata") or {}
    if pre.uid is not None and pre.uid != meta.get("uid"):
        raise errors.PreconditionFailed(
            key,
            f"Precondition failed: UID in precondition: {pre.uid}, UID in object meta: {meta.get('uid', '')}",
        )
    if pre.resource_version is not None and pre.resource_version != meta.get("resourceVersion"):
        raise errors.PreconditionFailed(
            key,
            "Precondition failed: ResourceVersion in precondition: "
            f"{pre.resource_version}, ResourceVersion in object meta: {meta.get('resourceVersion', '')}",
        )


class EtcdStore:
    """Reads and writes one resource's objects in etcd. Keys are full etcd keys (prefix included)."""

    def __init__(self, client: EtcdClient, *, observe: Callable[[str, float], None] | None = None) -> None:
        self.client = client
        self._observe = observe or (lambda _op, _s: None)

    async def create(self, key: str, obj: Obj, *, dry_run: bool = False) -> Obj:
        if obj.get("metadata", {}).get("resourceVersion"):
            raise errors.StorageError("resourceVersion should not be set on objects to be created")
        data = encode(obj)
        if dry_run:
            existing = await self._timed_range(key.encode())
            if existing.kvs:
                raise errors.KeyExists(key)
            out = copy.deepcopy(obj)
            out.setdefault("metadata", {})["resourceVersion"] = ""
            return out
        res = await self._txn(
            [Compare(key.encode(), "create", "==", 0)], [OpPut(key.encode(), data)], [OpGet(key.encode())]
        )
        if not res.succeeded:
            raise errors.KeyExists(key)
        out = copy.deepcopy(obj)
        out.setdefault("metadata", {})["resourceVersion"] = str(res.revision)
        return out

    async def get(self, key: str, *, resource_version: str = "") -> Obj:
        rev = int(resource_version) if resource_version not in ("", "0") else 0
        res = await self._range(key.encode(), revision=rev)
        if not res.kvs:
            raise errors.KeyNotFound(key)
        return decode(res.kvs[0])

    async def _timed_range(self, key: bytes, end: bytes | None = None, **kw: Any) -> RangeResult:
        started = time.monotonic()
        try:
            return await self.client.range(key, end, **kw)
        finally:
            self._observe("range", time.monotonic() - started)

    async def _txn(self, compares: list[Compare], success: list[Any], failure: list[Any]) -> TxnResult:
        started = time.monotonic()
        try:
            return await self.client.txn(compares, success, failure)
        finally:
            self._observe("txn", time.monotonic() - started)

    async def _range(self, key: bytes, end: bytes | None = None, **kw: Any) -> RangeResult:
        try:
            return await self._timed_range(key, end, **kw)
        except errors.Compacted as exc:
            raise errors.Expired(
                f"The resourceVersion for the provided list is too old (compacted to {exc.compact_revision})"
            ) from exc

    async def current_revision(self) -> int:
        return await self.client.current_revision()

    async def get_list(self, prefix: str, opts: ListOptions) -> ListResult:
        """A consistent snapshot list straight from etcd, paged at one revision like kube's etcd3 store."""
        if not prefix.endswith("/"):
            prefix += "/"
        pkey = prefix.encode()
        end = prefix_end(pkey)
        revision = 0
        start = pkey
        if opts.continue_token:
            revision, rel = decode_continue(opts.continue_token)
            start = (prefix + rel).encode()
        elif opts.resource_version_match == "Exact" and opts.resource_version not in ("", "0"):
            revision = int(opts.resource_version)
        limit = opts.limit if opts.limit > 0 else 0
        pred = opts.predicate
        items: list[Obj] = []
        last_key = b""
        more = False
        remaining: int | None = None
        while True:
            # With a selector we may need several ranges to fill one page; without, one is exact.
            want = (limit + 1 if pred.empty else max(limit, _PAGE)) if limit else 0
            try:
                res = await self._timed_range(start, end, limit=want, revision=revision)
            except errors.Compacted as exc:
                if opts.continue_token:
                    raise errors.Expired(
                        "The provided continue parameter is too old to display a consistent list result. "
                        "You can start a new list without the continue parameter."
                    ) from exc
                raise errors.Expired(f"too old resource version: {revision}") from exc
            if revision == 0:
                revision = res.revision
            kvs = res.kvs
            for i, kv in enumerate(kvs):
                obj = decode(kv)
                if pred.matches(obj):
                    items.append(obj)
                    last_key = kv.key
                    if limit and len(items) == limit:
                        more = res.more or i < len(kvs) - 1
                        if pred.empty:
                            remaining = res.count - (i + 1)
                        break
                else:
                    last_key = kv.key
            else:
                if limit and res.more and kvs:
                    start = kvs[-1].key + b"\x00"
                    continue
            break
        token = ""
        if limit and more:
            # kube's continue key: the key after the last one returned, relative to the prefix.
            token = encode_continue(revision, (last_key + b"\x00").decode()[len(prefix) :])
            if remaining is not None and remaining <= 0:
                remaining = None
        return ListResult(items, revision, token, remaining if token else None)

    async def guaranteed_update(
        self,
        key: str,
        update: UpdateFunc,
        *,
        preconditions: Preconditions | None = None,
        dry_run: bool = False,
    ) -> Obj:
        bkey = key.encode()
        res = await self._range(bkey)
        while True:
            if not res.kvs:
                raise errors.KeyNotFound(key)
            kv = res.kvs[0]
            current = decode(kv)
            check_preconditions(key, current, preconditions)
            updated = await update(copy.deepcopy(current))
            data = encode(updated)
            if data == kv.value:
                return current  # nothing changed: no write, resourceVersion stays (as kube does)
            if dry_run:
                updated.setdefault("metadata", {})["resourceVersion"] = str(kv.mod_revision)
                return updated
            txn = await self._txn(
                [Compare(bkey, "mod", "==", kv.mod_revision)], [OpPut(bkey, data)], [OpGet(bkey)]
            )
            if txn.succeeded:
                updated.setdefault("metadata", {})["resourceVersion"] = str(txn.revision)
                return updated
            # Lost a race: re-run the update function on the fresh object; it decides about conflicts.
            fresh = txn.responses[0]
            assert isinstance(fresh, RangeResult)
            res = fresh

    async def delete(
        self,
        key: str,
        *,
        preconditions: Preconditions | None = None,
        validate: Callable[[Obj], None] | None = None,
        dry_run: bool = False,
    ) -> Obj:
        bkey = key.encode()
        res = await self._range(bkey)
        while True:
            if not res.kvs:
                raise errors.KeyNotFound(key)
            kv = res.kvs[0]
            current = decode(kv)
            check_preconditions(key, current, preconditions)
            if validate is not None:
                validate(current)
            if dry_run:
                return current
            txn = await self._txn(
                [Compare(bkey, "mod", "==", kv.mod_revision)], [OpDelete(bkey)], [OpGet(bkey)]
            )
            if txn.succeeded:
                return current
            fresh = txn.responses[0]
            assert isinstance(fresh, RangeResult)
            res = fresh
