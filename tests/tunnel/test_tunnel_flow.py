"""Per-connection flow control (no head-of-line blocking) and no leaks over many dial/close cycles."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import hashlib
import os
import random

import pytest
from conftest import Env
from tunnelkit import fd_count, rss_bytes

from aggapi.tunnel import DialError, TunnelConn

BULK = 64 * 1024 * 1024


async def _bulk_echo(conn: TunnelConn, size: int) -> tuple[int, str, str]:
    block = os.urandom(1024 * 1024)
    sent, got = hashlib.sha256(), hashlib.sha256()
    received = 0

    async def send() -> None:
        await conn.write(b"ECHO\n")
        for i in range(size // len(block)):
            chunk = block[i % 7 :] + block[: i % 7]  # not the same block every time
            sent.update(chunk)
            await conn.write(chunk)
        await conn.close_write()

    async def receive() -> None:
        nonlocal received
        header = b""
        while len(header) < 5:
            header += await conn.read(5 - len(header))
        assert header == b"ECHO\n"
        while data := await conn.read():
            got.update(data)
            received += len(data)

    async with asyncio.TaskGroup() as tg:
        tg.create_task(send())
        tg.create_task(receive())
    return received, sent.hexdigest(), got.hexdigest()


async def test_stalled_connections_do_not_block_a_bulk_transfer(env: Env) -> None:
    # 1: the target sends forever and nobody reads it on our side.
    firehose = await env.server.dial(env.ip, env.port)
    await firehose.write(b"FIRE\n")
    # 2: we write into a target that never reads; our writer ends up blocked.
    sink = await env.server.dial(env.ip, env.port)
    await sink.write(b"STALL\n")

    async def write_forever() -> None:
        while True:
            await sink.write(b"s" * 65536)

    blocked_writer = asyncio.create_task(write_forever(), name="test-blocked-writer")
    try:
        # Let both stalls fill every buffer on the way (bounded: windows, not time, decide).
        await asyncio.sleep(0.5)
        bulk = await env.server.dial(env.ip, env.port)
        received, sent_hash, got_hash = await asyncio.wait_for(_bulk_echo(bulk, BULK), 300)
        assert received == BULK
        assert got_hash == sent_hash
        await bulk.close()
        assert not blocked_writer.done()  # still stalled: backpressure, not buffering
        # The firehose was held back, not lost: it is still readable.
        assert (await asyncio.wait_for(firehose.read(10), 10)).startswith(b"f")
    finally:
        blocked_writer.cancel()
        with contextlib.suppress(asyncio.CancelledError, ConnectionError):
            await blocked_writer
        await firehose.close()
        await sink.close()


def _cycles() -> int:
    # 10,000 take ~20 s on a 2-core machine; AGGAPI_TUNNEL_LEAK_CYCLES overrides (e.g. 100,000 for a soak).
    return int(os.environ.get("AGGAPI_TUNNEL_LEAK_CYCLES", "10000"))


async def _one_cycle(env: Env, i: int, refused_port: int) -> None:
    kind = i % 6
    if kind == 0:  # plain request/response, then close
        conn = await env.server.dial(env.ip, env.port)
        await conn.write(b"PING\n")
        assert await conn.read() == b"ok\n"
        await conn.close()
    elif kind == 1:  # the agent's dial is refused on the node
        with pytest.raises(DialError):
            await env.server.dial(env.ip, refused_port)
    elif kind == 2:  # abandoned before (or while) the agent answers
        task = asyncio.create_task(env.server.dial(env.ip, env.port))
        for _ in range(random.randint(0, 6)):
            await asyncio.sleep(0)
        task.cancel()
        try:
            conn = await task
        except asyncio.CancelledError:
            return
        await conn.close()
    elif kind == 3:  # half-closed by us; the target closes after echoing
        conn = await env.server.dial(env.node, env.port)
        await conn.write(b"ECHO\n")
        await conn.close_write()
        while await conn.read():
            pass
        await conn.close()
    elif kind == 4:  # closed by us while the target is still sending
        conn = await env.server.dial(env.ip, env.port)
        await conn.write(b"FIRE\n")
        await conn.read()
        await conn.close()
    else:  # half-closed and then abandoned without reading the rest
        conn = await env.server.dial(env.ip, env.port)
        await conn.write(b"ECHO\n")
        await conn.close_write()
        await conn.close()


async def _settled(env: Env) -> bool:
    s = env.server.stats()
    return s.active_connections == 0 and s.pending_dials == 0 and env.agent.metrics.connections_active == 0


async def _run_cycles(env: Env, n: int, refused_port: int, concurrency: int = 16) -> None:
    sem = asyncio.Semaphore(concurrency)

    async def one(i: int) -> None:
        async with sem:
            await _one_cycle(env, i, refused_port)

    async with asyncio.TaskGroup() as tg:
        for i in range(n):
            tg.create_task(one(i))
            if i % 256 == 255:
                await asyncio.sleep(0)  # let the group drain so pending tasks stay few


async def test_no_leaks_over_many_dial_close_cycles(env: Env) -> None:
    refused_port = env.refused_port
    await _run_cycles(env, 2000, refused_port)  # warm-up: caches, grpc pools, allocator arenas
    await _wait_settled(env)
    gc.collect()
    fds, tasks, rss = fd_count(), len(asyncio.all_tasks()), rss_bytes()

    n = _cycles()
    await _run_cycles(env, n, refused_port)
    await _wait_settled(env)
    gc.collect()
    after_fds, after_tasks, after_rss = fd_count(), len(asyncio.all_tasks()), rss_bytes()
    mib = 1 << 20
    print(f"\n{n} cycles: fds {fds}->{after_fds}, tasks {tasks}->{after_tasks}, ", end="")
    print(f"RSS {rss // mib}->{after_rss // mib} MiB")
    assert after_fds <= fds + 2
    assert after_tasks <= tasks
    assert after_rss <= rss + 24 * mib  # allocator slack; measured growth plateaus after the warm-up
    assert env.server.stats().dials >= n


async def _wait_settled(env: Env) -> None:
    for _ in range(500):
        if await _settled(env):
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"not settled: {env.server.stats()} agent={env.agent.metrics.snapshot()}")
