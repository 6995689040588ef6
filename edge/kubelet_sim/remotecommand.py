"""exec and attach sessions, independent of the wire (WebSocket channels or SPDY streams).

A transport fills `SessionIO.stdin` (b"" = end of input) and `resizes`, sets `gone` when the client
disconnects, and sends what the session writes. The session returns the metav1.Status the client
reads from the error channel, or None when nobody is left to read it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edge.aio import within
from edge.kubelet_sim.config import Timeouts
from edge.kubelet_sim.logs import LogTail
from edge.kubelet_sim.pods import Container
from edge.kubelet_sim.tty import TerminalSize, TtyProcess, spawn_tty

log = logging.getLogger(__name__)

STDIN, STDOUT, STDERR, ERROR, RESIZE = 0, 1, 2, 3, 4
_CHUNK = 32 * 1024

Status = dict[str, Any]


@dataclass(frozen=True, slots=True)
class StreamOptions:
    stdin: bool
    stdout: bool
    stderr: bool
    tty: bool


def parse_stream_options(q: Mapping[str, str]) -> StreamOptions:
    """The kubelet reads input/output/error/tty == "1" (what kube-apiserver sends). The pod-subresource
    spellings stdin/stdout/stderr=true are accepted too, for clients that call the sim directly."""

    def flag(kubelet: str, alias: str) -> bool:
        return q.get(kubelet) == "1" or q.get(alias, "").lower() in ("1", "true")

    opts = StreamOptions(
        flag("input", "stdin"), flag("output", "stdout"), flag("error", "stderr"), flag("tty", "tty")
    )
    if not (opts.stdin or opts.stdout or opts.stderr):
        raise ValueError("you must specify at least 1 of stdin, stdout, stderr")
    if opts.tty and opts.stderr:
        opts = StreamOptions(opts.stdin, opts.stdout, False, True)  # a terminal merges stderr into stdout
    return opts


def status_success() -> Status:
    return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success"}


def status_exit_code(code: int) -> Status:
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": f"command terminated with non-zero exit code: exit status {code}",
        "reason": "NonZeroExitCode",
        "details": {"causes": [{"reason": "ExitCode", "message": str(code)}]},
    }


def status_error(message: str, *, code: int = 500, reason: str = "InternalError") -> Status:
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
        "details": {"causes": [{"message": message}]},
    }


class SessionIO:
    def __init__(self, send: Callable[[int, bytes], Awaitable[None]]) -> None:
        self.stdin: asyncio.Queue[bytes] = asyncio.Queue(64)
        self.resizes: asyncio.Queue[TerminalSize] = asyncio.Queue(16)
        self.gone = asyncio.Event()
        self._send = send

    async def send(self, channel: int, data: bytes) -> None:
        """Never raises: a failed write means the client is gone."""
        if self.gone.is_set():
            return
        try:
            await self._send(channel, data)
        except (ConnectionError, OSError, TimeoutError) as e:
            log.debug("session write failed: %r", e)
            self.gone.set()

    def put_resize(self, size: TerminalSize) -> None:
        if self.resizes.full():  # a flood of resizes: the oldest are stale anyway
            self.resizes.get_nowait()
        self.resizes.put_nowait(size)


class _Tasks:
    """The session's helper tasks, always cancelled and awaited on the way out."""

    def __init__(self, label: str) -> None:
        self._label = label
        self._tasks: list[asyncio.Task[Any]] = []

    def start(self, coro: Coroutine[Any, Any, Any], name: str) -> asyncio.Task[Any]:
        task = asyncio.create_task(coro, name=f"{self._label}:{name}")
        self._tasks.append(task)
        return task

    async def close(self) -> None:
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()


async def _pump_out(read: Callable[[int], Awaitable[bytes]], io: SessionIO, channel: int) -> None:
    while chunk := await read(_CHUNK):
        await io.send(channel, chunk)


async def run_exec(
    argv: list[str],
    *,
    cwd: Path,
    env: dict[str, str],
    opts: StreamOptions,
    io: SessionIO,
    timeouts: Timeouts,
    label: str,
) -> Status | None:
    """Run argv as a real process wired to the session; its exit code becomes the Status."""
    if not argv:
        return status_error("command is required", code=400, reason="BadRequest")
    tasks = _Tasks(label)
    proc: asyncio.subprocess.Process | None = None
    term: TtyProcess | None = None
    try:
        try:
            if opts.tty:
                term = await spawn_tty(argv, cwd=cwd, env=env)
                proc = term.proc
            else:
                proc = await asyncio.create_subprocess_exec(
                    *argv,
                    stdin=asyncio.subprocess.PIPE if opts.stdin else asyncio.subprocess.DEVNULL,
                    stdout=asyncio.subprocess.PIPE if opts.stdout else asyncio.subprocess.DEVNULL,
                    stderr=asyncio.subprocess.PIPE if opts.stderr else asyncio.subprocess.DEVNULL,
                    cwd=cwd,
                    env=env,
                    start_new_session=True,  # its own process group, so cleanup reaches its children
                )
        except (FileNotFoundError, PermissionError) as e:
            # What a container runtime reports: the message on stderr, shell-style exit code.
            missing = isinstance(e, FileNotFoundError)
            why = "executable file not found in $PATH" if missing else "permission denied"
            await io.send(STDERR if opts.stderr else STDOUT, f'exec: "{argv[0]}": {why}\n'.encode())
            return status_exit_code(127 if missing else 126)
        pumps = _start_pumps(tasks, proc, term, opts, io, timeouts)
        waiter = tasks.start(proc.wait(), "wait")
        gone = tasks.start(io.gone.wait(), "gone")
        await asyncio.wait({waiter, gone}, return_when=asyncio.FIRST_COMPLETED)
        if not waiter.done():
            return None
        # Output still in the pipes belongs before the status; children may hold them open, so bound it.
        if pumps:
            await asyncio.wait(pumps, timeout=timeouts.exit_grace)
        if io.gone.is_set():
            return None
        code = proc.returncode or 0
        if code < 0:
            code = 128 - code  # killed by a signal: report it the way a shell (and the runtime) does
        return status_success() if code == 0 else status_exit_code(code)
    finally:
        await tasks.close()
        if proc is not None and proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            await proc.wait()
        if term is not None:
            term.close()


def _start_pumps(
    tasks: _Tasks,
    proc: asyncio.subprocess.Process,
    term: TtyProcess | None,
    opts: StreamOptions,
    io: SessionIO,
    timeouts: Timeouts,
) -> set[asyncio.Task[Any]]:
    pumps: set[asyncio.Task[Any]] = set()
    if term is not None:
        # A size sent before the process existed applies before any input reaches it.
        while not io.resizes.empty():
            with contextlib.suppress(OSError):
                term.resize(io.resizes.get_nowait())
        tasks.start(_apply_resizes(term, io), "resize")
        if opts.stdout:
            pumps.add(tasks.start(_pump_out(term.read, io, STDOUT), "stdout"))
        if opts.stdin:
            tasks.start(_pump_tty_in(term, io), "stdin")
        return pumps
    if proc.stdout is not None:
        pumps.add(tasks.start(_pump_out(proc.stdout.read, io, STDOUT), "stdout"))
    if proc.stderr is not None:
        pumps.add(tasks.start(_pump_out(proc.stderr.read, io, STDERR), "stderr"))
    if proc.stdin is not None:
        tasks.start(_pump_in(proc.stdin, io, timeouts.write), "stdin")
    return pumps


async def _pump_in(stdin: asyncio.StreamWriter, io: SessionIO, write_timeout: float) -> None:
    try:
        while data := await io.stdin.get():
            stdin.write(data)
            await within(stdin.drain(), write_timeout)
    except (ConnectionError, TimeoutError):
        pass  # the process stopped reading or exited
    finally:
        stdin.close()


async def _pump_tty_in(term: TtyProcess, io: SessionIO) -> None:
    while data := await io.stdin.get():
        term.write(data)
    term.send_eof()


async def _apply_resizes(term: TtyProcess, io: SessionIO) -> None:
    while True:
        size = await io.resizes.get()
        with contextlib.suppress(OSError):
            term.resize(size)


async def run_attach(
    container: Container,
    *,
    opts: StreamOptions,
    io: SessionIO,
    poll: float,
    echo: Callable[[bytes], None],
    offset: int,
) -> Status | None:
    """Attach to the simulated main process: its output is what gets appended to the container log from
    now on; its stdin is echoed into that log (the main process behaves like `cat`). Closing stdin ends
    the session with Success, as for a container with stdinOnce; otherwise it lasts until the client
    leaves. Output starts at log byte `offset` (the log's size when the request arrived)."""
    tail = LogTail(container.log_path, offset)
    stdin_done = False
    reader: asyncio.Task[bytes] | None = None
    try:
        while not io.gone.is_set():
            for rec in tail.poll():
                channel = STDERR if rec.stream == "stderr" and opts.stderr and not opts.tty else STDOUT
                if opts.stdout or channel == STDERR:
                    await io.send(channel, rec.render(False))
            if stdin_done and tail.caught_up:
                return status_success()
            if opts.stdin and not stdin_done:
                reader = reader or asyncio.create_task(io.stdin.get(), name=f"attach:{container.name}:stdin")
                done, _ = await asyncio.wait({reader}, timeout=poll)
                if done:
                    data, reader = reader.result(), None
                    if data:
                        echo(data)
                    else:
                        stdin_done = True
            else:
                with contextlib.suppress(TimeoutError):
                    await within(io.gone.wait(), poll)
        return None
    finally:
        if reader is not None:
            reader.cancel()
            await asyncio.gather(reader, return_exceptions=True)
