"""The pods a simulated kubelet "runs": a scratch directory per pod and a CRI log file per container.

Layout under the root directory (mirrors /var/lib/kubelet/pods and /var/log/pods):
    pods/<namespace>_<name>/fs/                  exec's working directory (and $HOME)
    pods/<namespace>_<name>/logs/<container>.log
"""

from __future__ import annotations

import copy
import logging
import os
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from edge.kubelet_sim.config import NodeIdentity, PodObject
from edge.kubelet_sim.logs import append_log

log = logging.getLogger(__name__)

_SAFE = re.compile(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")


@dataclass(frozen=True, slots=True)
class Container:
    name: str
    log_path: Path
    spec: dict[str, Any]

    @property
    def env(self) -> dict[str, str]:
        """Literal `env` values from the spec (valueFrom is not resolved by the sim)."""
        return {e["name"]: str(e.get("value", "")) for e in self.spec.get("env", []) if "name" in e}


@dataclass(frozen=True, slots=True)
class Pod:
    namespace: str
    name: str
    uid: str
    obj: dict[str, Any]
    scratch: Path
    containers: dict[str, Container]

    @property
    def cwd(self) -> Path:
        return self.scratch / "fs"


def _check_name(kind: str, value: object) -> str:
    # Names become path components: refuse anything that is not a DNS-1123 name.
    if not isinstance(value, str) or not _SAFE.match(value):
        raise ValueError(f"invalid {kind} {value!r}")
    return value


class PodTable:
    """The node's current pods. `replace` is how the lab feeds the pods bound to this node."""

    def __init__(self, root: Path, node: NodeIdentity, clock: Callable[[], datetime]) -> None:
        self._root = root
        self._node = node
        self._clock = clock
        self._pods: dict[tuple[str, str], Pod] = {}

    def replace(self, pods: Iterable[PodObject]) -> None:
        fresh: dict[tuple[str, str], Pod] = {}
        for obj in pods:
            pod = self._materialize(obj)
            fresh[(pod.namespace, pod.name)] = pod
        self._pods = fresh

    def get(self, namespace: str, name: str) -> Pod | None:
        return self._pods.get((namespace, name))

    def container(self, namespace: str, pod: str, container: str) -> Container | None:
        p = self._pods.get((namespace, pod))
        return p.containers.get(container) if p else None

    def append_log(self, namespace: str, pod: str, container: str, data: str | bytes, stream: str) -> None:
        c = self.container(namespace, pod, container)
        if c is None:
            raise KeyError(f"no container {namespace}/{pod}/{container}")
        append_log(c.log_path, data, stream=stream, now=self._clock())

    def pod_list(self) -> dict[str, Any]:
        items = [p.obj for p in sorted(self._pods.values(), key=lambda p: (p.namespace, p.name))]
        return {"kind": "PodList", "apiVersion": "v1", "metadata": {}, "items": items}

    def _materialize(self, src: PodObject) -> Pod:
        obj: dict[str, Any] = copy.deepcopy(dict(src))
        meta = obj.setdefault("metadata", {})
        namespace = _check_name("namespace", meta.setdefault("namespace", "default"))
        name = _check_name("pod name", meta.get("name"))
        scratch = self._root / "pods" / f"{namespace}_{name}"
        (scratch / "fs").mkdir(parents=True, exist_ok=True)
        (scratch / "logs").mkdir(exist_ok=True)
        containers: dict[str, Container] = {}
        for spec in obj.get("spec", {}).get("containers", []):
            cname = _check_name("container name", spec.get("name"))
            path = scratch / "logs" / f"{cname}.log"
            if not path.exists():
                path.touch()
                os.chmod(path, 0o644)
            containers[cname] = Container(cname, path, spec)
        self._default_status(obj, containers)
        return Pod(namespace, name, str(meta.get("uid", "")), obj, scratch, containers)

    def _default_status(self, obj: dict[str, Any], containers: dict[str, Container]) -> None:
        """What the kubelet would report for a pod whose containers are all up, where the source has none."""
        status = obj.setdefault("status", {})
        if status.get("phase"):
            return
        started = obj.get("metadata", {}).get("creationTimestamp") or self._clock().strftime(
            "%Y-%m-%dT%H:%M:%SZ"
        )
        status.update(
            phase="Running",
            hostIP=self._node.address,
            podIP=self._node.address,
            startTime=started,
            conditions=[
                {"type": t, "status": "True", "lastTransitionTime": started}
                for t in ("PodScheduled", "Initialized", "ContainersReady", "Ready")
            ],
            containerStatuses=[
                {
                    "name": c.name,
                    "image": c.spec.get("image", ""),
                    "imageID": "",
                    "containerID": f"kubeletsim://{c.name}",
                    "ready": True,
                    "started": True,
                    "restartCount": 0,
                    "state": {"running": {"startedAt": started}},
                }
                for c in containers.values()
            ],
        )
