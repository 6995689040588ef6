"""The built-in kinds the devcluster stores: schemaless objects (any fields kept), kube's scope, kind,
short names and status subresources, and a few printer columns. No defaulting and no validation
beyond ObjectMeta: the devcluster only has to store what clients send and hand it back."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from aggapi.apis.common import carry_status, only_status
from aggapi.registry.resource import FieldError, Obj, PrinterColumn, ResourceDef

SCHEMALESS: Mapping[str, Any] = {"type": "object", "x-kubernetes-preserve-unknown-fields": True}

# What kube's PrepareForCreate does to status: most kinds start with an empty one (their controllers
# fill it in); nodes keep what the kubelet registers with; pods and namespaces get their first phase.
OnCreate = Literal["clear", "keep"]


@dataclass(frozen=True, slots=True)
class Passthrough:
    """Main-resource strategy: keeps every field; with a status subresource, updates keep status."""

    has_status: bool
    on_create: OnCreate = "clear"
    initial_status: Mapping[str, Any] | None = None
    defaults: Mapping[str, Any] | None = None  # kube's defaulting for a few fields clients rely on

    def prepare_for_create(self, obj: Obj) -> None:
        if self.defaults:
            _set_defaults(obj, self.defaults)
        if not self.has_status:
            return
        if self.on_create == "clear":
            obj.pop("status", None)
        if self.initial_status is not None:
            status = obj.setdefault("status", {})
            if isinstance(status, dict):
                for k, v in self.initial_status.items():
                    status.setdefault(k, copy.deepcopy(v))

    def prepare_for_update(self, new: Obj, old: Obj) -> None:
        if self.has_status:
            carry_status(new, old)

    def validate(self, obj: Obj) -> list[FieldError]:
        return []

    def validate_update(self, new: Obj, old: Obj) -> list[FieldError]:
        return []


def _set_defaults(obj: dict[str, Any], defaults: Mapping[str, Any]) -> None:
    for k, v in defaults.items():
        if isinstance(v, Mapping):
            sub = obj.setdefault(k, {})
            if isinstance(sub, dict):
                _set_defaults(sub, v)
        elif obj.get(k) in (None, ""):
            obj[k] = copy.deepcopy(v)


class StatusOnly:
    """Status-subresource strategy: only status changes, everything else is the stored object's."""

    def prepare_for_create(self, obj: Obj) -> None:
        pass

    def prepare_for_update(self, new: Obj, old: Obj) -> None:
        only_status(new, old)

    def validate(self, obj: Obj) -> list[FieldError]:
        return []

    def validate_update(self, new: Obj, old: Obj) -> list[FieldError]:
        return []


AGE = PrinterColumn("Age", "date", ".metadata.creationTimestamp")


def col(name: str, json_path: str, type_: str = "string", priority: int = 0) -> PrinterColumn:
    return PrinterColumn(name, type_, json_path, priority=priority)


def kind(
    group: str,
    version: str,
    resource: str,
    kind_name: str,
    *,
    namespaced: bool,
    short: tuple[str, ...] = (),
    status: bool = False,
    columns: tuple[PrinterColumn, ...] = (AGE,),
    on_create: OnCreate = "clear",
    initial_status: Mapping[str, Any] | None = None,
    extra_subresources: tuple[str, ...] = (),
    extra: Mapping[str, Any] | None = None,
    categories: tuple[str, ...] = (),
    defaults: Mapping[str, Any] | None = None,
    selectable: tuple[str, ...] = (),
) -> ResourceDef:
    return ResourceDef(
        group=group,
        version=version,
        resource=resource,
        kind=kind_name,
        singular=kind_name.lower(),
        namespaced=namespaced,
        schema=SCHEMALESS,
        strategy=Passthrough(status, on_create, initial_status, defaults),
        status_strategy=StatusOnly() if status else None,
        short_names=short,
        categories=categories,
        printer_columns=columns,
        extra_subresources=extra_subresources,
        selectable_fields=selectable,
        extra=extra or {},
        description=f"{kind_name} (stored schemaless by the aggapi devcluster).",
    )


_ALL = ("all",)
POD_STREAMING = ("attach", "exec", "log", "portforward")
_CONNECT = ["create", "get"]

CORE: tuple[ResourceDef, ...] = (
    kind(
        "",
        "v1",
        "namespaces",
        "Namespace",
        namespaced=False,
        short=("ns",),
        status=True,
        columns=(col("Status", ".status.phase"), AGE),
        initial_status={"phase": "Active"},
    ),
    kind(
        "",
        "v1",
        "nodes",
        "Node",
        namespaced=False,
        short=("no",),
        status=True,
        on_create="keep",  # kubelets register with their status
        selectable=("spec.unschedulable",),
        extra_subresources=("proxy",),  # served by kubelet.py, through the egress selector
        extra={
            "subresource_verbs": {"proxy": ["create", "delete", "get", "patch", "update"]},
            "subresource_kinds": {"proxy": "NodeProxyOptions"},
        },
        columns=(
            AGE,
            col("Version", ".status.nodeInfo.kubeletVersion"),
            col("Internal-IP", ".status.addresses[0].address", priority=1),
        ),
    ),
    kind(
        "",
        "v1",
        "pods",
        "Pod",
        namespaced=True,
        short=("po",),
        status=True,
        columns=(
            col("Status", ".status.phase"),
            AGE,
            col("IP", ".status.podIP", priority=1),
            col("Node", ".spec.nodeName", priority=1),
        ),
        initial_status={"phase": "Pending"},
        categories=_ALL,
        # kube's PodToSelectableFields: what kubelets (spec.nodeName) and others select pods by
        selectable=(
            "spec.nodeName",
            "spec.restartPolicy",
            "spec.schedulerName",
            "spec.serviceAccountName",
            "spec.hostNetwork",
            "status.phase",
            "status.podIP",
            "status.nominatedNodeName",
        ),
        # streaming ones served by kubelet.py, through the egress selector; eviction by eviction.py
        extra_subresources=(*POD_STREAMING, "eviction"),
        extra={
            "subresource_verbs": {
                "eviction": ["create"],
                "log": ["get"],
                "exec": _CONNECT,
                "attach": _CONNECT,
                "portforward": _CONNECT,
            },
            "subresource_kinds": {
                "eviction": {"group": "policy", "version": "v1", "kind": "Eviction"},
                "log": "Pod",
                "exec": "PodExecOptions",
                "attach": "PodAttachOptions",
                "portforward": "PodPortForwardOptions",
            },
        },
    ),
    kind(
        "",
        "v1",
        "services",
        "Service",
        namespaced=True,
        short=("svc",),
        status=True,
        columns=(col("Type", ".spec.type"), col("Cluster-IP", ".spec.clusterIP"), AGE),
        categories=_ALL,
        defaults={"spec": {"type": "ClusterIP"}},
    ),
    kind("", "v1", "endpoints", "Endpoints", namespaced=True, short=("ep",)),
    kind("", "v1", "configmaps", "ConfigMap", namespaced=True, short=("cm",)),
    kind(
        "",
        "v1",
        "secrets",
        "Secret",
        namespaced=True,
        columns=(col("Type", ".type"), AGE),
        defaults={"type": "Opaque"},
    ),
    kind(
        "",
        "v1",
        "events",
        "Event",
        namespaced=True,
        short=("ev",),
        columns=(
            col("Type", ".type"),
            col("Reason", ".reason"),
            col("Object", ".involvedObject.name"),
            col("Message", ".message"),
            AGE,
        ),
    ),
    kind("", "v1", "serviceaccounts", "ServiceAccount", namespaced=True, short=("sa",)),
)

NAMED: tuple[ResourceDef, ...] = (
    kind(
        "discovery.k8s.io",
        "v1",
        "endpointslices",
        "EndpointSlice",
        namespaced=True,
        columns=(col("AddressType", ".addressType"), AGE),
    ),
    kind(
        "coordination.k8s.io",
        "v1",
        "leases",
        "Lease",
        namespaced=True,
        columns=(col("Holder", ".spec.holderIdentity"), AGE),
    ),
    kind(
        "apps",
        "v1",
        "deployments",
        "Deployment",
        namespaced=True,
        short=("deploy",),
        status=True,
        columns=(
            col("Ready", ".status.readyReplicas", "integer"),
            col("Up-to-date", ".status.updatedReplicas", "integer"),
            col("Available", ".status.availableReplicas", "integer"),
            AGE,
        ),
        categories=_ALL,
    ),
    kind(
        "apps",
        "v1",
        "statefulsets",
        "StatefulSet",
        namespaced=True,
        short=("sts",),
        status=True,
        columns=(col("Ready", ".status.readyReplicas", "integer"), AGE),
        categories=_ALL,
    ),
    kind(
        "apps",
        "v1",
        "daemonsets",
        "DaemonSet",
        namespaced=True,
        short=("ds",),
        status=True,
        columns=(
            col("Desired", ".status.desiredNumberScheduled", "integer"),
            col("Current", ".status.currentNumberScheduled", "integer"),
            col("Ready", ".status.numberReady", "integer"),
            AGE,
        ),
        categories=_ALL,
    ),
    kind(
        "certificates.k8s.io",
        "v1",
        "certificatesigningrequests",
        "CertificateSigningRequest",
        namespaced=False,
        short=("csr",),
        status=True,
        columns=(
            AGE,
            col("SignerName", ".spec.signerName"),
            col("Requestor", ".spec.username"),
            col("Condition", ".status.conditions[0].type"),
        ),
        extra_subresources=("approval",),
        extra={"subresource_verbs": {"approval": ["get", "patch", "update"]}},
    ),
    kind(
        "apiregistration.k8s.io",
        "v1",
        "apiservices",
        "APIService",
        namespaced=False,
        status=True,
        columns=(
            col("Service", ".spec.service.name"),
            col("Available", ".status.conditions[0].status"),
            AGE,
        ),
    ),
    kind(
        "policy",
        "v1",
        "poddisruptionbudgets",
        "PodDisruptionBudget",
        namespaced=True,
        short=("pdb",),
        status=True,
        columns=(
            col("Min Available", ".spec.minAvailable"),
            col("Max Unavailable", ".spec.maxUnavailable"),
            col("Allowed Disruptions", ".status.disruptionsAllowed", "integer"),
            AGE,
        ),
    ),
    # Stored so that manifests using them (aggapi's own RBAC and NetworkPolicy) apply; nothing
    # enforces them: the devcluster authorizes from its static policy file.
    kind("rbac.authorization.k8s.io", "v1", "clusterroles", "ClusterRole", namespaced=False),
    kind("rbac.authorization.k8s.io", "v1", "clusterrolebindings", "ClusterRoleBinding", namespaced=False),
    kind("rbac.authorization.k8s.io", "v1", "roles", "Role", namespaced=True),
    kind("rbac.authorization.k8s.io", "v1", "rolebindings", "RoleBinding", namespaced=True),
    kind("networking.k8s.io", "v1", "networkpolicies", "NetworkPolicy", namespaced=True, short=("netpol",)),
)

KINDS: tuple[ResourceDef, ...] = CORE + NAMED


def find(group: str, resource: str) -> ResourceDef:
    for d in KINDS:
        if d.group == group and d.resource == resource:
            return d
    raise KeyError(f"{resource}.{group}")
