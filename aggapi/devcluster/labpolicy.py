"""The lab's identities and the devcluster policy that grants aggapi's ServiceAccount what the real
manifests grant it (apiservice/server/rbac-*.yaml)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

NAMESPACE, SERVICE = "aggapi-system", "aggapi"
SA_USER = f"system:serviceaccount:{NAMESPACE}:{SERVICE}"
# The lab's sample in-cluster client: a pod's ServiceAccount, reading ConfigMaps of its namespace
# through its node's shadow-apiserver (HTTPS, its own token).
SAMPLE_APP_USER = "system:serviceaccount:default:sample-app"

# What the real manifests grant aggapi's ServiceAccount (apiservice/server/rbac-*.yaml): delegated
# authn/authz, reading the ConfigMap in kube-system, and what its controllers do with core kinds.
LAB_POLICY = f"""\
# The devcluster's authorization policy for the lab (format: docs/devcluster.md).
# Users in system:masters (the lab's admin kubeconfig) may do everything without a rule.
rules:
  # system:auth-delegator
  - users: ["{SA_USER}"]
    verbs: ["create"]
    apiGroups: ["authentication.k8s.io"]
    resources: ["tokenreviews"]
  - users: ["{SA_USER}"]
    verbs: ["create"]
    apiGroups: ["authorization.k8s.io"]
    resources: ["subjectaccessreviews"]
  # extension-apiserver-authentication-reader (list/watch by field selector, hence no resourceNames)
  - users: ["{SA_USER}"]
    verbs: ["get", "list", "watch"]
    apiGroups: [""]
    resources: ["configmaps"]
    namespaces: ["kube-system"]
  # aggapi:controller
  - users: ["{SA_USER}"]
    verbs: ["get", "list", "watch", "update", "patch"]
    apiGroups: [""]
    resources: ["nodes", "pods"]
  - users: ["{SA_USER}"]
    verbs: ["patch"]
    apiGroups: [""]
    resources: ["nodes/status"]
  - users: ["{SA_USER}"]
    verbs: ["create"]
    apiGroups: [""]
    resources: ["pods/eviction"]
  - users: ["{SA_USER}"]
    verbs: ["get", "list", "watch"]
    apiGroups: ["", "discovery.k8s.io", "policy", "coordination.k8s.io"]
    resources: ["services", "endpoints", "endpointslices", "poddisruptionbudgets", "leases"]
  # the servicetopology trigger touches slices (openyurt.io/update-trigger)
  - users: ["{SA_USER}"]
    verbs: ["patch"]
    apiGroups: ["", "discovery.k8s.io"]
    resources: ["endpoints", "endpointslices"]
  - users: ["{SA_USER}"]
    verbs: ["get", "list", "watch", "create", "update", "patch", "delete"]
    apiGroups: ["apps"]
    resources: ["deployments", "statefulsets"]
  - users: ["{SA_USER}"]
    verbs: ["create", "patch"]
    apiGroups: ["", "events.k8s.io"]
    resources: ["events"]
  # aggapi:leader-election (Role in aggapi's namespace)
  - users: ["{SA_USER}"]
    verbs: ["get", "list", "watch", "create", "update", "patch", "delete"]
    apiGroups: ["coordination.k8s.io"]
    resources: ["leases"]
    namespaces: ["{NAMESPACE}"]
"""


def node_rules(names: list[str]) -> str:
    """What kube's Node authorizer and system:node role let a kubelet do for its heartbeats, each node
    for its own objects only: its Lease in kube-node-lease (any node may create one, as creating names
    no object to authorize by) and its Node and the Node's status."""
    out = [
        "  # kubelets' heartbeats (Node authorizer)",
        '  - groups: ["system:nodes"]',
        '    verbs: ["create"]',
        '    apiGroups: ["coordination.k8s.io"]',
        '    resources: ["leases"]',
        '    namespaces: ["kube-node-lease"]',
        "  # health agents post peer votes; aggapi itself checks a node votes only as itself, in its pool",
        '  - groups: ["system:nodes"]',
        '    verbs: ["create", "get"]',
        '    apiGroups: ["edge.aggapi.io"]',
        '    resources: ["edgenodes/health"]',
        "  # the sample in-cluster client (a pod's ServiceAccount)",
        f'  - users: ["{SAMPLE_APP_USER}"]',
        '    verbs: ["get", "list", "watch"]',
        '    apiGroups: [""]',
        '    resources: ["configmaps"]',
        '    namespaces: ["default"]',
        "  # what a kubelet reads (system:node role), and what kube-proxy reads, which in the lab goes",
        "  # through the node's shadow-apiserver with the node's certificate (its own filter feed too)",
        '  - groups: ["system:nodes"]',
        '    verbs: ["get", "list", "watch"]',
        '    apiGroups: ["", "discovery.k8s.io"]',
        '    resources: ["pods", "services", "endpoints", "endpointslices", "nodes", "configmaps"]',
        '  - groups: ["system:nodes"]',
        '    verbs: ["get", "list", "watch"]',
        '    apiGroups: ["edge.aggapi.io"]',
        '    resources: ["nodepools"]',
        "  # ... and read their pool's members (names and addresses, as Nodes are readable by kubelets)",
        '  - groups: ["system:nodes"]',
        '    verbs: ["get"]',
        '    apiGroups: ["edge.aggapi.io"]',
        '    resources: ["nodepools/topology"]',
    ]
    for n in names:
        out += [
            f'  - users: ["system:node:{n}"]',
            '    verbs: ["get", "update"]',
            '    apiGroups: ["coordination.k8s.io"]',
            '    resources: ["leases"]',
            '    namespaces: ["kube-node-lease"]',
            f'    resourceNames: ["{n}"]',
            f'  - users: ["system:node:{n}"]',
            '    verbs: ["get", "patch", "update"]',
            '    apiGroups: [""]',
            '    resources: ["nodes", "nodes/status"]',
            f'    resourceNames: ["{n}"]',
        ]
    return "\n".join(out) + "\n"


def write_policy(path: Path, nodes: list[str], extra: str, say: Callable[[str], None]) -> None:
    """Written on the first run, then the user's to edit (kept as it is)."""
    if not path.exists():
        path.write_text(LAB_POLICY + node_rules(nodes) + extra)
        return
    text = path.read_text()
    markers = (SAMPLE_APP_USER, "update-trigger", *(f'"system:node:{n}"' for n in nodes))
    if any(m not in text for m in markers):
        say(
            f"warning: {path} (kept from an earlier run) lacks rules this lab needs (nodes, sample app, "
            "servicetopology trigger); "
            "delete it to have it written again (docs/devcluster.md)"
        )
