"""Container log files in the CRI format the real kubelet reads, and serving them like /containerLogs.

Each record is `<RFC3339Nano> <stdout|stderr> <F|P> <content>\\n`; `P` marks a partial line whose
continuation follows in the next record. Anyone may append (the sim's tickers, attach stdin, tests);
followers poll the file, so writers need no handle on the sim.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

_STREAMS = ("stdout", "stderr")


def format_time(t: datetime) -> str:
    """RFC3339 with fixed nanoseconds, as the kubelet prints with `timestamps=true`."""
    t = t.astimezone(UTC)
    return t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{t.microsecond:06d}000Z"


def parse_time(text: str) -> datetime:
    """RFC3339 (with or without fractional seconds, any precision)."""
    text = text.strip().replace("z", "Z")
    if text.endswith("Z"):
        text = text[:-1] + "+00:00"
    head, dot, rest = text.partition(".")
    if dot:
        digits = len(rest) - len(rest.lstrip("0123456789"))
        frac, zone = rest[:digits], rest[digits:]
        text = f"{head}.{frac[:6].ljust(6, '0')}{zone}"
    t = datetime.fromisoformat(text)
    if t.tzinfo is None:
        raise ValueError(f"time {text!r} has no zone")
    return t


def append_log(path: Path, data: str | bytes, *, stream: str = "stdout", now: datetime) -> None:
    """Append output as CRI records: one `F` record per complete line, `P` for a trailing fragment."""
    if stream not in _STREAMS:
        raise ValueError(f"stream must be stdout or stderr, not {stream!r}")
    text = data.decode(errors="replace") if isinstance(data, bytes) else data
    if not text:
        return
    ts = format_time(now)
    parts = text.split("\n")
    out = [f"{ts} {stream} F {line}\n" for line in parts[:-1]]
    if parts[-1]:
        out.append(f"{ts} {stream} P {parts[-1]}\n")
    with path.open("a", encoding="utf-8") as f:
        f.write("".join(out))


@dataclass(frozen=True, slots=True)
class LogRecord:
    time: datetime
    stream: str
    partial: bool
    content: bytes

    def render(self, timestamps: bool) -> bytes:
        body = self.content if self.partial else self.content + b"\n"
        return (format_time(self.time).encode() + b" " + body) if timestamps else body


def parse_record(line: bytes) -> LogRecord | None:
    """One CRI record (without its newline); None for a line that is not one."""
    fields = line.split(b" ", 3)
    if len(fields) < 3 or fields[1].decode(errors="replace") not in _STREAMS or fields[2] not in (b"F", b"P"):
        return None
    try:
        t = parse_time(fields[0].decode())
    except ValueError:
        return None
    return LogRecord(t, fields[1].decode(), fields[2] == b"P", fields[3] if len(fields) == 4 else b"")


@dataclass(frozen=True, slots=True)
class LogOptions:
    follow: bool = False
    previous: bool = False
    timestamps: bool = False
    tail_lines: int | None = None
    limit_bytes: int | None = None
    since_seconds: int | None = None
    since_time: datetime | None = None
    stream: str = "All"  # All | Stdout | Stderr (PodLogOptions.stream)


def _bool(value: str) -> bool:
    v = value.lower()
    if v in ("true", "1", "t"):
        return True
    if v in ("false", "0", "f", ""):
        return False
    raise ValueError(f"invalid boolean {value!r}")


def _nonneg(q: Mapping[str, str], name: str, *, positive: bool = False) -> int | None:
    if name not in q:
        return None
    n = int(q[name])
    if n < 0 or (positive and n == 0):
        raise ValueError(f"{name} must be {'greater than 0' if positive else 'non-negative'}")
    return n


def parse_log_options(q: Mapping[str, str]) -> LogOptions:
    """The kubelet's /containerLogs query (what kube-apiserver forwards from PodLogOptions)."""
    stream = q.get("stream", "All")
    if stream not in ("All", "Stdout", "Stderr"):
        raise ValueError(f"invalid stream {stream!r}")
    since_time = parse_time(q["sinceTime"]) if q.get("sinceTime") else None
    return LogOptions(
        follow=_bool(q.get("follow", "")),
        previous=_bool(q.get("previous", "")),
        timestamps=_bool(q.get("timestamps", "")),
        tail_lines=_nonneg(q, "tailLines"),
        limit_bytes=_nonneg(q, "limitBytes", positive=True),
        since_seconds=_nonneg(q, "sinceSeconds", positive=True),
        since_time=since_time,
        stream=stream,
    )


class LogTail:
    """Reads the records appended to a log file since the last call, from a byte offset on."""

    def __init__(self, path: Path, offset: int) -> None:
        self.path = path
        self.offset = offset
        self._pending = b""

    def poll(self) -> list[LogRecord]:
        try:
            size = self.path.stat().st_size
        except FileNotFoundError:
            size = 0
        if size < self.offset:  # truncated or replaced: start over
            self.offset, self._pending = 0, b""
        if size == self.offset:
            return []
        with self.path.open("rb") as f:
            f.seek(self.offset)
            chunk = f.read(size - self.offset)
        self.offset += len(chunk)
        lines = (self._pending + chunk).split(b"\n")
        self._pending = lines.pop()
        return [r for r in map(parse_record, lines) if r is not None]

    @property
    def caught_up(self) -> bool:
        """Everything up to the file's current end has been returned."""
        return self.offset >= log_size(self.path) and not self._pending


def _select(records: list[LogRecord], opts: LogOptions, now: datetime) -> list[LogRecord]:
    since = opts.since_time
    if opts.since_seconds is not None:
        cutoff = now - timedelta(seconds=opts.since_seconds)
        since = max(since, cutoff) if since else cutoff
    keep = [r for r in records if _wanted(r, opts) and (since is None or r.time >= since)]
    if opts.tail_lines is None:
        return keep
    # Like the kubelet, tail counts records (lines of the CRI file), partial ones included.
    return keep[-opts.tail_lines :] if opts.tail_lines else []


def _wanted(rec: LogRecord, opts: LogOptions) -> bool:
    return opts.stream == "All" or rec.stream == opts.stream.lower()


async def serve_log(
    path: Path,
    opts: LogOptions,
    write: Callable[[bytes], Awaitable[None]],
    *,
    now: datetime,
    poll: float,
    alive: Callable[[], bool],
) -> None:
    """Write the selected log (and, with follow, everything appended later) through `write`."""
    tail = LogTail(path, 0)
    records = tail.poll()  # a record still being written is left for the follower
    budget = opts.limit_bytes

    async def emit(rec: LogRecord) -> bool:
        nonlocal budget
        out = rec.render(opts.timestamps)
        if budget is not None:
            out = out[:budget]
            budget -= len(out)
        if out:
            await write(out)
        return budget is None or budget > 0

    for rec in _select(records, opts, now):
        if not await emit(rec):
            return
    while opts.follow and alive():
        fresh = tail.poll()
        for rec in fresh:
            if _wanted(rec, opts) and not await emit(rec):
                return
        if not fresh:
            await asyncio.sleep(poll)


def log_size(path: Path) -> int:
    try:
        return os.stat(path).st_size
    except FileNotFoundError:
        return 0
