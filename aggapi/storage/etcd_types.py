"""Plain records of the etcd client API (no grpc here); aggapi.storage.etcd re-exports all of them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True, slots=True)
class EtcdConfig:
    # "http://host:port", "https://host:port", or bare "host:port" (TLS iff cafile or certfile is set).
    endpoints: tuple[str, ...]
    cafile: str | None = None
    certfile: str | None = None
    keyfile: str | None = None
    dial_timeout: float = 5.0
    request_timeout: float = 10.0


@dataclass(frozen=True, slots=True)
class KeyValue:
    key: bytes
    value: bytes
    create_revision: int
    mod_revision: int
    version: int
    lease: int = 0


@dataclass(frozen=True, slots=True)
class RangeResult:
    kvs: list[KeyValue]
    more: bool
    count: int
    revision: int  # header revision: the store revision the read was served at


@dataclass(frozen=True, slots=True)
class Compare:
    key: bytes
    target: Literal["mod", "create", "version", "value"]
    result: Literal["==", "!=", "<", ">"]
    value: int | bytes  # bytes for target "value", int otherwise


@dataclass(frozen=True, slots=True)
class OpPut:
    key: bytes
    value: bytes
    lease: int = 0
    prev_kv: bool = False


@dataclass(frozen=True, slots=True)
class OpGet:
    key: bytes
    range_end: bytes | None = None
    limit: int = 0


@dataclass(frozen=True, slots=True)
class OpDelete:
    key: bytes
    range_end: bytes | None = None
    prev_kv: bool = False


@dataclass(frozen=True, slots=True)
class PutResult:
    revision: int
    prev_kv: KeyValue | None


@dataclass(frozen=True, slots=True)
class DeleteResult:
    deleted: int
    prev_kvs: list[KeyValue]


@dataclass(frozen=True, slots=True)
class TxnResult:
    succeeded: bool
    revision: int
    responses: list[RangeResult | PutResult | DeleteResult]


@dataclass(frozen=True, slots=True)
class WatchEvent:
    type: Literal["PUT", "DELETE"]
    kv: KeyValue  # DELETE: kv.mod_revision is the deletion revision
    prev_kv: KeyValue | None


@dataclass(frozen=True, slots=True)
class WatchBatch:
    # With events: the mod_revision of the last event (etcd's header revision can run ahead of what
    # was delivered while a watcher catches up). Without events: a progress notification, meaning
    # every event up to `revision` has been delivered.
    revision: int
    events: list[WatchEvent]


def prefix_end(prefix: bytes) -> bytes:
    """The range_end that selects every key starting with `prefix` (etcd's GetPrefixRangeEnd)."""
    stripped = prefix.rstrip(b"\xff")
    if not stripped:
        return b"\x00"  # no upper bound: all keys >= prefix
    return stripped[:-1] + bytes([stripped[-1] + 1])
