"""Server-side printing: Table and PartialObjectMetadata conversions (kubectl get, the GC)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from aggapi.machinery.jsonpath import evaluate
from aggapi.machinery.timefmt import human_duration, parse_rfc3339
from aggapi.registry.resource import Obj, PrinterColumn

NAME_DESCRIPTION = (
    "Name must be unique within a namespace. Is required when creating resources, although some resources "
    "may allow a client to request the generation of an appropriate name automatically."
)


def column_definitions(columns: Sequence[PrinterColumn]) -> list[dict[str, Any]]:
    defs = [
        {"name": "Name", "type": "string", "format": "name", "description": NAME_DESCRIPTION, "priority": 0}
    ]
    for c in columns:
        defs.append(
            {
                "name": c.name,
                "type": c.type,
                "format": c.format,
                "description": c.description,
                "priority": c.priority,
            }
        )
    return defs


def _cell(obj: Obj, col: PrinterColumn, now: datetime) -> Any:
    value = evaluate(obj, col.json_path)
    if value is None:
        return None
    if col.type == "date" and isinstance(value, str):
        try:
            return human_duration((now - parse_rfc3339(value)).total_seconds())
        except ValueError:
            return value
    if col.type == "integer" and isinstance(value, bool | float):
        return int(value)
    if isinstance(value, list | dict):
        return str(value)
    return value


def partial(obj: Obj, version: str) -> Obj:
    return {
        "kind": "PartialObjectMetadata",
        "apiVersion": f"meta.k8s.io/{version}",
        "metadata": obj["metadata"],
    }


def row(
    obj: Obj, columns: Sequence[PrinterColumn], include: str, version: str, now: datetime
) -> dict[str, Any]:
    r: dict[str, Any] = {"cells": [obj["metadata"].get("name", "")] + [_cell(obj, c, now) for c in columns]}
    if include == "Object":
        r["object"] = obj
    elif include != "None":
        r["object"] = partial(obj, version)
    return r


def table(
    objs: Sequence[Obj],
    columns: Sequence[PrinterColumn],
    *,
    version: str,
    include: str = "Metadata",
    list_meta: dict[str, Any] | None = None,
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> dict[str, Any]:
    now = clock()
    return {
        "kind": "Table",
        "apiVersion": f"meta.k8s.io/{version}",
        "metadata": list_meta or {},
        "columnDefinitions": column_definitions(columns),
        "rows": [row(o, columns, include, version, now) for o in objs],
    }


def partial_list(objs: Sequence[Obj], version: str, list_meta: dict[str, Any]) -> dict[str, Any]:
    return {
        "kind": "PartialObjectMetadataList",
        "apiVersion": f"meta.k8s.io/{version}",
        "metadata": list_meta,
        "items": [partial(o, version) for o in objs],
    }
