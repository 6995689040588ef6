"""The shadow's disk: one JSON file per entry under the cache directory, written atomically.

A write is tmp file in the same directory + fsync + `os.replace`, so a reader (or a restart after
kill -9 or power loss) sees the old file or the new one, never half of one. All file operations run,
in submission order, on one worker thread: the event loop never blocks on fsync, and two writes of the
same key cannot overtake each other. Append-only logs (`*.log`, list-view membership changes) take one
line per record; a torn last line is ignored when read.

At start `load()` deletes `*.tmp` leftovers of interrupted writes and moves files that are not a JSON
object into `{cache_dir}/.quarantine/` (kept for inspection, never served)."""

from __future__ import annotations

import asyncio
import logging
import os
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

log = logging.getLogger(__name__)

QUARANTINE = ".quarantine"


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

    def close(self) -> None:
        self._pool.shutdown(wait=True)

    async def _run(self, fn: Any, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    async def put(self, rel: str, obj: Any) -> None:
        await self._run(self.put_sync, rel, orjson.dumps(obj))

    async def delete(self, rel: str) -> None:
        await self._run(self.delete_sync, rel)

    async def append(self, rel: str, lines: list[str]) -> None:
        await self._run(self.append_sync, rel, lines)

    async def apply(self, ops: list[tuple[str, str, Any]]) -> None:
        """Run ("put", rel, json-able) / ("delete", rel, None) / ("append", rel, [lines]) in order."""
        if not ops:
            return
        encoded = [(op, rel, orjson.dumps(arg) if op == "put" else arg) for op, rel, arg in ops]
        await self._run(self._apply_sync, encoded)

    def _apply_sync(self, ops: list[tuple[str, str, Any]]) -> None:
        for op, rel, arg in ops:
            if op == "put":
                self.put_sync(rel, arg)
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
        path = self.root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.name}.{uuid.uuid4().hex[:8]}.tmp")
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

    def delete_sync(self, rel: str) -> None:
        (self.root / rel).unlink(missing_ok=True)

    def append_sync(self, rel: str, lines: list[str]) -> None:
        path = self.root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a", encoding="utf-8") as f:
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
