"""The lab that `aggapi dev` runs and the tests start: etcd, the devcluster, and `aggapi serve` behind
it, registered as the APIService v1alpha1.edge.aggapi.io exactly as in a cluster, so that
`kubectl get nodepools` goes kubectl → devcluster (authn, authz, aggregation) → aggapi (front-proxy
authn, SubjectAccessReview back to the devcluster) → etcd."""

from __future__ import annotations

import base64
import secrets
import sys
import urllib.request
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aggapi.devcluster.labhealth import PEER_PORT, HealthTiming, LabHealth
from aggapi.devcluster.labkit import Child, JSONClient, etcd_binary, free_port, wait_for
from aggapi.devcluster.labnodes import LabNodes, plan_nodes
from aggapi.devcluster.labpolicy import NAMESPACE, SA_USER, SAMPLE_APP_USER, SERVICE, write_policy
from aggapi.devcluster.labshadow import start_shadow
from aggapi.devcluster.pki import ensure_pki
from aggapi.kubeconfig import write_kubeconfig
from certs.files import load_or_create_ca, write_pair
from certs.pki import issue_serving, service_dns_names

APISERVICE = "v1alpha1.edge.aggapi.io"


@dataclass
class LabConfig:
    state: Path
    port: int = 6443  # the devcluster: what kubectl talks to
    aggapi_port: int = 8443
    etcd_servers: str = ""  # an etcd to use instead of starting one (tests share theirs)
    run_id: str = ""  # keeps the etcd prefixes of several labs on one etcd apart
    check_interval: str = "2s"
    extra_tokens: str = ""  # more token-file lines (tests)
    extra_policy: str = ""  # more YAML appended to the policy file (tests)
    nodes: int = 0  # simulated edge nodes (labnodes.py)
    node_addresses: tuple[str, ...] = ()  # default 127.0.1.(10+i)
    tunnel_port: int = 0  # aggapi's agent port; 0 picks a free one
    # Heartbeats: the kubelet-sims' lease renew interval and status update frequency, and the
    # devcluster's node lifecycle stand-in (kube's defaults are 10s, 10s, 40s and 5s; the lab is quicker).
    heartbeat_interval: str = "2s"
    node_monitor_grace_period: str = "6s"
    node_monitor_period: str = "1s"
    health: HealthTiming = field(default_factory=HealthTiming)  # the nodes' health agents (labhealth.py)
    health_eviction_grace_period: str = "1m"  # aggapi's (its default 5m is too slow to watch)
    shadows: bool = True  # a shadow-apiserver per node, which its kubelet-sim uses (labshadow.py)
    shadow_probe_period: str = "1s"  # the shadows' cloud probe (default 10s; the lab is quicker)
    say: Callable[[str], None] = field(default=lambda msg: print(msg, flush=True))


class Lab:
    def __init__(self, cfg: LabConfig) -> None:
        self.cfg = cfg
        self.state = cfg.state.resolve()
        self.pki_dir = self.state / "pki"
        self.kubeconfig = self.state / "kubeconfig"
        self.url = f"https://127.0.0.1:{cfg.port}"
        self.aggapi_url = f"https://127.0.0.1:{cfg.aggapi_port}"
        self.children: dict[str, Child] = {}
        self.etcd_servers = cfg.etcd_servers
        self.tunnel_port = cfg.tunnel_port or (free_port() if cfg.nodes else 0)
        self.edge: LabNodes | None = None
        self.health: LabHealth | None = None
        if cfg.nodes:
            nodes = plan_nodes(cfg.nodes, cfg.node_addresses)
            self.edge = LabNodes(
                self.state,
                self.state / "pki",
                nodes,
                self.start_child,
                self.url,
                cfg.heartbeat_interval,
                shadows=cfg.shadows,
            )
            self.health = LabHealth(self, cfg.health)

    # ---- files ------------------------------------------------------------------------------------

    def _prepare_files(self) -> None:
        self.state.mkdir(parents=True, exist_ok=True)
        self.pki = ensure_pki(self.pki_dir)
        aggapi_ca = load_or_create_ca(self.pki_dir, "aggapi-ca", common_name="aggapi-lab-ca")
        self.aggapi_ca = self.pki_dir / "aggapi-ca.crt"
        self.aggapi_cert, self.aggapi_key = self.pki_dir / "aggapi.crt", self.pki_dir / "aggapi.key"
        if not self.aggapi_cert.exists():
            names = [*service_dns_names(SERVICE, NAMESPACE), "localhost"]
            write_pair(
                issue_serving(aggapi_ca, common_name=SERVICE, dns_names=names, ips=["127.0.0.1"]),
                self.aggapi_cert,
                self.aggapi_key,
            )
        self.tokens = self.state / "tokens.csv"
        if not self.tokens.exists():
            groups = f"system:serviceaccounts,system:serviceaccounts:{NAMESPACE}"
            line = f'{secrets.token_urlsafe(32)},{SA_USER},{uuid.uuid4()},"{groups}"\n'
            self.tokens.write_text(
                '# token,user,uid,"groups" (kube\'s --token-auth-file)\n' + line + self.cfg.extra_tokens
            )
            self.tokens.chmod(0o600)
        if f",{SAMPLE_APP_USER}," not in self.tokens.read_text():  # also into a kept older file
            groups = "system:serviceaccounts,system:serviceaccounts:default"
            with self.tokens.open("a") as f:
                f.write(f'{secrets.token_urlsafe(32)},{SAMPLE_APP_USER},{uuid.uuid4()},"{groups}"\n')
        lines = self.tokens.read_text().splitlines()
        sa_token = next(ln.split(",", 1)[0] for ln in lines if f",{SA_USER}," in ln)
        sample_token = next(ln.split(",", 1)[0] for ln in lines if f",{SAMPLE_APP_USER}," in ln)
        if self.edge is not None:  # as a pod's projected ServiceAccount token, on each node
            self.edge.write_sample_app_token(sample_token)
        self.policy = self.state / "policy.yaml"
        names = [n.name for n in self.edge.nodes] if self.edge is not None else []
        write_policy(self.policy, names, self.cfg.extra_policy, self.cfg.say)
        self.aggapi_kubeconfig = self.state / "aggapi.kubeconfig"
        write_kubeconfig(
            self.aggapi_kubeconfig,
            server=self.url,
            ca_pem=self.pki.ca.read_bytes(),
            token=sa_token,
            user=SA_USER,
            context="devcluster",
        )
        if self.edge is not None and self.health is not None:
            self.edge.prepare_files()
            self.health.prepare_files()

    # ---- processes --------------------------------------------------------------------------------

    def start_child(self, name: str, args: list[str]) -> Child:
        c = Child(name, args, self.state / f"{name}.log")
        c.start()
        self.children[name] = c
        return c

    def _start_etcd(self) -> None:
        client, peer = free_port(), free_port()
        c = self.start_child(
            "etcd",
            [
                str(etcd_binary()),
                "--name=lab",
                f"--data-dir={self.state / 'etcd'}",
                f"--listen-client-urls=http://127.0.0.1:{client}",
                f"--advertise-client-urls=http://127.0.0.1:{client}",
                f"--listen-peer-urls=http://127.0.0.1:{peer}",
                f"--initial-advertise-peer-urls=http://127.0.0.1:{peer}",
                f"--initial-cluster=lab=http://127.0.0.1:{peer}",
            ],
        )
        self.etcd_servers = f"http://127.0.0.1:{client}"
        wait_for(
            "etcd",
            lambda: urllib.request.urlopen(f"{self.etcd_servers}/health", timeout=1).status == 200 or None,
            timeout=30,
            alive=[c],
        )

    def _prefix(self, base: str) -> str:
        return f"{base}-{self.cfg.run_id}" if self.cfg.run_id else base

    def admin(self) -> JSONClient:
        return JSONClient(self.url, self.pki.ca, (self.pki.admin_cert, self.pki.admin_key))

    def _start_devcluster(self) -> None:
        c = self.start_child(
            "devcluster",
            [
                sys.executable,
                "-m",
                "aggapi",
                "devcluster",
                "--bind-address=127.0.0.1",
                f"--secure-port={self.cfg.port}",
                f"--etcd-servers={self.etcd_servers}",
                f"--etcd-prefix={self._prefix('/devcluster')}",
                f"--pki-dir={self.pki_dir}",
                f"--token-auth-file={self.tokens}",
                f"--authorization-policy-file={self.policy}",
                f"--apiservice-check-interval={self.cfg.check_interval}",
                f"--node-monitor-grace-period={self.cfg.node_monitor_grace_period}",
                f"--node-monitor-period={self.cfg.node_monitor_period}",
                *(self.edge.devcluster_args() if self.edge is not None else []),
            ],
        )
        admin = self.admin()
        cm = "/api/v1/namespaces/kube-system/configmaps/extension-apiserver-authentication"
        wait_for("devcluster ready", lambda: admin.get("/readyz")[0] == 200 or None, timeout=30, alive=[c])
        wait_for(
            "extension-apiserver-authentication published",
            lambda: admin.get(cm)[0] == 200 or None,
            timeout=30,
            alive=[c],
        )

    def start_aggapi(self) -> None:
        edge = self.edge.tunnel_args(self.tunnel_port, self.aggapi_kubeconfig) if self.edge else []
        c = self.start_child(
            "aggapi",
            [
                sys.executable,
                "-m",
                "aggapi",
                "serve",
                "--bind-address=127.0.0.1",
                f"--secure-port={self.cfg.aggapi_port}",
                f"--tls-cert-file={self.aggapi_cert}",
                f"--tls-private-key-file={self.aggapi_key}",
                f"--etcd-servers={self.etcd_servers}",
                f"--etcd-prefix={self._prefix('/registry')}",
                f"--authentication-kubeconfig={self.aggapi_kubeconfig}",
                f"--authorization-kubeconfig={self.aggapi_kubeconfig}",
                f"--health-eviction-grace-period={self.cfg.health_eviction_grace_period}",
                *edge,
            ],
        )
        probe = JSONClient(self.aggapi_url, self.aggapi_ca)
        wait_for("aggapi ready", lambda: probe.get("/readyz")[0] == 200 or None, timeout=30, alive=[c])

    def stop_aggapi(self) -> None:
        self.stop_child("aggapi")

    # ---- edge nodes -------------------------------------------------------------------------------

    def start_agent(self, node: str) -> None:
        assert self.edge is not None
        self.edge.start_agent(self.edge.node(node), f"127.0.0.1:{self.tunnel_port}", self.aggapi_ca)

    def stop_agent(self, node: str) -> None:
        self.stop_child(f"agent-{node}")

    def cut_link(self, node: str) -> None:
        """Cut a node's cloud link as a network would: its tunnel agent stops and its relay to the
        devcluster resets every connection and refuses new ones (heartbeats, votes, and whatever else
        the node sends to kube-apiserver)."""
        assert self.edge is not None
        self.stop_agent(node)
        self.edge.relays[node].cut()

    def heal_link(self, node: str) -> None:
        assert self.edge is not None
        self.edge.relays[node].heal()
        if f"agent-{node}" not in self.children:
            self.start_agent(node)

    def link_is_cut(self, node: str) -> bool:
        assert self.edge is not None
        relay = self.edge.relays.get(node)
        return relay is not None and relay.is_cut

    def stop_child(self, name: str) -> None:
        c = self.children.pop(name, None)
        if c is not None:
            c.stop()

    def start_kubelet(self, node: str) -> None:
        """Start a node's kubelet-sim again (after stop_kubelet): it serves and heartbeats again."""
        assert self.edge is not None
        self.edge.start_sim(self.edge.node(node))

    def stop_kubelet(self, node: str) -> None:
        """Stop a node's kubelet-sim: its heartbeats stop, and so does its kubelet API."""
        self.stop_child(f"kubelet-{node}")

    def wait_nodes(self, timeout: float = 60) -> None:
        """Until every node's kubelet answers nodes/proxy/healthz through the devcluster (the tunnel)."""
        assert self.edge is not None
        for n in self.edge.nodes:
            self.edge.wait_proxied(self.admin(), n, list(self.children.values()), timeout)

    # ---- registration -----------------------------------------------------------------------------

    def register(self) -> None:
        """What `kubectl apply -k apiservice/` does for the server side, pointed at this aggapi."""
        admin = self.admin()
        meta = {"name": SERVICE, "namespace": NAMESPACE}
        admin.apply(
            "/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}}
        )
        admin.apply(
            f"/api/v1/namespaces/{NAMESPACE}/services",
            {
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": meta,
                "spec": {
                    "type": "ClusterIP",
                    "ports": [{"name": "https", "port": 443, "targetPort": "https", "protocol": "TCP"}],
                },
            },
        )
        # Like --enable-aggregator-routing with a pod behind the Service: the endpoint is aggapi itself.
        admin.apply(
            f"/api/v1/namespaces/{NAMESPACE}/endpoints",
            {
                "apiVersion": "v1",
                "kind": "Endpoints",
                "metadata": meta,
                "subsets": [
                    {
                        "addresses": [{"ip": "127.0.0.1"}],
                        "ports": [{"name": "https", "port": self.cfg.aggapi_port, "protocol": "TCP"}],
                    }
                ],
            },
        )
        admin.apply(
            "/apis/apiregistration.k8s.io/v1/apiservices",
            {
                "apiVersion": "apiregistration.k8s.io/v1",
                "kind": "APIService",
                "metadata": {"name": APISERVICE},
                "spec": {
                    "group": "edge.aggapi.io",
                    "version": "v1alpha1",
                    "groupPriorityMinimum": 1000,
                    "versionPriority": 15,
                    "service": {"namespace": NAMESPACE, "name": SERVICE, "port": 443},
                    "caBundle": base64.b64encode(self.aggapi_ca.read_bytes()).decode(),
                },
            },
        )

    def available(self) -> dict[str, Any] | None:
        code, obj = self.admin().get(f"/apis/apiregistration.k8s.io/v1/apiservices/{APISERVICE}")
        if code != 200:
            return None
        return next(
            (c for c in (obj.get("status") or {}).get("conditions") or [] if c.get("type") == "Available"),
            None,
        )

    def wait_available(self, want: str = "True", timeout: float = 60) -> dict[str, Any]:
        def probe() -> dict[str, Any] | None:
            cond = self.available()
            return cond if cond is not None and cond.get("status") == want else None

        return wait_for(
            f"APIService {APISERVICE} Available={want}",
            probe,
            timeout=timeout,
            alive=list(self.children.values()),
        )

    def wait_served(self, timeout: float = 60) -> None:
        """Until kubectl would work: nodepools in the devcluster's discovery and listable through it."""
        admin = self.admin()
        accept = {"Accept": "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList"}

        def probe() -> bool | None:
            code, doc = admin.get("/apis", headers=accept)
            groups = {i["metadata"]["name"]: i for i in (doc or {}).get("items", [])} if code == 200 else {}
            versions = (groups.get("edge.aggapi.io") or {}).get("versions") or []
            if not any(r.get("resource") == "nodepools" for v in versions for r in v.get("resources") or []):
                return None
            return admin.get("/apis/edge.aggapi.io/v1alpha1/nodepools")[0] == 200 or None

        wait_for(
            "nodepools served through the devcluster",
            probe,
            timeout=timeout,
            interval=0.2,
            alive=list(self.children.values()),
        )

    def create_pools(self, names: list[str]) -> None:
        """The pools the simulated nodes are labelled into (apps.openyurt.io/nodepool), through the
        devcluster's aggregation like any client; idempotent across restarts of the lab."""
        admin = self.admin()
        for name in names:
            admin.apply(
                "/apis/edge.aggapi.io/v1alpha1/nodepools",
                {
                    "apiVersion": "edge.aggapi.io/v1alpha1",
                    "kind": "NodePool",
                    "metadata": {"name": name},
                    "spec": {"type": "Edge"},
                },
            )

    # ---- all of it --------------------------------------------------------------------------------

    def start(self) -> None:
        say = self.cfg.say
        try:
            self.kubeconfig.unlink(missing_ok=True)  # its presence means "ready": never a stale one
            self._prepare_files()
            if not self.etcd_servers:
                say("starting etcd ...")
                self._start_etcd()
            say(f"starting the devcluster (kube-apiserver stand-in) on {self.url} ...")
            self._start_devcluster()
            if self.edge is not None:
                say(f"registering {len(self.edge.nodes)} edge nodes and starting their kubelet-sims ...")
                self.edge.start_links()
                self.edge.register(self.admin())
                if self.cfg.shadows:
                    say("starting the nodes' shadow-apiservers (upstream: each node's cloud link) ...")
                    for n in self.edge.nodes:
                        start_shadow(self.edge, n, self.cfg.shadow_probe_period)
                self.edge.start_sims()
            say(f"starting aggapi on {self.aggapi_url} (delegating authn/authz to the devcluster) ...")
            self.start_aggapi()
            say(f"registering APIService {APISERVICE} ...")
            self.register()
            self.wait_available()
            self.wait_served()
            if self.edge is not None and self.health is not None:
                pools = sorted({n.pool for n in self.edge.nodes})
                say(f"creating NodePools {', '.join(pools)} ...")
                self.create_pools(pools)
                say(
                    f"starting tunnel agents (to 127.0.0.1:{self.tunnel_port}) and waiting for every node ..."
                )
                for n in self.edge.nodes:
                    self.start_agent(n.name)
                self.wait_nodes()
                say(f"starting health agents (peer port {PEER_PORT}, votes through the devcluster) ...")
                self.health.start_all()
            write_kubeconfig(
                self.kubeconfig,
                server=self.url,
                ca_pem=self.pki.ca.read_bytes(),
                cert_path=self.pki.admin_cert,
                key_path=self.pki.admin_key,
                context="aggapi-dev",
            )
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Health agents, tunnel agents, aggapi, kubelets, the devcluster, etcd: each stopped by its PID."""
        order = [n for n in self.children if n.startswith(("health-", "agent-"))] + ["aggapi"]
        order += [n for n in self.children if n.startswith(("kubelet-", "shadow-"))] + ["devcluster", "etcd"]
        for name in order + list(self.children):
            self.stop_child(name)
        if self.edge is not None:
            self.edge.stop_links()
