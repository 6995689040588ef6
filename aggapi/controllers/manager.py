"""The controllers of `aggapi serve`, assembled from options: the NodePool, UnitedDeployment, autonomy,
service topology trigger (with --servicetopology-trigger) and health eviction controllers (the last with
--health-eviction and edge health verdicts) run by the elected leader (or by every replica with
--leader-elect=false), pool delete admission and the topology subresource (every replica). The server
runs what this returns as named background loops."""

from __future__ import annotations

import asyncio
import logging
import socket
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aggapi.apis.nodepool import NODEPOOL
from aggapi.controllers.autonomy import AutonomyController, AutonomyControllerConfig
from aggapi.controllers.health import HealthEvictionConfig, HealthEvictionController
from aggapi.controllers.leader import KubeLease, LeaderElectionConfig, LeaderElector
from aggapi.controllers.nodepool import NodePoolController
from aggapi.controllers.nodes import NodeDirectory
from aggapi.controllers.servicetopology import ServiceTopologyTrigger
from aggapi.controllers.topology import Agents, PoolTopology
from aggapi.controllers.uniteddeployment import UnitedDeploymentController
from aggapi.edgeoptions import ControllerOptions
from aggapi.metrics import Metrics
from aggapi.server import Background, Extensions

log = logging.getLogger(__name__)


@dataclass(slots=True)
class ControllerParts:
    extensions: Extensions
    background: list[Background] = field(default_factory=list)
    nodepools: NodePoolController | None = None
    elector: LeaderElector | None = None
    autonomy: AutonomyController | None = None
    health: HealthEvictionController | None = None
    uniteddeployments: UnitedDeploymentController | None = None
    servicetopology: ServiceTopologyTrigger | None = None


def build_controllers(
    opts: ControllerOptions,
    api: Any | None,
    nodes: NodeDirectory,
    agents: Agents | None,
    metrics: Metrics,
    *,
    verdicts: Callable[[str], str] | None = None,
) -> ControllerParts:
    topology = PoolTopology(nodes, agents, api, verdicts=verdicts)
    subresources = {(NODEPOOL.resource, "topology"): topology}
    if api is None or nodes.informer is None:
        log.warning("no kube-apiserver connection: the NodePool controller does not run")
        return ControllerParts(Extensions(subresources=subresources, store_users=(topology.bind,)))
    ctl = NodePoolController(api, nodes.informer, observer=metrics)
    evicting = opts.health_eviction and verdicts is not None
    autonomy = AutonomyController(
        api, nodes.informer, config=AutonomyControllerConfig(edge_default=evicting), observer=metrics
    )
    health = None
    if evicting and verdicts is not None:
        health = HealthEvictionController(
            api,
            nodes.informer,
            verdicts,
            config=HealthEvictionConfig(grace_period=opts.health_eviction_grace_period),
            observer=metrics,
        )
    ud = UnitedDeploymentController(api, observer=metrics)
    st = (
        ServiceTopologyTrigger(api, nodes.informer, observer=metrics)
        if opts.servicetopology_trigger
        else None
    )
    leaders: list[Background] = [
        ("nodepool-controller", ctl.lead),
        ("uniteddeployment-controller", ud.lead),
        ("autonomy-controller", autonomy.lead),
    ]
    if health is not None:
        leaders.append(("health-eviction-controller", health.lead))
    if st is not None:
        leaders.append(("servicetopology-controller", st.lead))
    ext = Extensions(
        subresources=subresources,
        delete_admission={NODEPOOL.resource: ctl.admit_delete},
        store_users=(topology.bind, ctl.bind, ud.bind, *((st.bind,) if st is not None else ())),
    )
    if not opts.leader_elect:
        log.warning("leader election is off: this replica runs the controllers whatever others do")
        return ControllerParts(
            ext, leaders, ctl, autonomy=autonomy, health=health, uniteddeployments=ud, servicetopology=st
        )
    identity = f"{socket.gethostname()}_{uuid.uuid4()}"
    config = LeaderElectionConfig(
        identity,
        namespace=opts.lease_namespace,
        name=opts.lease_name,
        lease_duration=opts.lease_duration,
        renew_deadline=opts.renew_deadline,
        retry_period=opts.retry_period,
        request_timeout=min(5.0, opts.renew_deadline / 2),
    )
    lock = KubeLease(api, opts.lease_namespace, opts.lease_name, timeout=config.request_timeout)
    elector = LeaderElector(lock, config, observer=metrics)

    async def lead() -> None:
        async with asyncio.TaskGroup() as tg:
            for name, run in leaders:
                tg.create_task(run(), name=name)

    async def elect() -> None:
        await elector.run(lead)

    return ControllerParts(ext, [("leader-election", elect)], ctl, elector, autonomy, health, ud, st)
