"""`aggapi certs ...`: create a CA and issue serving, client and node certificates, sign CSRs.

Exit status: 0 on success, 2 on bad input (missing or broken CA, invalid names, unreadable files).
Results go to stdout; errors to stderr.
"""

from __future__ import annotations

import argparse
import ipaddress
import logging
import re
import sys
from pathlib import Path

from certs.files import CAError, load_or_create_ca, load_pair, write_pair, write_pem_atomic
from certs.pki import (
    CertKeyPair,
    issue_client,
    issue_peer,
    issue_serving,
    service_dns_names,
    sign_csr,
)

log = logging.getLogger(__name__)

EXIT_BAD_INPUT = 2
# A Node name is a DNS-1123 subdomain; it also becomes the node certificate's DNS SAN.
_DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


class _BadInput(Exception):
    pass


def add_certs_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register `certs` and its subcommands on the main CLI's subparsers."""
    certs = subparsers.add_parser("certs", help="create a CA, issue certificates, sign CSRs")
    sub = certs.add_subparsers(dest="certs_command", metavar="COMMAND", required=True)

    p = sub.add_parser("ca", help="create a CA, or load it if it already exists")
    p.add_argument("--dir", required=True, type=Path, help="directory for <name>.crt and <name>.key")
    p.add_argument("--name", default="ca", help="file name stem (default: ca)")
    p.add_argument("--cn", default="aggapi-ca", help="CommonName of a newly created CA (default: aggapi-ca)")
    p.add_argument("--days", type=int, default=3650, help="validity of a newly created CA (default: 3650)")

    p = sub.add_parser("serving", help="issue a TLS serving certificate for the aggapi Service")
    _ca_args(p)
    _out_args(p, default_name="apiserver")
    p.add_argument("--service", default="aggapi", help="Service name (default: aggapi)")
    p.add_argument("--namespace", default="aggapi-system", help="Service namespace (default: aggapi-system)")
    p.add_argument("--dns", action="append", default=[], metavar="NAME", help="extra DNS SAN (repeatable)")
    p.add_argument("--ip", action="append", default=[], metavar="IP", help="IP SAN (repeatable)")

    p = sub.add_parser("client", help="issue a client certificate (CN = user, O = groups)")
    _ca_args(p)
    _out_args(p, default_name="admin")
    p.add_argument("--cn", default="admin", help="user name (default: admin)")
    p.add_argument("--org", action="append", default=None, metavar="GROUP", help="group (repeatable)")

    p = sub.add_parser("node", help="issue a node certificate (system:node:NAME, serving + client)")
    _ca_args(p)
    _out_args(p, default_name=None)
    p.add_argument("--node", required=True, help="Node name")
    p.add_argument("--dns", action="append", default=[], metavar="NAME", help="extra DNS SAN (repeatable)")
    p.add_argument("--ip", action="append", default=[], metavar="IP", help="IP SAN (repeatable)")

    p = sub.add_parser("sign-csr", help="sign a PEM certificate signing request")
    _ca_args(p)
    p.add_argument("--csr", required=True, type=Path, help="PEM CSR file")
    p.add_argument("--usage", required=True, choices=["client", "server", "peer"])
    p.add_argument("--out", required=True, type=Path, help="where to write the certificate PEM")
    p.add_argument("--days", type=int, default=365, help="validity (default: 365)")


def run_certs(args: argparse.Namespace) -> int:
    try:
        _COMMANDS[args.certs_command](args)
    except (_BadInput, CAError, ValueError, OSError) as e:
        print(f"aggapi certs {args.certs_command}: error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    return 0


def _ca(args: argparse.Namespace) -> None:
    _check_days(args.days)
    directory: Path = args.dir
    # Checked before the call only to word the message; load_or_create_ca is what is race-safe.
    existed = (directory / f"{args.name}.crt").exists() and (directory / f"{args.name}.key").exists()
    pair = load_or_create_ca(directory, args.name, common_name=args.cn, valid_days=args.days)
    what = "loaded existing" if existed else "created"
    print(
        f"{what} CA {pair.cert.subject.rfc4514_string()} (expires {pair.cert.not_valid_after_utc:%Y-%m-%d})"
    )
    _print_paths(directory / f"{args.name}.crt", directory / f"{args.name}.key")


def _serving(args: argparse.Namespace) -> None:
    _check_days(args.days)
    ca = _load_ca(args)
    dns = [*service_dns_names(args.service, args.namespace), *args.dns]
    ips = _check_ips(args.ip)
    pair = issue_serving(
        ca, common_name=f"{args.service}.{args.namespace}.svc", dns_names=dns, ips=ips, valid_days=args.days
    )
    _write_out(pair, args.out_dir, args.name)


def _client(args: argparse.Namespace) -> None:
    _check_days(args.days)
    if not args.cn:
        raise _BadInput("--cn must be non-empty")
    ca = _load_ca(args)
    pair = issue_client(ca, common_name=args.cn, organizations=args.org or [], valid_days=args.days)
    _write_out(pair, args.out_dir, args.name)


def _node(args: argparse.Namespace) -> None:
    _check_days(args.days)
    node: str = args.node
    if len(node) > 253 or not _DNS1123_SUBDOMAIN.match(node):
        raise _BadInput(f"--node {node!r} is not a valid Node name (lowercase DNS-1123 subdomain)")
    ca = _load_ca(args)
    # Peer usage: the node's agents both serve (health probes) and dial (tunnel) with this cert.
    pair = issue_peer(
        ca,
        common_name=f"system:node:{node}",
        organizations=["system:nodes"],
        dns_names=[node, *args.dns],
        ips=_check_ips(args.ip),
        valid_days=args.days,
    )
    _write_out(pair, args.out_dir, args.name or node)


def _sign_csr(args: argparse.Namespace) -> None:
    _check_days(args.days)
    ca = _load_ca(args)
    cert_pem = sign_csr(ca, args.csr.read_bytes(), usage=args.usage, valid_days=args.days)
    write_pem_atomic(args.out, cert_pem, private=False)
    print(f"signed {args.usage} certificate")
    print(f"certificate: {args.out.resolve()}")


_COMMANDS = {"ca": _ca, "serving": _serving, "client": _client, "node": _node, "sign-csr": _sign_csr}


def _ca_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--ca-dir", required=True, type=Path, help="directory holding the CA")
    p.add_argument("--ca-name", default="ca", help="CA file name stem (default: ca)")


def _out_args(p: argparse.ArgumentParser, *, default_name: str | None) -> None:
    p.add_argument("--out-dir", required=True, type=Path, help="where to write <name>.crt and <name>.key")
    hint = f" (default: {default_name})" if default_name else " (default: the node name)"
    p.add_argument("--name", default=default_name, help="output file name stem" + hint)
    p.add_argument("--days", type=int, default=365, help="validity in days (default: 365)")


def _load_ca(args: argparse.Namespace) -> CertKeyPair:
    directory: Path = args.ca_dir
    cert_path, key_path = directory / f"{args.ca_name}.crt", directory / f"{args.ca_name}.key"
    if not cert_path.exists() or not key_path.exists():
        raise _BadInput(
            f"no CA in {directory} ({cert_path.name} and {key_path.name} expected); "
            f"create one with: aggapi certs ca --dir {directory}"
        )
    try:
        return load_pair(cert_path, key_path)
    except ValueError as e:
        raise CAError(f"cannot load CA: {e}") from e


def _write_out(pair: CertKeyPair, out_dir: Path, name: str) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = out_dir / f"{name}.crt", out_dir / f"{name}.key"
    write_pair(pair, cert_path, key_path)
    print(f"issued {pair.cert.subject.rfc4514_string()} (expires {pair.cert.not_valid_after_utc:%Y-%m-%d})")
    _print_paths(cert_path, key_path)


def _print_paths(cert_path: Path, key_path: Path) -> None:
    print(f"certificate: {cert_path.resolve()}")
    print(f"key:         {key_path.resolve()}")


def _check_ips(raw: list[str]) -> list[str]:
    out = []
    for value in raw:
        try:
            out.append(str(ipaddress.ip_address(value)))
        except ValueError:
            raise _BadInput(f"--ip {value!r} is not an IP address") from None
    return out


def _check_days(days: int) -> None:
    if days <= 0:
        raise _BadInput(f"--days must be positive, got {days}")
