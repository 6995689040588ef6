"""`aggapi dev --dir DIR cut|heal <node>`: ask the lab running in another process to cut or restore a
node's cloud link, and wait until it has.

The running lab owns its children (a process killed from outside would look like a crash), so the
command only writes a request file `DIR/control/<node>.request` ("<action> <token>") and waits for the
lab's answer in `DIR/control/<node>.done` ("<token> ok|error <message>"). The lab polls the requests
from its main loop (`ControlPoller`). Both files are replaced atomically."""

from __future__ import annotations

import logging
import os
import secrets
import time
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger(__name__)

ACTIONS = ("cut", "heal")
PID_FILE = "lab.pid"


def _dir(state: Path) -> Path:
    return state / "control"


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def lab_running(state: Path) -> bool:
    try:
        pid = int((state / PID_FILE).read_text().strip())
        os.kill(pid, 0)
    except (OSError, ValueError):
        return False
    return True


def request(state: Path, node: str, action: str, timeout: float = 60.0) -> str:
    """Ask the running lab in `state` to `action` (cut or heal) `node`'s link; returns its message.
    Raises RuntimeError with a clear message when no lab runs there, or when the lab refused."""
    if action not in ACTIONS:
        raise RuntimeError(f"unknown action {action!r}; want one of {', '.join(ACTIONS)}")
    if not lab_running(state):
        raise RuntimeError(
            f"no lab is running with --dir {state} (start one with `aggapi dev --dir {state}`)"
        )
    token = secrets.token_hex(8)
    _write(_dir(state) / f"{node}.request", f"{action} {token}\n")
    done = _dir(state) / f"{node}.done"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            got, status, message = [*done.read_text().strip().split(" ", 2), "", ""][:3]
        except OSError:
            got = status = message = ""
        if got == token:
            if status != "ok":
                raise RuntimeError(message or "the lab refused")
            return message
        time.sleep(0.1)
    raise RuntimeError(f"the lab did not answer within {timeout:g}s (see {state}/*.log)")


class ControlPoller:
    """Run by the lab's main loop: applies new requests with `apply(node, action) -> message`."""

    def __init__(self, state: Path, apply: Callable[[str, str], str]) -> None:
        self.dir = _dir(state)
        self._apply = apply
        self._seen: dict[str, str] = {}  # request file → the token handled last

    def poll(self) -> None:
        if not self.dir.is_dir():
            return
        for req in sorted(self.dir.glob("*.request")):
            try:
                action, token = req.read_text().split()[:2]
            except (OSError, ValueError):
                continue
            if self._seen.get(req.name) == token:
                continue
            self._seen[req.name] = token
            node = req.name.removesuffix(".request")
            try:
                answer = f"{token} ok {self._apply(node, action)}"
            except Exception as exc:  # reported to the waiting command, the lab goes on
                log.warning("lab control: %s %s failed: %s", action, node, exc)
                answer = f"{token} error {exc}"
            _write(self.dir / f"{node}.done", answer + "\n")
