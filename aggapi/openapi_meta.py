"""OpenAPI models of the meta/v1 types every kind refers to (ObjectMeta, ListMeta, Status, ...).

Written once in a neutral form and rendered for v2 (`#/definitions/`) or v3
(`#/components/schemas/`). Descriptions are what `kubectl explain <kind>.metadata` prints.
"""

from __future__ import annotations

from typing import Any

META = "io.k8s.apimachinery.pkg.apis.meta.v1."
OBJECT_META = META + "ObjectMeta"
LIST_META = META + "ListMeta"
STATUS = META + "Status"
DELETE_OPTIONS = META + "DeleteOptions"
PATCH = META + "Patch"
WATCH_EVENT = META + "WatchEvent"
TIME = META + "Time"
RAW_EXTENSION = "io.k8s.apimachinery.pkg.runtime.RawExtension"

_CONVENTIONS = "https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md"
API_VERSION_DESC = (
    "APIVersion defines the versioned schema of this representation of an object. Servers convert "
    f"recognized schemas to the latest internal value. More info: {_CONVENTIONS}#resources"
)
KIND_DESC = (
    "Kind is a string value representing the REST resource this object represents, in CamelCase. "
    f"Cannot be updated. More info: {_CONVENTIONS}#types-kinds"
)
OBJECT_META_DESC = f"Standard object's metadata. More info: {_CONVENTIONS}#metadata"
LIST_META_DESC = f"Standard list metadata. More info: {_CONVENTIONS}#types-kinds"


# Query parameters of meta/v1 ListOptions, GetOptions, CreateOptions, UpdateOptions, PatchOptions and
# DeleteOptions (plus `pretty`, and `path` of connect endpoints): name → (type, description).
QUERY_PARAMS: dict[str, tuple[str, str]] = {
    "pretty": ("string", "If 'true', then the output is pretty printed."),
    "allowWatchBookmarks": ("boolean", "Requests watch events of type BOOKMARK; servers may ignore it."),
    "continue": ("string", "The continue token from a previous chunked list, to get the next chunk."),
    "fieldSelector": ("string", "Restrict the returned objects by their fields. Defaults to everything."),
    "labelSelector": ("string", "Restrict the returned objects by their labels. Defaults to everything."),
    "limit": ("integer", "Maximum number of items to return; a continue token is set if there are more."),
    "resourceVersion": ("string", "Constrains which resource versions the request may be served from."),
    "resourceVersionMatch": ("string", "How resourceVersion applies: Exact or NotOlderThan."),
    "sendInitialEvents": ("boolean", "With watch: start with synthetic ADDED events for the current state."),
    "timeoutSeconds": ("integer", "Timeout for the list/watch call, regardless of activity."),
    "watch": ("boolean", "Watch for changes to the described resources and return them as a stream."),
    "dryRun": ("string", "When present, modifications are not persisted. Valid value: All."),
    "fieldManager": ("string", "Name of the actor or entity making the change."),
    "fieldValidation": ("string", "How to treat unknown or duplicate fields: Ignore, Warn or Strict."),
    "force": ("boolean", "Force apply requests: take ownership of conflicting fields."),
    "gracePeriodSeconds": ("integer", "Seconds before the object should be deleted."),
    "orphanDependents": ("boolean", "Deprecated: use propagationPolicy."),
    "propagationPolicy": ("string", "Garbage collection mode: Orphan, Background or Foreground."),
    "path": ("string", "Path is the URL path to use for the current proxy request."),
}
PATH_PARAMS: dict[str, str] = {
    "name": "name of the object",
    "namespace": "object name and auth scope, such as for teams and projects",
    "path": "path to the resource",
}


def ref(name: str, *, v3: bool) -> dict[str, Any]:
    return {"$ref": ("#/components/schemas/" if v3 else "#/definitions/") + name}


def ref_field(name: str, description: str, *, v3: bool) -> dict[str, Any]:
    """A property holding a referenced model. OpenAPI 3.0 ignores siblings of $ref, so v3 wraps
    the ref in allOf (as kube's v3 does); v2 keeps kube's `$ref` + description form."""
    if v3:
        return {"allOf": [ref(name, v3=True)], "description": description}
    return {**ref(name, v3=False), "description": description}


def _s(description: str, **kw: Any) -> dict[str, Any]:
    return {"type": "string", "description": description, **kw}


def _i(description: str, fmt: str) -> dict[str, Any]:
    return {"type": "integer", "format": fmt, "description": description}


def _str_list(description: str, **kw: Any) -> dict[str, Any]:
    return {"type": "array", "items": {"type": "string", "default": ""}, "description": description, **kw}


def _type_meta() -> dict[str, Any]:
    return {"apiVersion": _s(API_VERSION_DESC), "kind": _s(KIND_DESC)}


def _object_meta(v3: bool) -> dict[str, Any]:
    def t(description: str) -> dict[str, Any]:
        return ref_field(TIME, description, v3=v3)

    return {
        "type": "object",
        "description": "ObjectMeta is metadata that all persisted resources must have, which includes all "
        "objects users must create.",
        "properties": {
            "name": _s(
                "Name must be unique within a namespace. Required when creating resources, although some "
                "resources may allow a client to request the generation of an appropriate name "
                "automatically. Cannot be updated."
            ),
            "generateName": _s(
                "Optional prefix the server uses to generate a unique name, only if name is not "
                "provided. The server appends a random suffix."
            ),
            "namespace": _s(
                "Namespace defines the space within which each name must be unique. Empty for "
                "cluster-scoped objects. Cannot be updated."
            ),
            "uid": _s(
                "UID is the unique in time and space value for this object, generated by the server on "
                "successful creation. Read-only."
            ),
            "resourceVersion": _s(
                "An opaque value that represents the internal version of this object. Used for "
                "optimistic concurrency, change detection, and the watch operation. Clients must treat "
                "it as opaque and pass it back unmodified. Read-only."
            ),
            "generation": _i(
                "A sequence number representing a specific generation of the desired state. Populated "
                "by the system. Read-only.",
                "int64",
            ),
            "creationTimestamp": t(
                "Time when this object was created, set by the server. Represented in RFC3339 form and "
                "is in UTC. Read-only."
            ),
            "deletionTimestamp": t(
                "RFC 3339 date and time at which this resource will be deleted, set by the server when "
                "a graceful deletion is requested. Read-only."
            ),
            "deletionGracePeriodSeconds": _i(
                "Number of seconds allowed for this object to gracefully terminate before it will be "
                "removed from the system. Only set when deletionTimestamp is also set. Read-only.",
                "int64",
            ),
            "labels": {
                "type": "object",
                "additionalProperties": {"type": "string", "default": ""},
                "description": "Map of string keys and values that can be used to organize and "
                "categorize (scope and select) objects.",
            },
            "annotations": {
                "type": "object",
                "additionalProperties": {"type": "string", "default": ""},
                "description": "Unstructured key value map stored with a resource that may be set by "
                "external tools to store and retrieve arbitrary metadata. Not queryable.",
            },
            "ownerReferences": {
                "type": "array",
                "items": ref(META + "OwnerReference", v3=v3),
                "description": "List of objects depended by this object. If ALL objects in the list "
                "have been deleted, this object will be garbage collected.",
                "x-kubernetes-list-map-keys": ["uid"],
                "x-kubernetes-list-type": "map",
                "x-kubernetes-patch-merge-key": "uid",
                "x-kubernetes-patch-strategy": "merge",
            },
            "finalizers": _str_list(
                "Must be empty before the object is deleted from the registry. Each entry is an "
                "identifier for the responsible component that will remove the entry from the list.",
                **{"x-kubernetes-list-type": "set", "x-kubernetes-patch-strategy": "merge"},
            ),
            "managedFields": {
                "type": "array",
                "items": ref(META + "ManagedFieldsEntry", v3=v3),
                "description": "Maps workflow-id and version to the set of fields that are managed by "
                "that workflow. Mostly for internal housekeeping; users should not set or understand it.",
                "x-kubernetes-list-type": "atomic",
            },
        },
    }


def _definitions(v3: bool, gvks: list[dict[str, str]]) -> dict[str, dict[str, Any]]:
    def r(name: str, description: str) -> dict[str, Any]:
        return ref_field(name, description, v3=v3)

    return {
        OBJECT_META: _object_meta(v3),
        LIST_META: {
            "type": "object",
            "description": "ListMeta describes metadata that synthetic resources must have, including "
            "lists and various status objects.",
            "properties": {
                "resourceVersion": _s(
                    "String that identifies the server's internal version of this list; pass it to a "
                    "watch to start right after the list. Opaque to clients. Read-only."
                ),
                "continue": _s(
                    "Set when the list was truncated because a limit was given; pass it as continue to "
                    "get the next chunk. Expires after some time (410 Gone)."
                ),
                "remainingItemCount": _i(
                    "Number of items left after this chunk, when the server can tell cheaply.", "int64"
                ),
            },
        },
        META + "OwnerReference": {
            "type": "object",
            "description": "OwnerReference contains enough information to let you identify an owning "
            "object. An owning object must be in the same namespace as the dependent, or be "
            "cluster-scoped, so there is no namespace field.",
            "required": ["apiVersion", "kind", "name", "uid"],
            "properties": {
                "apiVersion": _s("API version of the referent."),
                "kind": _s("Kind of the referent."),
                "name": _s("Name of the referent."),
                "uid": _s("UID of the referent."),
                "controller": {
                    "type": "boolean",
                    "description": "If true, this reference points to the managing controller.",
                },
                "blockOwnerDeletion": {
                    "type": "boolean",
                    "description": "If true, and the owner has the foregroundDeletion finalizer, the owner "
                    "cannot be deleted from storage until this reference is removed.",
                },
            },
            "x-kubernetes-map-type": "atomic",
        },
        META + "ManagedFieldsEntry": {
            "type": "object",
            "description": "ManagedFieldsEntry is a workflow-id, a FieldSet and the group version of the "
            "resource that the fieldset applies to.",
            "properties": {
                "manager": _s("Identifier of the workflow managing these fields."),
                "operation": _s("Type of operation which led to this entry: Apply or Update."),
                "apiVersion": _s("Version of the resource the field set applies to."),
                "time": r(TIME, "Timestamp of when the entry was last changed."),
                "fieldsType": _s("Format of the fieldsV1 field; the only valid value is FieldsV1."),
                "fieldsV1": r(META + "FieldsV1", "The set of fields managed, in FieldsV1 format."),
                "subresource": _s(
                    "Name of the subresource used to update the object; empty for the main resource."
                ),
            },
        },
        META + "FieldsV1": {
            "type": "object",
            "description": "FieldsV1 stores a set of fields as a JSON trie of field names and list keys.",
        },
        TIME: {
            "type": "string",
            "format": "date-time",
            "description": "Time is a wrapper around time.Time that serializes to RFC 3339 in UTC.",
        },
        STATUS: {
            "type": "object",
            "description": "Status is a return value for calls that don't return other objects.",
            "properties": {
                **_type_meta(),
                "metadata": r(LIST_META, LIST_META_DESC),
                "status": _s("Status of the operation: Success or Failure."),
                "message": _s("A human-readable description of the status of this operation."),
                "reason": _s(
                    "A machine-readable description of why this operation is in the Failure status."
                ),
                "details": r(META + "StatusDetails", "Extended data associated with the reason."),
                "code": _i("Suggested HTTP return code for this status, 0 if not set.", "int32"),
            },
            "x-kubernetes-group-version-kind": [{"group": "", "kind": "Status", "version": "v1"}],
        },
        META + "StatusDetails": {
            "type": "object",
            "description": "StatusDetails is a set of additional properties that MAY be set by the server "
            "to provide additional information about a response.",
            "properties": {
                "name": _s("The name attribute of the resource associated with the status."),
                "group": _s("The group attribute of the resource associated with the status."),
                "kind": _s("The kind attribute of the resource associated with the status."),
                "uid": _s("UID of the resource, when there is a single resource."),
                "causes": {
                    "type": "array",
                    "items": ref(META + "StatusCause", v3=v3),
                    "description": "The Causes array includes more details associated with the failure.",
                    "x-kubernetes-list-type": "atomic",
                },
                "retryAfterSeconds": _i("Seconds a client should wait before retrying, if set.", "int32"),
            },
        },
        META + "StatusCause": {
            "type": "object",
            "description": "StatusCause provides more information about an api.Status failure.",
            "properties": {
                "reason": _s("A machine-readable description of the cause of the error."),
                "message": _s("A human-readable description of the cause of the error."),
                "field": _s("The field of the resource that caused this error, e.g. spec.taints[0].key."),
            },
        },
        DELETE_OPTIONS: {
            "type": "object",
            "description": "DeleteOptions may be provided when deleting an API object.",
            "properties": {
                **_type_meta(),
                "gracePeriodSeconds": _i("Seconds before the object should be deleted.", "int64"),
                "preconditions": r(
                    META + "Preconditions", "Must be fulfilled before a deletion is carried out."
                ),
                "orphanDependents": {"type": "boolean", "description": "Deprecated: use propagationPolicy."},
                "propagationPolicy": _s("Garbage collection mode: Orphan, Background or Foreground."),
                "dryRun": _str_list(
                    "When present, modifications are not persisted. Valid value: All.",
                    **{"x-kubernetes-list-type": "atomic"},
                ),
            },
            "x-kubernetes-group-version-kind": [
                {"group": "", "kind": "DeleteOptions", "version": "v1"},
                *[{**g, "kind": "DeleteOptions"} for g in gvks],
            ],
        },
        META + "Preconditions": {
            "type": "object",
            "description": "Preconditions must be fulfilled before an operation is carried out.",
            "properties": {
                "resourceVersion": _s("Specifies the target ResourceVersion."),
                "uid": _s("Specifies the target UID."),
            },
        },
        PATCH: {
            "type": "object",
            "description": "Patch is provided to give a concrete name and type to the PATCH request body.",
        },
        WATCH_EVENT: {
            "type": "object",
            "description": "Event represents a single event to a watched resource.",
            "required": ["type", "object"],
            "properties": {
                "type": _s("ADDED, MODIFIED, DELETED, BOOKMARK or ERROR."),
                "object": r(
                    RAW_EXTENSION,
                    "The object: the new state for ADDED/MODIFIED, the last state for DELETED, a Status "
                    "for ERROR, an object carrying only metadata.resourceVersion for BOOKMARK.",
                ),
            },
            "x-kubernetes-group-version-kind": [
                {"group": "", "kind": "WatchEvent", "version": "v1"},
                *[{**g, "kind": "WatchEvent"} for g in gvks],
            ],
        },
        RAW_EXTENSION: {
            "type": "object",
            "description": "RawExtension holds an embedded object of any kind.",
        },
    }


def meta_definitions(*, v3: bool, group_versions: list[tuple[str, str]]) -> dict[str, dict[str, Any]]:
    """All meta/v1 models, rendered for v2 or v3. DeleteOptions and WatchEvent carry a GVK per
    served group version, as kube's do, so clients can decode them in any of them."""
    gvks = [{"group": g, "version": v} for g, v in group_versions]
    return _definitions(v3, gvks)


SCALE = "io.k8s.api.autoscaling.v1.Scale"


def scale_definitions(*, v3: bool) -> dict[str, dict[str, Any]]:
    """autoscaling/v1 Scale, the body of every `scale` subresource (what `kubectl scale` sends)."""
    return {
        SCALE: {
            "type": "object",
            "description": "Scale represents a scaling request for a resource.",
            "properties": {
                **_type_meta(),
                "metadata": ref_field(OBJECT_META, OBJECT_META_DESC, v3=v3),
                "spec": ref_field(SCALE + "Spec", "Desired state of the scaled object.", v3=v3),
                "status": ref_field(
                    SCALE + "Status", "Current state of the scaled object. Read-only.", v3=v3
                ),
            },
            "x-kubernetes-group-version-kind": [{"group": "autoscaling", "kind": "Scale", "version": "v1"}],
        },
        SCALE + "Spec": {
            "type": "object",
            "description": "ScaleSpec describes the attributes of a scale subresource.",
            "properties": {"replicas": _i("Desired number of instances for the scaled object.", "int32")},
        },
        SCALE + "Status": {
            "type": "object",
            "description": "ScaleStatus represents the current status of a scale subresource.",
            "required": ["replicas"],
            "properties": {
                "replicas": _i("Actual number of observed instances of the scaled object.", "int32"),
                "selector": _s("Label query over pods that should match the replicas count, in string form."),
            },
        },
    }
