"""What a kind module (aggapi/apis/<kind>.py) hands to the generic machinery.

The generic Store, the HTTP installer, discovery and OpenAPI are all driven by a `ResourceDef`;
none of them names a kind.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

Obj = dict[str, Any]


@dataclass(frozen=True, slots=True)
class FieldError:
    """One validation failure, rendered as a `details.causes` entry of a 422 Status."""

    field: str  # dotted path, e.g. "spec.taints[0].effect"
    reason: str  # FieldValueInvalid, FieldValueRequired, FieldValueNotSupported, FieldValueForbidden, ...
    message: str

    @staticmethod
    def invalid(path: str, value: object, detail: str) -> FieldError:
        return FieldError(path, "FieldValueInvalid", f"Invalid value: {_quote(value)}: {detail}")

    @staticmethod
    def required(path: str, detail: str = "") -> FieldError:
        return FieldError(path, "FieldValueRequired", "Required value" + (f": {detail}" if detail else ""))

    @staticmethod
    def not_supported(path: str, value: object, allowed: list[str]) -> FieldError:
        vals = ", ".join(f'"{a}"' for a in allowed)
        return FieldError(
            path, "FieldValueNotSupported", f"Unsupported value: {_quote(value)}: supported values: {vals}"
        )

    @staticmethod
    def forbidden(path: str, detail: str) -> FieldError:
        return FieldError(path, "FieldValueForbidden", f"Forbidden: {detail}")

    @staticmethod
    def immutable(path: str, value: object) -> FieldError:
        return FieldError(path, "FieldValueInvalid", f"Invalid value: {_quote(value)}: field is immutable")


def _quote(value: object) -> str:
    return f'"{value}"' if isinstance(value, str) else repr(value)


@dataclass(frozen=True, slots=True)
class PrinterColumn:
    """A Table column, as in a CRD's additionalPrinterColumns."""

    name: str
    type: str  # string | integer | number | boolean | date
    json_path: str  # e.g. ".spec.type"
    description: str = ""
    priority: int = 0
    format: str = ""


class Strategy(Protocol):
    """Per-kind behaviour on create and update (PrepareForCreate/Update + Validate in kube terms)."""

    def prepare_for_create(self, obj: Obj) -> None:
        """Default fields and clear what clients may not set (e.g. status on the main resource)."""

    def prepare_for_update(self, new: Obj, old: Obj) -> None:
        """Carry over what this endpoint does not own (status on main, spec on status)."""

    def validate(self, obj: Obj) -> list[FieldError]: ...

    def validate_update(self, new: Obj, old: Obj) -> list[FieldError]: ...


# Delete admission: called by the generic Store with the stored object before it is deleted (or marked
# for deletion); refuses by raising an apierrors.StatusError. Given per resource by whoever knows the
# state it depends on (e.g. a controller's caches), so the Store never names a kind.
AdmitDelete = Callable[[Obj], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class ResourceDef:
    group: str
    version: str
    resource: str  # plural, e.g. "nodepools"
    kind: str
    singular: str
    namespaced: bool
    schema: Mapping[str, Any]  # OpenAPI v3 schema of the whole object (structural, like a CRD's)
    strategy: Strategy
    status_strategy: Strategy | None = None  # set when the kind has a status subresource
    short_names: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()
    printer_columns: tuple[PrinterColumn, ...] = ()
    # Subresources served by handlers outside the generic store (e.g. "topology", "proxy").
    extra_subresources: tuple[str, ...] = ()
    # Field selectors beyond metadata.name/namespace (kube's per-kind GetAttrs, e.g. a pod's spec.nodeName).
    selectable_fields: tuple[str, ...] = ()
    verbs: tuple[str, ...] = (
        "create",
        "delete",
        "deletecollection",
        "get",
        "list",
        "patch",
        "update",
        "watch",
    )
    description: str = ""
    extra: Mapping[str, Any] = field(default_factory=dict)

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def list_kind(self) -> str:
        return self.kind + "List"

    @property
    def subresources(self) -> tuple[str, ...]:
        own = ("status",) if self.status_strategy is not None else ()
        return own + self.extra_subresources
