"""asyncio etcd v3 client over grpc.aio: KV, Txn, Watch, Lease, with endpoint failover.

This is the only module that imports grpc or the generated stubs; everything above it sees the records
of aggapi.storage.etcd_types (re-exported here) and the errors of aggapi.storage.errors.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

import grpc

from aggapi.machinery.aio import within
from aggapi.storage.errors import Compacted, StorageError, Unavailable
from aggapi.storage.etcd_types import (
    Compare,
    DeleteResult,
    EtcdConfig,
    KeyValue,
    OpDelete,
    OpGet,
    OpPut,
    PutResult,
    RangeResult,
    TxnResult,
    WatchBatch,
    WatchEvent,
    prefix_end,
)
from aggapi.storage.proto import etcd_pb2 as pb
from aggapi.storage.proto import etcd_pb2_grpc as pb_grpc

__all__ = [
    "Compare",
    "DeleteResult",
    "EtcdClient",
    "EtcdConfig",
    "EtcdWatch",
    "KeyValue",
    "OpDelete",
    "OpGet",
    "OpPut",
    "PutResult",
    "RangeResult",
    "TxnResult",
    "WatchBatch",
    "WatchEvent",
    "prefix_end",
]

log = logging.getLogger(__name__)

_T = TypeVar("_T")

_CHANNEL_OPTIONS: tuple[tuple[str, int], ...] = (
    # etcd's default --grpc-keepalive-min-time is 5s: pinging more often earns a GOAWAY.
    ("grpc.keepalive_time_ms", 10_000),
    ("grpc.keepalive_timeout_ms", 5_000),
    # etcd does not permit pings without an open stream; idle channels find out on the next call.
    ("grpc.keepalive_permit_without_calls", 0),
    # A quiet watch stream carries no data for minutes; keep pinging so a dead member is noticed.
    ("grpc.http2.max_pings_without_data", 0),
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 2_000),
    # Lists of many objects arrive as one RangeResponse (kube-apiserver allows the same).
    ("grpc.max_receive_message_length", 2**31 - 1),
    # Failover is ours: a transparent gRPC retry could re-send a write to the same dead member.
    ("grpc.enable_retries", 0),
)
# Ask etcd to end the watch stream when the member loses its leader (it would otherwise go silent).
_WATCH_METADATA = (("hasleader", "true"),)

_COMPARE_RESULT = {
    "==": pb.Compare.EQUAL,
    "!=": pb.Compare.NOT_EQUAL,
    "<": pb.Compare.LESS,
    ">": pb.Compare.GREATER,
}


def _kv(m: pb.KeyValue) -> KeyValue:
    return KeyValue(m.key, m.value, m.create_revision, m.mod_revision, m.version, m.lease)


def _range_result(resp: pb.RangeResponse, fallback_revision: int = 0) -> RangeResult:
    return RangeResult(
        [_kv(m) for m in resp.kvs], resp.more, resp.count, resp.header.revision or fallback_revision
    )


def _compare_pb(c: Compare) -> pb.Compare:
    req = pb.Compare(result=_COMPARE_RESULT[c.result], key=c.key)
    if c.target == "value":
        if not isinstance(c.value, bytes):
            raise TypeError(f"compare on value needs bytes, got {c.value!r}")
        req.target, req.value = pb.Compare.VALUE, c.value
        return req
    if isinstance(c.value, bytes):
        raise TypeError(f"compare on {c.target} needs an int, got {c.value!r}")
    if c.target == "mod":
        req.target, req.mod_revision = pb.Compare.MOD, c.value
    elif c.target == "create":
        req.target, req.create_revision = pb.Compare.CREATE, c.value
    else:
        req.target, req.version = pb.Compare.VERSION, c.value
    return req


def _op_pb(op: OpPut | OpGet | OpDelete) -> pb.RequestOp:
    if isinstance(op, OpPut):
        put = pb.PutRequest(key=op.key, value=op.value, lease=op.lease, prev_kv=op.prev_kv)
        return pb.RequestOp(request_put=put)
    if isinstance(op, OpGet):
        get = pb.RangeRequest(key=op.key, range_end=op.range_end or b"", limit=op.limit)
        return pb.RequestOp(request_range=get)
    delete = pb.DeleteRangeRequest(key=op.key, range_end=op.range_end or b"", prev_kv=op.prev_kv)
    return pb.RequestOp(request_delete_range=delete)


def _op_result(r: pb.ResponseOp, txn_revision: int) -> RangeResult | PutResult | DeleteResult:
    kind = r.WhichOneof("response")
    if kind == "response_range":
        return _range_result(r.response_range, txn_revision)
    if kind == "response_put":
        # Every write in a txn happens at the txn's revision.
        put = r.response_put
        return PutResult(txn_revision, _kv(put.prev_kv) if put.HasField("prev_kv") else None)
    return DeleteResult(r.response_delete_range.deleted, [_kv(m) for m in r.response_delete_range.prev_kvs])


def _error(e: grpc.aio.AioRpcError) -> StorageError:
    code, details = e.code(), e.details() or ""
    if code == grpc.StatusCode.OUT_OF_RANGE and "compacted" in details:
        return Compacted(0)  # etcd's error does not say which revision it compacted to
    if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.CANCELLED):
        return Unavailable(f"etcd {code.name}: {details}")
    return StorageError(f"etcd {code.name}: {details}")


def _parse_endpoint(endpoint: str, tls_default: bool) -> tuple[str, bool]:
    scheme, sep, rest = endpoint.partition("://")
    if not sep:
        return endpoint, tls_default
    if scheme not in ("http", "https"):
        raise ValueError(f"unsupported etcd endpoint scheme: {endpoint!r}")
    return rest.rstrip("/"), scheme == "https"


class _Conn:
    """One channel to one endpoint; closed once it is retired and no call still uses it."""

    __slots__ = ("channel", "index", "kv", "lease", "retired", "target", "users", "watch")

    def __init__(self, index: int, target: str, channel: Any) -> None:
        self.index, self.target, self.channel = index, target, channel
        self.kv = pb_grpc.KVStub(channel)
        self.watch = pb_grpc.WatchStub(channel)
        self.lease = pb_grpc.LeaseStub(channel)
        self.users = 0
        self.retired = False


class EtcdClient:
    def __init__(self, config: EtcdConfig) -> None:
        if not config.endpoints:
            raise ValueError("EtcdConfig.endpoints is empty")
        tls_default = bool(config.cafile or config.certfile)
        self._config = config
        self._endpoints = [_parse_endpoint(e, tls_default) for e in config.endpoints]
        self._index = 0
        self._conn: _Conn | None = None
        self._conns: set[_Conn] = set()
        self._credentials: Any = None
        self._closed = False

    # --- connection management ---

    def _acquire(self) -> _Conn:
        if self._closed:
            raise Unavailable("etcd client is closed")
        if self._conn is None:
            target, secure = self._endpoints[self._index]
            if secure:
                channel = grpc.aio.secure_channel(target, self._tls_credentials(), options=_CHANNEL_OPTIONS)
            else:
                channel = grpc.aio.insecure_channel(target, options=_CHANNEL_OPTIONS)
            self._conn = _Conn(self._index, target, channel)
            self._conns.add(self._conn)
        self._conn.users += 1
        return self._conn

    def _tls_credentials(self) -> Any:
        if self._credentials is None:
            c = self._config

            def read(path: str | None) -> bytes | None:
                return Path(path).read_bytes() if path else None

            self._credentials = grpc.ssl_channel_credentials(
                root_certificates=read(c.cafile),
                private_key=read(c.keyfile),
                certificate_chain=read(c.certfile),
            )
        return self._credentials

    async def _release(self, conn: _Conn) -> None:
        conn.users -= 1
        if conn.retired and conn.users == 0 and conn in self._conns:
            self._conns.discard(conn)
            await self._close_channel(conn)

    def _rotate(self, conn: _Conn, reason: str) -> None:
        if conn is not self._conn:
            return  # another call already moved on
        conn.retired = True
        self._conn = None
        self._index = (conn.index + 1) % len(self._endpoints)
        log.warning(
            "etcd endpoint %s failed (%s); switching to %s",
            conn.target,
            reason,
            self._endpoints[self._index][0],
        )

    async def _close_channel(self, conn: _Conn) -> None:
        try:
            await within(conn.channel.close(), self._config.dial_timeout)
        except TimeoutError:
            log.warning("closing the etcd channel to %s timed out", conn.target)

    async def _ready(self, conn: _Conn, *, last_chance: bool) -> bool:
        """Wait up to dial_timeout for the channel to connect; a refused endpoint fails at once unless
        it is the last one this call can try."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._config.dial_timeout
        state = conn.channel.get_state(try_to_connect=True)
        while state != grpc.ChannelConnectivity.READY:
            if state == grpc.ChannelConnectivity.SHUTDOWN:
                return False
            if state == grpc.ChannelConnectivity.TRANSIENT_FAILURE and not last_chance:
                return False
            remaining = deadline - loop.time()
            if remaining <= 0:
                return False
            try:
                await within(conn.channel.wait_for_state_change(state), remaining)
            except TimeoutError:
                return False
            state = conn.channel.get_state(try_to_connect=True)
        return True

    async def _run(self, fn: Callable[[_Conn], Awaitable[_T]], *, read: bool) -> _T:
        """Run `fn` on the current endpoint, moving on to the next one on UNAVAILABLE (and, for reads,
        on DEADLINE_EXCEEDED); each endpoint is tried at most once per call."""
        tried: set[int] = set()
        last = "no endpoint tried"
        while len(tried) < len(self._endpoints):
            conn = self._acquire()
            try:
                if conn.index in tried:
                    break  # a concurrent call moved the client back to an endpoint that failed us
                tried.add(conn.index)
                if not await self._ready(conn, last_chance=len(tried) == len(self._endpoints)):
                    last = f"could not connect to {conn.target} within {self._config.dial_timeout}s"
                    self._rotate(conn, "connect failed")
                    continue
                try:
                    return await fn(conn)
                except grpc.aio.AioRpcError as e:
                    code = e.code()
                    # A leaderless member drops proposals unapplied, so even writes may go elsewhere.
                    dropped = "raft proposal dropped" in (e.details() or "")
                    retry = dropped or code == grpc.StatusCode.UNAVAILABLE
                    retry = retry or (read and code == grpc.StatusCode.DEADLINE_EXCEEDED)
                    if not retry:
                        raise _error(e) from None
                    last = f"{conn.target}: {code.name}: {e.details()}"
                    self._rotate(conn, last)
                except TimeoutError:  # stream writes/reads bounded by asyncio timeouts
                    if not read:
                        raise Unavailable(f"etcd request to {conn.target} timed out") from None
                    last = f"{conn.target}: timed out"
                    self._rotate(conn, "timeout")
            finally:
                await self._release(conn)
        raise Unavailable(f"no etcd endpoint answered ({last})")

    async def _unary(self, rpc: Callable[[_Conn], Any], req: object, *, read: bool) -> Any:
        t = self._config.request_timeout
        return await self._run(lambda c: rpc(c)(req, timeout=t), read=read)

    # --- KV ---

    async def range(
        self,
        key: bytes,
        range_end: bytes | None = None,
        *,
        limit: int = 0,
        revision: int = 0,
        keys_only: bool = False,
        count_only: bool = False,
        serializable: bool = False,
        newest_first: bool = False,
    ) -> RangeResult:
        """`newest_first`: sort by mod_revision, descending (with limit=1: the last-modified key)."""
        req = pb.RangeRequest(key=key, range_end=range_end or b"", limit=limit, revision=revision)
        req.keys_only, req.count_only, req.serializable = keys_only, count_only, serializable
        if newest_first:
            req.sort_order, req.sort_target = pb.RangeRequest.DESCEND, pb.RangeRequest.MOD
        resp: pb.RangeResponse = await self._unary(lambda c: c.kv.Range, req, read=True)
        return _range_result(resp)

    # Writes are retried on UNAVAILABLE too. UNAVAILABLE mostly means the request never reached raft
    # (connection refused or reset, no leader), but etcd also returns it when a proposal timed out and
    # may still commit. A retried compare-guarded txn stays safe then: if the first attempt committed,
    # the key's mod/create revision moved, the compare fails and the caller sees a conflict instead of
    # a second write. A re-applied plain put writes the same value once more.
    async def put(self, key: bytes, value: bytes, *, lease: int = 0) -> int:
        req = pb.PutRequest(key=key, value=value, lease=lease)
        resp: pb.PutResponse = await self._unary(lambda c: c.kv.Put, req, read=False)
        return resp.header.revision

    async def delete_range(self, key: bytes, range_end: bytes | None = None) -> int:
        req = pb.DeleteRangeRequest(key=key, range_end=range_end or b"")
        resp: pb.DeleteRangeResponse = await self._unary(lambda c: c.kv.DeleteRange, req, read=False)
        return resp.deleted

    async def txn(
        self,
        compares: Sequence[Compare],
        success: Sequence[OpPut | OpGet | OpDelete],
        failure: Sequence[OpPut | OpGet | OpDelete] = (),
    ) -> TxnResult:
        req = pb.TxnRequest(
            compare=[_compare_pb(c) for c in compares],
            success=[_op_pb(op) for op in success],
            failure=[_op_pb(op) for op in failure],
        )
        read_only = all(isinstance(op, OpGet) for op in (*success, *failure))
        resp: pb.TxnResponse = await self._unary(lambda c: c.kv.Txn, req, read=read_only)
        rev = resp.header.revision
        return TxnResult(resp.succeeded, rev, [_op_result(r, rev) for r in resp.responses])

    async def current_revision(self) -> int:
        return (await self.range(b"\x00", count_only=True)).revision

    async def compact(self, revision: int, *, physical: bool = False) -> None:
        req = pb.CompactionRequest(revision=revision, physical=physical)
        await self._unary(lambda c: c.kv.Compact, req, read=False)

    # --- Lease ---

    async def lease_grant(self, ttl: int) -> int:
        # A retried grant may leave an unused lease behind; it expires after `ttl`.
        resp: pb.LeaseGrantResponse = await self._unary(
            lambda c: c.lease.LeaseGrant, pb.LeaseGrantRequest(TTL=ttl), read=False
        )
        if resp.error:
            raise StorageError(f"etcd lease grant: {resp.error}")
        return resp.ID

    async def lease_revoke(self, lease_id: int) -> None:
        t = self._config.request_timeout

        async def revoke(c: _Conn) -> None:
            try:
                await c.lease.LeaseRevoke(pb.LeaseRevokeRequest(ID=lease_id), timeout=t)
            except grpc.aio.AioRpcError as e:
                # Gone already (expired, or revoked by an attempt we retried): that is what we wanted.
                if e.code() != grpc.StatusCode.NOT_FOUND:
                    raise

        await self._run(revoke, read=False)

    async def lease_keepalive_once(self, lease_id: int) -> int:
        t = self._config.request_timeout

        async def keepalive(c: _Conn) -> int:
            call = c.lease.LeaseKeepAlive()
            try:
                await within(call.write(pb.LeaseKeepAliveRequest(ID=lease_id)), t)
                resp = await within(call.read(), t)
            finally:
                call.cancel()
            if resp is grpc.aio.EOF:
                raise Unavailable("etcd closed the lease keepalive stream")
            return max(int(resp.TTL), 0)  # etcd answers TTL 0 for an expired or unknown lease

        return await self._run(keepalive, read=True)  # refreshing a lease twice is harmless

    # --- Watch ---

    def watch(
        self,
        key: bytes,
        range_end: bytes | None = None,
        *,
        start_revision: int,
        prev_kv: bool = True,
        progress_notify: bool = True,
    ) -> EtcdWatch:
        create = pb.WatchCreateRequest(
            key=key,
            range_end=range_end or b"",
            start_revision=start_revision,
            prev_kv=prev_kv,
            progress_notify=progress_notify,
        )
        return EtcdWatch(self, pb.WatchRequest(create_request=create))

    async def close(self) -> None:
        self._closed = True
        self._conn = None
        conns, self._conns = self._conns, set()
        for conn in conns:
            await self._close_channel(conn)


class EtcdWatch:
    """One etcd watch on its own gRPC stream. Use as `async with client.watch(...) as w: async for b in w`.

    Iteration raises Compacted when the start revision is gone, and Unavailable when the stream breaks;
    the caller resumes with a new watch from its last seen revision + 1.
    """

    def __init__(self, client: EtcdClient, create: pb.WatchRequest) -> None:
        self._client = client
        self._create = create
        self._conn: _Conn | None = None
        self._call: Any = None
        self._pending: list[WatchBatch] = []
        self._closed = False

    async def __aenter__(self) -> EtcdWatch:
        t = self._client._config.request_timeout

        async def open_stream(c: _Conn) -> None:
            call = c.watch.Watch(metadata=_WATCH_METADATA)
            try:
                await within(call.write(self._create), t)
                while True:  # etcd answers `created` before any event of the new watcher
                    resp = await within(call.read(), t)
                    batch = self._handle(resp)
                    if batch is not None:
                        self._pending.append(batch)
                    if resp.created:
                        break
            except BaseException:
                call.cancel()
                raise
            c.users += 1  # held until __aexit__
            self._conn, self._call = c, call

        await self._client._run(open_stream, read=True)
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._closed = True
        if self._call is not None:
            self._call.cancel()  # ends the stream; etcd drops the watcher with it
            self._call = None
        if self._conn is not None:
            conn, self._conn = self._conn, None
            await self._client._release(conn)

    def __aiter__(self) -> AsyncIterator[WatchBatch]:
        return self

    async def __anext__(self) -> WatchBatch:
        if self._pending:
            return self._pending.pop(0)
        while True:
            if self._closed:
                raise StopAsyncIteration
            if self._call is None:
                raise StorageError("EtcdWatch is iterated outside `async with`")
            try:
                # No asyncio timeout here: a watch may be quiet for minutes. A dead member is detected by
                # the channel keepalive, which fails this read with UNAVAILABLE.
                resp = await self._call.read()
            except grpc.aio.AioRpcError as e:
                if e.code() == grpc.StatusCode.UNAVAILABLE and self._conn is not None:
                    self._client._rotate(self._conn, "watch stream broke")
                raise _error(e) from None
            if resp is grpc.aio.EOF:
                raise Unavailable("etcd closed the watch stream")
            batch = self._handle(resp)
            if batch is not None:
                return batch

    def _handle(self, resp: pb.WatchResponse) -> WatchBatch | None:
        if resp.compact_revision:
            raise Compacted(resp.compact_revision)
        if resp.canceled:
            raise Unavailable(f"etcd canceled the watch: {resp.cancel_reason or 'no reason given'}")
        if resp.created:
            return None
        events = [
            WatchEvent(
                "DELETE" if ev.type == pb.Event.DELETE else "PUT",
                _kv(ev.kv),
                _kv(ev.prev_kv) if ev.HasField("prev_kv") else None,
            )
            for ev in resp.events
        ]
        revision = events[-1].kv.mod_revision if events else resp.header.revision
        return WatchBatch(revision, events)

    async def request_progress(self) -> None:
        """Ask etcd for a progress notification on this stream; an event-less WatchBatch follows."""
        if self._call is None:
            raise StorageError("EtcdWatch.request_progress outside `async with`")
        req = pb.WatchRequest(progress_request=pb.WatchProgressRequest())
        try:
            await within(self._call.write(req), self._client._config.request_timeout)
        except grpc.aio.AioRpcError as e:
            raise _error(e) from None
        except TimeoutError:
            raise Unavailable("etcd watch progress request timed out") from None
