"""Every kind this server serves, in discovery order."""

from __future__ import annotations

from aggapi.apis.nodepool import NODEPOOL
from aggapi.registry.resource import ResourceDef

KINDS: tuple[ResourceDef, ...] = (NODEPOOL,)
