"""The lab's identities and the devcluster policy that grants aggapi's ServiceAccount what the real
manifests grant it (apiservice/server/rbac-*.yaml)."""

from __future__ import annotations

NAMESPACE, SERVICE = "aggapi-system", "aggapi"
SA_USER = f"system:serviceaccount:{NAMESPACE}:{SERVICE}"

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
