"""The edge parts of `aggapi serve`, built from its options: the Node informer (kube-apiserver from
--kubeconfig or in-cluster), the tunnel server and its HTTP CONNECT egress, the edgenodes view and its
proxy and health subresources. The server runs what this returns as named background loops."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aggapi.apis.edgenode import EDGENODE
from aggapi.auth.kube import api_client
from aggapi.controllers.nodes import NodeDirectory, node_informer
from aggapi.edge_api.edgenodes import EdgeNodeView
from aggapi.edge_api.egress_route import DirectPolicy, RoutingDialer
from aggapi.edge_api.health import HealthService, VoteStore
from aggapi.edge_api.kubelet import KubeletTLS, KubeletTLSConfig
from aggapi.edge_api.memstore import MemoryView, MemoryViewConfig
from aggapi.edge_api.proxy import EdgeNodeProxy
from aggapi.healthz import HealthCheck
from aggapi.options import ServerOptions
from aggapi.server import Background, Extensions
from aggapi.storage.etcd import EtcdClient, EtcdConfig
from aggapi.tunnel import EgressConfig, EgressServer, TunnelServer, TunnelServerConfig
from aggapi.tunnel.peers import PeerDiscovery

log = logging.getLogger(__name__)


@dataclass(slots=True)
class EdgeParts:
    extensions: Extensions
    background: list[Background] = field(default_factory=list)
    nodes: NodeDirectory | None = None
    tunnel: TunnelServer | None = None
    egress: EgressServer | None = None
    api: Any = None  # the kube-apiserver client, closed by close()
    closers: list[Callable[[], Awaitable[None]]] = field(default_factory=list)
    health: HealthService | None = None  # verdicts, for the pool topology

    async def close(self) -> None:
        if self.api is not None:
            await self.api.close()
        for close in self.closers:
            await close()


async def build_edge(opts: ServerOptions, serving_cert: str, serving_key: str) -> EdgeParts:
    c, t = opts.controllers, opts.tunnel
    api = await api_client(c.kubeconfig) if c.enabled else None
    background: list[Background] = []
    checks: list[HealthCheck] = []
    closers: list[Callable[[], Awaitable[None]]] = []
    if api is not None:
        informer = node_informer(api)
        nodes = NodeDirectory(informer)
        background.append(("node-informer", informer.run))

        async def informer_synced() -> None:
            if not informer.has_synced:
                raise RuntimeError("the Node informer has not listed nodes yet")

        checks.append(HealthCheck("node-informer-synced", informer_synced))
    else:
        nodes = NodeDirectory(None)
        log.warning(
            "no --kubeconfig and not in a pod: edgenodes lists nothing, and the tunnel refuses every agent "
            "(their addresses cannot be checked against Node objects)"
        )
    tunnel = egress = None
    if t.enabled:
        tunnel = TunnelServer(
            TunnelServerConfig(
                cert_file=Path(t.cert_file or serving_cert),
                key_file=Path(t.key_file or serving_key),
                agent_ca_file=Path(t.agent_ca_file),
                bind_address=t.bind_address or opts.serving.bind_address,
                port=t.port,
                allowed_ports=frozenset(t.allowed_ports),
                peers=t.peers,
            ),
            nodes,
        )
        background.append(("tunnel-server", tunnel.run))
        if t.advertise_address:
            e = opts.etcd
            etcd = EtcdClient(EtcdConfig(e.servers, e.cafile or None, e.certfile or None, e.keyfile or None))
            discovery = PeerDiscovery(
                etcd, e.prefix, tunnel.server_id, t.advertise_address, tunnel, static=t.peers
            )
            background.append(("tunnel-peer-discovery", discovery.run))
            closers.append(etcd.close)
        if t.egress_uds_path or t.egress_tls:
            egress = EgressServer(
                EgressConfig(
                    uds_path=Path(t.egress_uds_path) if t.egress_uds_path else None,
                    tls_port=t.egress_port if t.egress_tls else None,
                    tls_bind_address=t.bind_address or opts.serving.bind_address,
                    tls_cert_file=Path(t.cert_file or serving_cert) if t.egress_tls else None,
                    tls_key_file=Path(t.key_file or serving_key) if t.egress_tls else None,
                    client_ca_file=Path(t.egress_client_ca_file) if t.egress_tls else None,
                    allowed_names=t.egress_allowed_names,
                    cert_reload_interval=opts.serving.cert_reload_interval,
                ),
                RoutingDialer(
                    tunnel, nodes, DirectPolicy.parse(t.egress_direct_cidrs, t.egress_direct_domains)
                ),
            )
            background.append(("tunnel-egress", egress.run))
        elif t.egress_port:
            log.info(
                "TLS egress (--egress-port %d) not started: it needs --egress-client-ca-file", t.egress_port
            )
    else:
        log.info("edge tunnel not started (it needs --tunnel-agent-ca-file and a --tunnel-port other than 0)")
    e = opts.etcd
    health_etcd = EtcdClient(EtcdConfig(e.servers, e.cafile or None, e.certfile or None, e.keyfile or None))
    closers.append(health_etcd.close)
    health = HealthService(
        nodes, tunnel, VoteStore(health_etcd, e.prefix, c.health_vote_ttl), min_voters=c.health_min_voters
    )
    bookmark = {"apiVersion": EDGENODE.api_version, "kind": EDGENODE.kind}
    synced = nodes.informer.wait_synced if nodes.informer is not None else None
    view = EdgeNodeView(
        nodes, tunnel, MemoryView(MemoryViewConfig(bookmark), ready=synced), health=health.verdict_of
    )
    health.on_change = view.refresh
    if nodes.informer is not None:
        background.append(("edge-health-verdicts", health.run))
    if nodes.informer is not None:
        nodes.informer.add_handler(view.handler())
    if tunnel is not None:
        background.append(("edgenodes-tunnel-state", view.run))
    k = opts.kubelet
    tls = KubeletTLS(
        KubeletTLSConfig(
            k.certificate_authority, k.client_certificate, k.client_key, opts.serving.cert_reload_interval
        )
    )
    proxy = EdgeNodeProxy(nodes, tunnel, tls)
    ext = Extensions(
        views={EDGENODE.resource: view.view},
        subresources={(EDGENODE.resource, "proxy"): proxy, (EDGENODE.resource, "health"): health},
        ready_checks=checks,
        on_shutdown=(proxy.close_streams,),
    )
    return EdgeParts(ext, background, nodes, tunnel, egress, api, closers, health)
