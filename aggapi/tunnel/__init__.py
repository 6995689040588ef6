"""Server side of the edge tunnel: agents' gRPC port, dial(), and the HTTP CONNECT egress for kube-apiserver.

Integration (inside `aggapi serve`, or alone):

    tunnel = TunnelServer(TunnelServerConfig(cert_file=..., key_file=..., agent_ca_file=...), node_addresses)
    egress = EgressServer(EgressConfig(uds_path=Path("/run/aggapi/egress.sock")), tunnel)
    async with asyncio.TaskGroup() as tg:
        tg.create_task(tunnel.run(), name="tunnel-server")
        tg.create_task(egress.run(), name="tunnel-egress")

`tunnel.dial(node_or_ip, 10250)` gives a TunnelConn for the proxy subresource; `tunnel.agents()` feeds
the edgenodes view.
"""

from aggapi.tunnel.config import AgentInfo, EgressConfig, TunnelServerConfig
from aggapi.tunnel.conn import ByteConn, TunnelConn, splice
from aggapi.tunnel.egress import EgressServer
from aggapi.tunnel.errors import DialError
from aggapi.tunnel.server import NodeAddresses, TunnelServer, TunnelStats

__all__ = [
    "AgentInfo",
    "ByteConn",
    "DialError",
    "EgressConfig",
    "EgressServer",
    "NodeAddresses",
    "TunnelConn",
    "TunnelServer",
    "TunnelServerConfig",
    "TunnelStats",
    "splice",
]
