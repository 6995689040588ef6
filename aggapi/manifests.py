"""`aggapi manifests`: render the apiservice/ kustomize tree for one cluster.

Copies the tree and fills in what differs per install: the image, the namespace (also inside DNS
names and etcd URLs), the APIService caBundle and, when given a CA directory, a serving certificate
and the Secret that carries it. The result is applied with `kubectl apply -k OUT`.

Exit status: 0 on success, 2 on bad input. Results go to stdout; errors to stderr.
"""

from __future__ import annotations

import argparse
import base64
import logging
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import yaml
from cryptography import x509

from aggapi import __version__
from certs.files import CAError, load_or_create_ca, load_pair, write_pair, write_pem_atomic
from certs.pki import CertKeyPair, issue_serving, issued_by, service_dns_names

log = logging.getLogger(__name__)

EXIT_BAD_INPUT = 2
# The manifests live at the repository root, beside the packages; a wheel install does not have them.
SOURCE_DIR = Path(__file__).resolve().parents[1] / "apiservice"
DEFAULT_NAMESPACE = "aggapi-system"
DEFAULT_IMAGE = f"aggapi:{__version__}"
SERVICE = "aggapi"
SECRET_NAME = "aggapi-serving"
SERVING_DAYS = 365
# A serving certificate closer than this to its expiry is re-issued instead of reused.
RENEW_BEFORE = timedelta(days=30)

# Paths inside the tree that get structured (YAML) edits; everything else is copied as text.
SERVER_KUSTOMIZATION = Path("server/kustomization.yaml")
APISERVICE_FILE = Path("server/apiservice.yaml")
SECRET_FILE = Path("server/serving-secret.yaml")
_NOT_RENDERED = ("image",)  # the Dockerfile is built from the repository, not applied

_DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
# Namespaces whose deletion (`kubectl delete -k`) would take unrelated things down with aggapi.
_RESERVED_NAMESPACES = frozenset({"default", "kube-system", "kube-public", "kube-node-lease"})
# Image references: no whitespace, no scheme; kustomize's `images:` wants name, tag and digest apart.
_COMPONENT = r"[a-z0-9]+(?:[._-]+[a-z0-9]+)*"
_IMAGE = re.compile(
    r"^(?:[a-zA-Z0-9.-]+(?::[0-9]+)?/)?"  # registry[:port]/
    rf"{_COMPONENT}(?:/{_COMPONENT})*"  # repository path
    r"(?::\w[\w.-]{0,127})?"  # :tag
    r"(?:@[a-z0-9]+(?:[.+_-][a-z0-9]+)*:[a-fA-F0-9]{32,})?$"  # @digest
)


class ManifestError(Exception):
    """Bad input or a broken source tree; the message says what to do."""


@dataclass(frozen=True, slots=True)
class RenderOptions:
    out: Path
    ca_dir: Path | None = None
    ca_bundle: Path | None = None
    serving_cert_dir: Path | None = None
    image: str = DEFAULT_IMAGE
    namespace: str = DEFAULT_NAMESPACE
    source: Path = SOURCE_DIR


@dataclass(frozen=True, slots=True)
class Serving:
    pair: CertKeyPair
    cert_path: Path
    key_path: Path
    issued: bool  # False: the certificate already there was kept


@dataclass(frozen=True, slots=True)
class Rendered:
    out: Path
    ca_bundle_pem: bytes
    serving: Serving | None  # None: the operator provides Secret aggapi-serving
    secret_file: Path | None


def render(opts: RenderOptions) -> Rendered:
    """Write the rendered tree into opts.out (created if missing; files of ours are overwritten)."""
    _check(opts)
    serving: Serving | None = None
    if opts.ca_dir is not None:
        # Never regenerates an existing CA: every APIService caBundle made from it would break.
        ca = load_or_create_ca(opts.ca_dir, "ca", common_name="aggapi-ca")
        bundle = ca.cert_pem()
        serving = _ensure_serving(ca, opts.serving_cert_dir or opts.out / "serving", opts.namespace)
    elif opts.ca_bundle is not None:
        bundle, cas = _read_bundle(opts.ca_bundle)
        if opts.serving_cert_dir is not None:
            serving = _existing_serving(opts.serving_cert_dir, cas, opts.namespace)
    else:
        raise ManifestError("give exactly one of --ca-dir and --ca-bundle")

    written = _copy_tree(opts.source, opts.out, opts.namespace)
    _set_ca_bundle(opts.out / APISERVICE_FILE, bundle)
    secret_file = opts.out / SECRET_FILE
    if serving is not None:
        write_pem_atomic(secret_file, _secret_yaml(serving.pair, opts.namespace), private=True)
        written.append(secret_file)
    else:
        # A Secret left by an earlier run would not be in the kustomization; don't leave a key lying around.
        secret_file.unlink(missing_ok=True)
    _edit_server_kustomization(opts.out / SERVER_KUSTOMIZATION, opts.image, with_secret=serving is not None)
    _verify(written, opts.namespace)
    return Rendered(
        out=opts.out,
        ca_bundle_pem=bundle,
        serving=serving,
        secret_file=secret_file if serving else None,
    )


# --- CLI -------------------------------------------------------------------------------------


def add_manifests_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser(
        "manifests",
        help="render the kustomize manifests that install aggapi into a cluster",
        description="Render apiservice/ into OUT for `kubectl apply -k OUT`.",
    )
    p.add_argument("--out", required=True, type=Path, help="directory to write the rendered tree into")
    p.add_argument(
        "--image", default=DEFAULT_IMAGE, help=f"aggapi container image (default: {DEFAULT_IMAGE})"
    )
    p.add_argument(
        "--namespace",
        default=DEFAULT_NAMESPACE,
        help=f"namespace to install into (default: {DEFAULT_NAMESPACE})",
    )
    ca = p.add_mutually_exclusive_group(required=True)
    ca.add_argument(
        "--ca-dir",
        type=Path,
        help="CA directory (ca.crt, ca.key; created if empty, never replaced): also issue the serving "
        "certificate and write Secret aggapi-serving",
    )
    ca.add_argument(
        "--ca-bundle",
        type=Path,
        help="PEM CA bundle that signed a serving certificate you manage yourself",
    )
    p.add_argument(
        "--serving-cert-dir",
        type=Path,
        help="where the serving tls.crt/tls.key are (with --ca-bundle: read from here to make the Secret; "
        "with --ca-dir: written here, default OUT/serving)",
    )


def run_manifests(args: argparse.Namespace) -> int:
    opts = RenderOptions(
        out=args.out,
        ca_dir=args.ca_dir,
        ca_bundle=args.ca_bundle,
        serving_cert_dir=args.serving_cert_dir,
        image=args.image,
        namespace=args.namespace,
    )
    try:
        result = render(opts)
    except (ManifestError, CAError, ValueError, OSError, yaml.YAMLError) as e:
        print(f"aggapi manifests: error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    print(f"rendered {result.out.resolve()} (namespace {opts.namespace}, image {opts.image})")
    if result.serving is not None:
        what = "issued" if result.serving.issued else "kept"
        print(f"serving certificate: {result.serving.cert_path.resolve()} ({what})")
        print(f"serving key:         {result.serving.key_path.resolve()}")
        print(f"secret:              {result.out.resolve() / SECRET_FILE}  (contains the private key)")
    else:
        print(
            f"no serving Secret rendered: create Secret {opts.namespace}/{SECRET_NAME} "
            "(type kubernetes.io/tls) yourself"
        )
    print(f"next: kubectl apply -k {result.out}")
    return 0


# --- checks ----------------------------------------------------------------------------------


def _check(opts: RenderOptions) -> None:
    if not (opts.source / "kustomization.yaml").is_file():
        raise ManifestError(
            f"the apiservice/ manifests are not at {opts.source}: `aggapi manifests` reads them from a "
            "source checkout of aggapi (they are not part of an installed wheel); run it from a "
            "checkout: `make venv && .venv/bin/aggapi manifests ...`"
        )
    if (opts.ca_dir is None) == (opts.ca_bundle is None):
        raise ManifestError("give exactly one of --ca-dir and --ca-bundle")
    ns = opts.namespace
    if len(ns) > 63 or not _DNS1123_LABEL.match(ns):
        raise ManifestError(f"--namespace {ns!r} is not a valid namespace name (lowercase DNS-1123 label)")
    if ns in _RESERVED_NAMESPACES:
        raise ManifestError(
            f"--namespace {ns!r} is shared with other workloads; the manifests own their namespace "
            "(`kubectl delete -k` deletes it), so choose a dedicated one"
        )
    if not _IMAGE.match(opts.image):
        raise ManifestError(f"--image {opts.image!r} is not an image reference like registry/aggapi:tag")
    out, src = opts.out.resolve(), opts.source.resolve()
    if out == src or src in out.parents:
        raise ManifestError(
            f"--out {opts.out} is inside the source tree {opts.source}; choose another directory"
        )


def _verify(paths: list[Path], namespace: str) -> None:
    """Catch a half-done rename or an insecure APIService before anyone applies the result."""
    for path in paths:
        for doc in yaml.safe_load_all(path.read_text()):
            for text in _strings(doc):
                if namespace != DEFAULT_NAMESPACE and _ns_token(DEFAULT_NAMESPACE).search(text):
                    raise ManifestError(f"{path}: {DEFAULT_NAMESPACE!r} left after renaming: {text!r}")
            is_apiservice = isinstance(doc, dict) and doc.get("kind") == "APIService"
            if is_apiservice and "insecureSkipTLSVerify" in doc.get("spec", {}):
                raise ManifestError(f"{path}: the APIService must not set insecureSkipTLSVerify")


# --- certificates ----------------------------------------------------------------------------


def _ensure_serving(ca: CertKeyPair, directory: Path, namespace: str) -> Serving:
    """Reuse the serving pair in `directory` while it fits; otherwise issue a new one there."""
    cert_path, key_path = directory / "tls.crt", directory / "tls.key"
    names = service_dns_names(SERVICE, namespace)
    if cert_path.exists() and key_path.exists():
        try:
            pair = load_pair(cert_path, key_path)
        except ValueError as e:
            log.warning("re-issuing the serving certificate: %s", e)
        else:
            if _fits(pair.cert, [ca.cert], names):
                return Serving(pair, cert_path, key_path, issued=False)
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    pair = issue_serving(
        ca, common_name=f"{SERVICE}.{namespace}.svc", dns_names=names, valid_days=SERVING_DAYS
    )
    write_pair(pair, cert_path, key_path)
    return Serving(pair, cert_path, key_path, issued=True)


def _existing_serving(directory: Path, cas: list[x509.Certificate], namespace: str) -> Serving:
    cert_path, key_path = directory / "tls.crt", directory / "tls.key"
    if not cert_path.exists() or not key_path.exists():
        raise ManifestError(f"--serving-cert-dir {directory} must hold tls.crt and tls.key")
    pair = load_pair(cert_path, key_path)
    if pair.cert.not_valid_after_utc <= datetime.now(UTC):
        raise ManifestError(f"{cert_path} expired at {pair.cert.not_valid_after_utc:%Y-%m-%d %H:%M} UTC")
    if not any(issued_by(pair.cert, ca) for ca in cas):
        raise ManifestError(
            f"{cert_path} is not signed by a CA in --ca-bundle; kube-apiserver would reject it"
        )
    want = f"{SERVICE}.{namespace}.svc"
    if want not in _dns_sans(pair.cert):
        raise ManifestError(f"{cert_path} lacks the DNS name {want} that kube-apiserver checks")
    return Serving(pair, cert_path, key_path, issued=False)


def _fits(cert: x509.Certificate, cas: list[x509.Certificate], names: list[str]) -> bool:
    fresh = cert.not_valid_after_utc - datetime.now(UTC) > RENEW_BEFORE
    return fresh and any(issued_by(cert, ca) for ca in cas) and set(names) <= set(_dns_sans(cert))


def _dns_sans(cert: x509.Certificate) -> list[str]:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    return san.get_values_for_type(x509.DNSName)


def _read_bundle(path: Path) -> tuple[bytes, list[x509.Certificate]]:
    data = path.read_bytes()
    try:
        cas = x509.load_pem_x509_certificates(data)
    except ValueError as e:
        raise ManifestError(f"--ca-bundle {path}: not a PEM certificate bundle: {e}") from e
    return data, cas


def _secret_yaml(pair: CertKeyPair, namespace: str) -> bytes:
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": SECRET_NAME,
            "namespace": namespace,
            "labels": {"app.kubernetes.io/name": "aggapi", "app.kubernetes.io/part-of": "aggapi"},
        },
        "type": "kubernetes.io/tls",
        "data": {"tls.crt": _b64(pair.cert_pem()), "tls.key": _b64(pair.key_pem())},
    }
    header = (
        "# Rendered by `aggapi manifests`: aggapi's serving certificate AND PRIVATE KEY. Do not commit.\n"
    )
    return (header + yaml.safe_dump(secret, sort_keys=False)).encode()


# --- the tree --------------------------------------------------------------------------------


def _copy_tree(source: Path, out: Path, namespace: str) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    written = []
    token = _ns_token(DEFAULT_NAMESPACE)
    for src in sorted(source.rglob("*")):
        rel = src.relative_to(source)
        if rel.parts[0] in _NOT_RENDERED or not src.is_file() or src.suffix not in (".yaml", ".yml"):
            continue
        dst = out / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        # A text rename keeps the comments; _verify() re-reads every document to check it.
        text = token.sub(namespace, src.read_text())
        dst.write_text(text)
        written.append(dst)
    return written


def _set_ca_bundle(path: Path, bundle: bytes) -> None:
    docs = _load(path)
    found = False
    for doc in docs:
        if isinstance(doc, dict) and doc.get("kind") == "APIService":
            spec = doc.setdefault("spec", {})
            spec["caBundle"] = _b64(bundle)
            spec.pop("insecureSkipTLSVerify", None)
            found = True
    if not found:
        raise ManifestError(f"{path}: no APIService document")
    _dump(path, docs, f"source comments: apiservice/{APISERVICE_FILE}")


def _edit_server_kustomization(path: Path, image: str, *, with_secret: bool) -> None:
    docs = _load(path)
    if len(docs) != 1 or not isinstance(docs[0], dict):
        raise ManifestError(f"{path}: expected one Kustomization document")
    kust: dict[str, Any] = docs[0]
    resources = [r for r in kust.get("resources", []) if r != SECRET_FILE.name]
    if with_secret:
        resources.append(SECRET_FILE.name)
    kust["resources"] = resources
    others = [i for i in kust.get("images", []) if i.get("name") != "aggapi"]
    kust["images"] = [*others, _image_entry(image)]
    _dump(path, docs, f"source comments: apiservice/{SERVER_KUSTOMIZATION}")


def _image_entry(image: str) -> dict[str, str]:
    """kustomize `images:` entry for the Deployment's `image: aggapi` placeholder."""
    name, _, digest = image.partition("@")
    slash = name.rfind("/")
    colon = name.rfind(":")
    tag = ""
    if colon > slash:  # a colon before the last slash is a registry port, not a tag
        name, tag = name[:colon], name[colon + 1 :]
    entry = {"name": "aggapi", "newName": name}
    if digest:
        entry["digest"] = digest  # the digest pins the image; a tag beside it would be ignored anyway
    elif tag:
        entry["newTag"] = tag
    return entry


def _load(path: Path) -> list[Any]:
    if not path.is_file():
        raise ManifestError(f"{path} is missing from the rendered tree; is the source tree complete?")
    return list(yaml.safe_load_all(path.read_text()))


def _dump(path: Path, docs: list[Any], note: str) -> None:
    body = yaml.safe_dump_all(docs, sort_keys=False, default_flow_style=False)
    path.write_text(f"# Rendered by `aggapi manifests` ({note}).\n{body}")


def _strings(node: Any) -> Iterator[str]:
    if isinstance(node, str):
        yield node
    elif isinstance(node, dict):
        for k, v in node.items():
            yield from _strings(k)
            yield from _strings(v)
    elif isinstance(node, list):
        for v in node:
            yield from _strings(v)


def _ns_token(namespace: str) -> re.Pattern[str]:
    # Whole DNS labels only: `aggapi-system` in `x.aggapi-system.svc`, never inside `aggapi-systemd`.
    return re.compile(rf"(?<![a-z0-9-]){re.escape(namespace)}(?![a-z0-9-])")


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")
