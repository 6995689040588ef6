"""The whole `aggapi dev` lab (devcluster + aggapi, registered as an APIService) for tests, on the
session's etcd with prefixes of its own, plus a few token users with known permissions:

  alice  may read and write nodepools (devcluster policy) and aggapi's SAR agrees
  bob    has no permissions: the devcluster's front door refuses him
  carol  is allowed by the devcluster's front door, but the SubjectAccessReview aggapi makes is
         denied (policy `reviewDenies`): aggapi itself must refuse her
"""

from __future__ import annotations

import logging
import random
import uuid
from pathlib import Path

from aggapi.devcluster.labhealth import METRICS_PORT, PEER_PORT
from aggapi.devcluster.labkit import free_port
from aggapi.devcluster.labnodes import SHADOW_PORTS, check_bindable
from aggapi.devlab import Lab, LabConfig

log = logging.getLogger(__name__)

TOKENS = {"alice": "alice-token-0123456789", "bob": "bob-token-0123456789", "carol": "carol-token-0123456789"}

EXTRA_TOKENS = "".join(f'{tok},{user},uid-{user},"lab-users"\n' for user, tok in TOKENS.items())

EXTRA_POLICY = """\
  - users: ["alice", "carol"]
    verbs: ["get", "list", "watch", "create", "update", "patch", "delete"]
    apiGroups: ["edge.aggapi.io"]
    resources: ["nodepools"]
reviewDenies:
  - users: ["carol"]
    verbs: ["*"]
    apiGroups: ["edge.aggapi.io"]
    resources: ["nodepools"]
"""


# Every port a lab node listens on: kubelet, shadow (HTTP, health, HTTPS), health agent (peers, metrics).
NODE_PORTS = (10250, *SHADOW_PORTS, PEER_PORT, METRICS_PORT)


def free_node_addresses(count: int) -> tuple[str, ...]:
    """`count` addresses 127.0.1.N (N in 100..250, away from `aggapi dev`'s .10 and up) free on every
    port a lab node uses."""
    candidates = random.sample(range(100, 251), k=151)
    found: list[str] = []
    for n in candidates:
        try:
            for port in NODE_PORTS:
                check_bindable(f"127.0.1.{n}", port)
        except RuntimeError:
            continue
        found.append(f"127.0.1.{n}")
        if len(found) == count:
            return tuple(found)
    raise RuntimeError(f"no {count} free 127.0.1.N:10250 addresses")


def start_lab(state: Path, etcd_servers: str, nodes: int = 0) -> Lab:
    lab = Lab(
        LabConfig(
            state,
            port=free_port(),
            aggapi_port=free_port(),
            etcd_servers=etcd_servers,
            run_id=uuid.uuid4().hex[:8],
            check_interval="500ms",
            extra_tokens=EXTRA_TOKENS,
            extra_policy=EXTRA_POLICY,
            say=log.info,
            nodes=nodes,
            node_addresses=free_node_addresses(nodes) if nodes else (),
        )
    )
    lab.start()
    return lab


def token_kubeconfig(lab: Lab, user: str, path: Path) -> Path:
    from aggapi.kubeconfig import write_kubeconfig

    path.parent.mkdir(parents=True, exist_ok=True)
    write_kubeconfig(path, server=lab.url, ca_pem=lab.pki.ca.read_bytes(), token=TOKENS[user], user=user)
    return path
