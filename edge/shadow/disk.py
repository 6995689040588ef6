"""The shadow's disk: one JSON file per entry under the cache directory, written atomically.

A write is tmp file in the same directory + fsync + `os.replace`, so a reader (or a restart after
kill -9 or power loss) sees the old file or the new one, never half of one. All file operations run,
in submission order, on one worker thread: the event loop never blocks on fsync, and two writes of the
same key cannot overtake each other. A batch is either awaited (`apply`: on disk when it returns) or
queued (`submit`: the caller goes on; `ready(key)` first waits until the previous queued batch of that key
is on disk, and until at most MAX_QUEUED_FILES files are waiting). Because the worker is FIFO, a batch
that was awaited implies every batch submitted before it is on disk too. Append-only logs (`*.log`,
list-view membership changes) take one line per record; a torn last line is ignored when read.

At start `load()` deletes `*.tmp` leftovers of interrupted writes and moves files that are not a JSON
object into `{cache_dir}/.quarantine/` (kept for inspection, never served)."""

from __future__ import annotations

import asyncio
import logging
import os
import time
import uuid
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

log = logging.getLogger(__name__)

QUARANTINE = ".quarantine"
MAX_QUEUED_FILES = 10_000  # queued (not awaited) file operations before ready() makes callers wait
Ops = list[tuple[str, str, Any]]


@dataclass(slots=True)
class Loaded:
    objects: dict[str, dict[str, Any]] = field(default_factory=dict)  # rel path → JSON object
    logs: dict[str, list[str]] = field(default_factory=dict)  # rel path → complete lines
    removed_tmp: int = 0
    quarantined: int = 0


class DiskStore:
    def __init__(self, root: Path, *, fsync: bool = True) -> None:
        self.root = root
        self.fsync = fsync
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="shadow-disk")
        self.queued_files = 0
        self._dirs: set[str] = set()  # directories known to exist (the worker's)
        self._order: deque[asyncio.Future[None]] = deque()  # submitted batches, oldest first
        self._last: dict[str, asyncio.Future[None]] = {}  # key → its last batch not yet on disk

    def close(self) -> None:
        """Runs every queued batch, then stops the worker."""
        self._pool.shutdown(wait=True)

    async def _run(self, fn: Any, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    def submit(self, ops: Ops, key: str = "") -> asyncio.Future[None] | None:
        """Queue ("put", rel, json-able) / ("delete", rel, None) / ("append", rel, [lines]), run in order
        after everything submitted before. Not awaited: a failure is logged. `key` names the batch for
        `ready(key)`. The objects are encoded by the worker when it writes them (off the event loop, and no
        second copy waits in the queue): the cache replaces stored objects, it never changes them in place.
        """
        if not ops:
            return None
        n = len(ops)
        fut: asyncio.Future[None] = asyncio.get_running_loop().run_in_executor(
            self._pool, self._apply_sync, ops
        )
        self.queued_files += n
        while self._order and self._order[0].done():
            self._order.popleft()
        self._order.append(fut)
        if key:
            self._last[key] = fut
        fut.add_done_callback(lambda f: self._done(f, n, key))
        return fut

    def _done(self, fut: asyncio.Future[None], n: int, key: str) -> None:
        self.queued_files -= n
        if key and self._last.get(key) is fut:
            del self._last[key]
        if not fut.cancelled() and (exc := fut.exception()) is not None:
            log.error("shadow cache: writing %d file operation(s) failed: %r", n, exc)

    async def ready(self, key: str) -> None:
        """Wait until the last batch submitted under `key` is on disk and the queue is not over
        MAX_QUEUED_FILES. Never cancels a batch (a cancelled caller leaves it queued)."""
        while (prev := self._last.get(key)) is not None and not prev.done():
            await asyncio.wait({prev})
        while self.queued_files > MAX_QUEUED_FILES:
            while self._order and self._order[0].done():
                self._order.popleft()
            if not self._order:
                break
            await asyncio.wait({self._order[0]})
        while self._order and self._order[0].done():
            self._order.popleft()

    async def apply(self, ops: Ops) -> None:
        """Queue `ops` and wait until they and everything queued before them are on disk (also when `ops`
        is empty). A cancelled caller does not cancel the write."""
        fut = self.submit(ops)
        if fut is None and self._order and not self._order[-1].done():
            await asyncio.wait({self._order[-1]})  # nothing to write: still after everything before
        elif fut is not None:
            await asyncio.shield(fut)

    async def flush(self) -> None:
        """Wait until everything queued so far is on disk."""
        await self._run(lambda: None)

    def _apply_sync(self, ops: list[tuple[str, str, Any]]) -> None:
        for op, rel, arg in ops:
            if op == "put":
                self.put_sync(rel, orjson.dumps(arg))
            elif op == "delete":
                self.delete_sync(rel)
            else:
                self.append_sync(rel, arg)

    async def load(self) -> Loaded:
        loaded: Loaded = await self._run(self.load_sync)
        return loaded

    async def quarantine(self, rel: str, why: str) -> None:
        await self._run(self._quarantine, rel, why)

    # ---- the worker thread's side -----------------------------------------------------------------

    def put_sync(self, rel: str, data: bytes) -> None:
        path = os.path.join(self.root, rel)
        self._mkdir(os.path.dirname(path))
        tmp = f"{path}.{uuid.uuid4().hex[:8]}.tmp"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileNotFoundError:  # the directory was removed under us
            self._dirs.discard(os.path.dirname(path))
            self._mkdir(os.path.dirname(path))
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            view = memoryview(data)
            while view:
                n = os.write(fd, view)
                view = view[n:]
            if self.fsync:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)

    def _mkdir(self, directory: str) -> None:
        if directory not in self._dirs:  # worker thread only
            os.makedirs(directory, exist_ok=True)
            self._dirs.add(directory)

    def delete_sync(self, rel: str) -> None:
        (self.root / rel).unlink(missing_ok=True)

    def append_sync(self, rel: str, lines: list[str]) -> None:
        path = os.path.join(self.root, rel)
        self._mkdir(os.path.dirname(path))
        with open(path, "a", encoding="utf-8") as f:
            f.write("".join(line + "\n" for line in lines))
            f.flush()
            if self.fsync:
                os.fsync(f.fileno())

    def load_sync(self) -> Loaded:
        out = Loaded()
        if not self.root.exists():
            self.root.mkdir(parents=True, exist_ok=True)
            return out
        for dirpath, dirnames, filenames in os.walk(self.root):
            if Path(dirpath) == self.root and QUARANTINE in dirnames:
                dirnames.remove(QUARANTINE)
            for name in filenames:
                path = Path(dirpath) / name
                rel = path.relative_to(self.root).as_posix()
                if name.endswith(".tmp"):
                    log.info("shadow cache: removing %s, left by an interrupted write", rel)
                    path.unlink(missing_ok=True)
                    out.removed_tmp += 1
                elif name.endswith(".json"):
                    try:
                        value = orjson.loads(path.read_bytes())
                    except (OSError, orjson.JSONDecodeError) as e:
                        self._quarantine(rel, f"not JSON: {e}")
                        out.quarantined += 1
                        continue
                    if not isinstance(value, dict):
                        self._quarantine(rel, "not a JSON object")
                        out.quarantined += 1
                        continue
                    out.objects[rel] = value
                elif name.endswith(".log"):
                    text = path.read_text(encoding="utf-8", errors="replace")
                    lines = text.split("\n")
                    out.logs[rel] = lines[:-1]  # the part after the last newline is a torn record
        return out

    def _quarantine(self, rel: str, why: str) -> None:
        src = self.root / rel
        dst = self.root / QUARANTINE / f"{int(time.time())}-{rel.replace('/', '%')}"
        log.warning("shadow cache: %s is unusable (%s); moved to %s, not served", rel, why, dst)
        dst.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.replace(src, dst)
        except OSError:
            src.unlink(missing_ok=True)
