"""Every kind this server serves, in discovery order."""

from __future__ import annotations

from aggapi.apis.edgenode import EDGENODE
from aggapi.apis.nodepool import NODEPOOL
from aggapi.apis.uniteddeployment import UNITEDDEPLOYMENT
from aggapi.registry.resource import ResourceDef

KINDS: tuple[ResourceDef, ...] = (NODEPOOL, EDGENODE, UNITEDDEPLOYMENT)

# Kinds served from memory by a view the server is given, not stored in etcd.
VIRTUAL: frozenset[str] = frozenset({EDGENODE.resource})
