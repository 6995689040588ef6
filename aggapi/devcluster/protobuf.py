"""Kubernetes protobuf request bodies for the few kinds kubectl sends that way.

client-go's typed clients send built-in kinds as `application/vnd.kubernetes.protobuf` (kubectl create
namespace|configmap|secret|serviceaccount, kubectl auth can-i|whoami). aggapi's HTTP layer speaks JSON
only (which is all an aggregated server needs), so the devcluster decodes these bodies itself: the
`k8s\\0` envelope (runtime.Unknown) and the message, by the field numbers of k8s.io/api's
generated.proto, into the JSON object the API would have received. Zero values are left out, as
`omitempty` would. Other kinds are refused with 415 as before."""

from __future__ import annotations

import base64
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from aggapi.http import body as bodies
from aggapi.machinery import apierrors
from aggapi.machinery.timefmt import format_rfc3339

MAGIC = b"k8s\x00"
CONTENT_TYPE = "application/vnd.kubernetes.protobuf"

# message → field number → (JSON name, type, repeated). Types: s(tring), b(ytes), i(nt), ? (bool),
# a message name, or "map:<value type>" (map entries are messages {1: key, 2: value}).
Field = tuple[str, str, bool]
META = "ObjectMeta"
SCHEMAS: Mapping[str, Mapping[int, Field]] = {
    META: {
        1: ("name", "s", False),
        2: ("generateName", "s", False),
        3: ("namespace", "s", False),
        5: ("uid", "s", False),
        6: ("resourceVersion", "s", False),
        7: ("generation", "i", False),
        8: ("creationTimestamp", "Time", False),
        9: ("deletionTimestamp", "Time", False),
        10: ("deletionGracePeriodSeconds", "i", False),
        11: ("labels", "map:s", False),
        12: ("annotations", "map:s", False),
        13: ("ownerReferences", "OwnerReference", True),
        14: ("finalizers", "s", True),
    },
    "OwnerReference": {
        1: ("kind", "s", False),
        3: ("name", "s", False),
        4: ("uid", "s", False),
        5: ("apiVersion", "s", False),
        6: ("controller", "?", False),
        7: ("blockOwnerDeletion", "?", False),
    },
    "ObjectReference": {
        1: ("kind", "s", False),
        2: ("namespace", "s", False),
        3: ("name", "s", False),
        4: ("uid", "s", False),
        5: ("apiVersion", "s", False),
    },
    "Time": {1: ("seconds", "i", False), 2: ("nanos", "i", False)},
    "Namespace": {1: ("metadata", META, False), 2: ("spec", "NamespaceSpec", False)},
    "NamespaceSpec": {1: ("finalizers", "s", True)},
    "ConfigMap": {
        1: ("metadata", META, False),
        2: ("data", "map:s", False),
        3: ("binaryData", "map:b", False),
        4: ("immutable", "?", False),
    },
    "Secret": {
        1: ("metadata", META, False),
        2: ("data", "map:b", False),
        3: ("type", "s", False),
        4: ("stringData", "map:s", False),
        5: ("immutable", "?", False),
    },
    "ServiceAccount": {
        1: ("metadata", META, False),
        2: ("secrets", "ObjectReference", True),
        4: ("automountServiceAccountToken", "?", False),
    },
    "TokenReview": {1: ("metadata", META, False), 2: ("spec", "TokenReviewSpec", False)},
    "TokenReviewSpec": {1: ("token", "s", False), 2: ("audiences", "s", True)},
    "SubjectAccessReview": {1: ("metadata", META, False), 2: ("spec", "SubjectAccessReviewSpec", False)},
    "SubjectAccessReviewSpec": {
        1: ("resourceAttributes", "ResourceAttributes", False),
        2: ("nonResourceAttributes", "NonResourceAttributes", False),
        3: ("user", "s", False),
        4: ("groups", "s", True),
        5: ("extra", "map:ExtraValue", False),
        6: ("uid", "s", False),
    },
    "SelfSubjectAccessReview": {
        1: ("metadata", META, False),
        2: ("spec", "SelfSubjectAccessReviewSpec", False),
    },
    "SelfSubjectAccessReviewSpec": {
        1: ("resourceAttributes", "ResourceAttributes", False),
        2: ("nonResourceAttributes", "NonResourceAttributes", False),
    },
    "ResourceAttributes": {
        1: ("namespace", "s", False),
        2: ("verb", "s", False),
        3: ("group", "s", False),
        4: ("version", "s", False),
        5: ("resource", "s", False),
        6: ("subresource", "s", False),
        7: ("name", "s", False),
    },
    "NonResourceAttributes": {1: ("path", "s", False), 2: ("verb", "s", False)},
    "ExtraValue": {1: ("items", "s", True)},
    "SelfSubjectReview": {1: ("metadata", META, False)},
}


class ProtobufError(ValueError):
    pass


def _varint(buf: bytes, i: int) -> tuple[int, int]:
    shift = result = 0
    while True:
        if i >= len(buf) or shift > 63:
            raise ProtobufError("truncated varint")
        b = buf[i]
        i += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, i
        shift += 7


def fields(buf: bytes) -> Iterator[tuple[int, int | bytes]]:
    """(field number, value) pairs of one message: varints as int, length-delimited as bytes."""
    i = 0
    while i < len(buf):
        tag, i = _varint(buf, i)
        number, wire = tag >> 3, tag & 7
        if wire == 0:
            value, i = _varint(buf, i)
            yield number, value
        elif wire == 2:
            n, i = _varint(buf, i)
            if i + n > len(buf):
                raise ProtobufError("truncated field")
            yield number, buf[i : i + n]
            i += n
        elif wire in (1, 5):
            i += 8 if wire == 1 else 4  # fixed-width: none of the kinds here use them
        else:
            raise ProtobufError(f"unsupported wire type {wire}")


def _signed(v: int) -> int:
    return v - (1 << 64) if v >= 1 << 63 else v


def _scalar(typ: str, raw: int | bytes) -> Any:
    if typ == "s":
        return raw.decode() if isinstance(raw, bytes) else str(raw)
    if typ == "b":
        return base64.b64encode(raw).decode() if isinstance(raw, bytes) else ""
    if typ == "i":
        return _signed(raw) if isinstance(raw, int) else 0
    if typ == "?":
        return bool(raw)
    if not isinstance(raw, bytes):
        raise ProtobufError(f"{typ} must be length-delimited")
    if typ == "Time":
        t = decode_message("Time", raw)
        if not t:
            return None
        return format_rfc3339(datetime.fromtimestamp(t.get("seconds", 0), UTC))
    if typ == "ExtraValue":
        return decode_message(typ, raw).get("items", [])
    return decode_message(typ, raw)


def decode_message(name: str, buf: bytes) -> dict[str, Any]:
    schema = SCHEMAS[name]
    out: dict[str, Any] = {}
    for number, raw in fields(buf):
        spec = schema.get(number)
        if spec is None:
            continue  # a field this table does not know: dropped, like an unknown JSON field
        key, typ, repeated = spec
        if typ.startswith("map:"):
            if not isinstance(raw, bytes):
                raise ProtobufError(f"{key}: map entries are messages")
            entry = dict(fields(raw))
            k = entry.get(1, b"")
            out.setdefault(key, {})[_scalar("s", k)] = _scalar(typ[4:], entry.get(2, b""))
            continue
        value = _scalar(typ, raw)
        if repeated:
            out.setdefault(key, []).append(value)
        elif value not in ("", 0, None, {}):  # False == 0: false booleans are left out too
            out[key] = value
    return out


def decode(body: bytes) -> dict[str, Any]:
    """The JSON form of a protobuf request body; ProtobufError if it is not one this table knows."""
    if not body.startswith(MAGIC):
        raise ProtobufError("missing the k8s protobuf envelope")
    envelope = dict(fields(body[len(MAGIC) :]))
    type_meta = envelope.get(1, b"")
    raw = envelope.get(2, b"")
    if not isinstance(type_meta, bytes) or not isinstance(raw, bytes):
        raise ProtobufError("malformed envelope")
    tm = {k: v.decode() for k, v in fields(type_meta) if isinstance(v, bytes)}
    api_version, kind = tm.get(1, ""), tm.get(2, "")
    if kind not in SCHEMAS or kind in (META, "Time"):
        raise ProtobufError(f"protobuf bodies of kind {kind!r} are not supported by the devcluster")
    return {"apiVersion": api_version, "kind": kind, **decode_message(kind, raw)}


# ---- the request hook ------------------------------------------------------------------------------


def is_protobuf(request: web.Request) -> bool:
    return request.headers.get("Content-Type", "").split(";")[0].strip().lower() == CONTENT_TYPE


async def read_object(request: web.Request) -> dict[str, Any]:
    try:
        return decode(await bodies.read_body(request))
    except ProtobufError as exc:
        raise apierrors.unsupported_media_type(f"cannot decode the protobuf body: {exc}") from None
