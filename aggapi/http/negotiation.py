"""Accept-header negotiation for the output shapes kube clients ask for (JSON, Table, metadata-only,
aggregated discovery). Protobuf is not offered: clients fall back to the next type they list."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from aggapi.machinery import apierrors

Shape = Literal["object", "table", "partial", "discovery-v2"]


@dataclass(frozen=True, slots=True)
class Target:
    shape: Shape
    version: str = ""  # meta.k8s.io version for table/partial; apidiscovery version for discovery

    @property
    def key(self) -> str:
        return f"{self.shape}/{self.version}"


JSON = Target("object")


def _media_ranges(accept: str) -> list[tuple[str, dict[str, str]]]:
    out = []
    for part in accept.split(","):
        fields = [f.strip() for f in part.split(";")]
        if not fields[0]:
            continue
        params: dict[str, str] = {}
        for f in fields[1:]:
            if "=" in f:
                k, v = f.split("=", 1)
                params[k.strip().lower()] = v.strip().strip('"')
        out.append((fields[0].lower(), params))
    return out


def _is_json(mtype: str) -> bool:
    return mtype in ("application/json", "application/*", "*/*")


def negotiate(accept: str, *, allow_table: bool = True, discovery: bool = False) -> Target:
    """First acceptable media range wins, as kube-apiserver does."""
    if not accept.strip():
        return JSON
    ranges = _media_ranges(accept)
    for mtype, params in ranges:
        if not _is_json(mtype):
            continue
        kind, group, version = params.get("as", ""), params.get("g", ""), params.get("v", "")
        if not kind:
            return JSON
        if discovery and kind == "APIGroupDiscoveryList" and group == "apidiscovery.k8s.io":
            if version in ("v2", "v2beta1"):
                return Target("discovery-v2", version)
            continue
        if group != "meta.k8s.io" or version not in ("v1", "v1beta1"):
            continue
        if kind == "Table" and allow_table:
            return Target("table", version)
        if kind in ("PartialObjectMetadata", "PartialObjectMetadataList"):
            return Target("partial", version)
    raise apierrors.not_acceptable(
        "only the following media types are accepted: application/json, "
        "application/json;as=Table;v=v1;g=meta.k8s.io, "
        "application/json;as=PartialObjectMetadata;v=v1;g=meta.k8s.io"
    )


def content_type_for(target: Target) -> str:
    if target.shape == "table":
        return f"application/json;as=Table;v={target.version};g=meta.k8s.io"
    if target.shape == "partial":
        return f"application/json;as=PartialObjectMetadata;v={target.version};g=meta.k8s.io"
    if target.shape == "discovery-v2":
        return f"application/json;g=apidiscovery.k8s.io;v={target.version};as=APIGroupDiscoveryList"
    return "application/json"
