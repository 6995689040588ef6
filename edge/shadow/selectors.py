"""Label and field selectors evaluated on cached objects (edge never imports aggapi, so this is a small
copy of k8s.io/apimachinery's labels/fields semantics, enough to answer lists and watches offline).

Labels: `k=v`, `k==v`, `k!=v`, `k in (a,b)`, `k notin (a,b)`, `k`, `!k`, `k>n`, `k<n`.
Fields: `f=v`, `f==v`, `f!=v` with `\\` escapes; `f` is a dotted path into the object (metadata.name,
metadata.namespace, spec.nodeName, status.phase, ... — every field kube-apiserver lets one select is
such a path); an absent field reads as "" as in kube's fields.Set."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


class SelectorError(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class LabelRequirement:
    key: str
    op: str  # = != in notin exists !exists gt lt
    values: tuple[str, ...] = ()

    def matches(self, labels: Mapping[str, Any]) -> bool:
        have = self.key in labels
        value = str(labels[self.key]) if have else ""
        if self.op == "=":
            return have and value == self.values[0]
        if self.op == "!=":
            return not have or value != self.values[0]
        if self.op == "in":
            return have and value in self.values
        if self.op == "notin":
            return not have or value not in self.values
        if self.op == "exists":
            return have
        if self.op == "!exists":
            return not have
        try:
            n, limit = int(value), int(self.values[0])
        except ValueError:
            return False
        return have and (n > limit if self.op == "gt" else n < limit)


@dataclass(frozen=True, slots=True)
class LabelSelector:
    requirements: tuple[LabelRequirement, ...] = ()

    def matches(self, labels: Mapping[str, Any]) -> bool:
        return all(r.matches(labels) for r in self.requirements)


def _split_top(text: str) -> list[str]:
    """Split on commas outside parentheses."""
    out: list[str] = []
    cur: list[str] = []
    depth = 0
    for ch in text:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == "," and depth == 0:
            out.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    out.append("".join(cur))
    return [t.strip() for t in out if t.strip()]


def parse_labels(text: str) -> LabelSelector:
    reqs: list[LabelRequirement] = []
    for term in _split_top(text):
        words = term.split()
        if len(words) >= 2 and words[1] in ("in", "notin"):
            rest = term.split(None, 2)[2].strip() if len(words) > 2 else ""
            if not (rest.startswith("(") and rest.endswith(")")):
                raise SelectorError(f"invalid label selector term {term!r}: want (values)")
            values = tuple(v.strip() for v in rest[1:-1].split(",") if v.strip())
            reqs.append(LabelRequirement(words[0], words[1], values))
        elif term.startswith("!"):
            reqs.append(LabelRequirement(term[1:].strip(), "!exists"))
        elif "!=" in term:
            k, v = term.split("!=", 1)
            reqs.append(LabelRequirement(k.strip(), "!=", (v.strip(),)))
        elif "==" in term:
            k, v = term.split("==", 1)
            reqs.append(LabelRequirement(k.strip(), "=", (v.strip(),)))
        elif "=" in term:
            k, v = term.split("=", 1)
            reqs.append(LabelRequirement(k.strip(), "=", (v.strip(),)))
        elif ">" in term or "<" in term:
            op = ">" if ">" in term else "<"
            k, v = term.split(op, 1)
            reqs.append(LabelRequirement(k.strip(), "gt" if op == ">" else "lt", (v.strip(),)))
        else:
            if " " in term:
                raise SelectorError(f"invalid label selector term {term!r}")
            reqs.append(LabelRequirement(term, "exists"))
    for r in reqs:
        if not r.key:
            raise SelectorError(f"invalid label selector {text!r}: empty key")
    return LabelSelector(tuple(reqs))


@dataclass(frozen=True, slots=True)
class FieldRequirement:
    path: str
    equal: bool
    value: str

    def matches(self, obj: Mapping[str, Any]) -> bool:
        return (field_value(obj, self.path) == self.value) == self.equal


@dataclass(frozen=True, slots=True)
class FieldSelector:
    requirements: tuple[FieldRequirement, ...] = ()

    def matches(self, obj: Mapping[str, Any]) -> bool:
        return all(r.matches(obj) for r in self.requirements)


def field_value(obj: Mapping[str, Any], path: str) -> str:
    cur: Any = obj
    for part in path.split("."):
        if not isinstance(cur, Mapping) or part not in cur:
            return ""
        cur = cur[part]
    if isinstance(cur, bool):
        return "true" if cur else "false"
    if isinstance(cur, str | int | float):
        return str(cur)
    return ""


def _split_escaped(text: str) -> list[str]:
    terms: list[str] = []
    cur: list[str] = []
    esc = False
    for ch in text:
        if esc:
            cur.append("\\" + ch)
            esc = False
        elif ch == "\\":
            esc = True
        elif ch == ",":
            terms.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    terms.append("".join(cur))
    return [t for t in terms if t]


def _unescape(value: str) -> str:
    out: list[str] = []
    esc = False
    for ch in value:
        if esc:
            out.append(ch)
            esc = False
        elif ch == "\\":
            esc = True
        else:
            out.append(ch)
    return "".join(out)


def parse_fields(text: str) -> FieldSelector:
    reqs: list[FieldRequirement] = []
    for term in _split_escaped(text):
        for op in ("!=", "==", "="):
            i = term.find(op)
            if i > 0:
                reqs.append(FieldRequirement(term[:i].strip(), op != "!=", _unescape(term[i + len(op) :])))
                break
        else:
            raise SelectorError(f"invalid field selector term {term!r}")
    return FieldSelector(tuple(reqs))


@dataclass(frozen=True, slots=True)
class Selection:
    """Namespace scope plus label and field selectors: what one list or watch asks for."""

    namespace: str | None
    labels: LabelSelector
    fields: FieldSelector

    @classmethod
    def parse(cls, namespace: str | None, label_selector: str, field_selector: str) -> Selection:
        return cls(namespace, parse_labels(label_selector), parse_fields(field_selector))

    def matches(self, obj: Mapping[str, Any]) -> bool:
        meta = obj.get("metadata") or {}
        if self.namespace is not None and meta.get("namespace") != self.namespace:
            return False
        return self.labels.matches(meta.get("labels") or {}) and self.fields.matches(obj)


def canonical(label_selector: str, field_selector: str) -> tuple[str, str]:
    """Selectors in one normal form (kube syntax, terms sorted), so equal selections share a view."""
    terms = []
    for r in parse_labels(label_selector).requirements:
        vals = ",".join(sorted(r.values))
        terms.append(
            {
                "=": f"{r.key}={vals}",
                "!=": f"{r.key}!={vals}",
                "in": f"{r.key} in ({vals})",
                "notin": f"{r.key} notin ({vals})",
                "exists": r.key,
                "!exists": f"!{r.key}",
                "gt": f"{r.key}>{vals}",
                "lt": f"{r.key}<{vals}",
            }[r.op]
        )
    fields = []
    for f in parse_fields(field_selector).requirements:
        value = f.value.replace("\\", "\\\\").replace(",", "\\,").replace("=", "\\=")
        fields.append(f"{f.path}{'=' if f.equal else '!='}{value}")
    return ",".join(sorted(terms)), ",".join(sorted(fields))
