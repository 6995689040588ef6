"""Field selectors (`fieldSelector=`), parsed and matched as k8s.io/apimachinery/pkg/fields does."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from aggapi.machinery.labels import SelectorError

EQUALS, NOT_EQUALS = "=", "!="
# "==" is tried before "=" so it never leaves a stray "=" at the start of the value.
_TERM_OPERATORS = ("!=", "==", "=")


@dataclass(frozen=True, slots=True)
class FieldRequirement:
    field: str
    operator: str  # "=" or "!=" ("==" is read as "=")
    value: str

    def matches(self, fields: Mapping[str, str]) -> bool:
        # An absent field reads as "", exactly like kube's fields.Set.Get.
        have = fields.get(self.field, "")
        return have == self.value if self.operator == EQUALS else have != self.value

    def __str__(self) -> str:
        return f"{self.field}{self.operator}{escape_value(self.value)}"


@dataclass(frozen=True, slots=True)
class FieldSelector:
    requirements: tuple[FieldRequirement, ...] = ()

    def matches(self, fields: Mapping[str, str]) -> bool:
        return all(r.matches(fields) for r in self.requirements)

    def empty(self) -> bool:
        return not self.requirements

    def fields(self) -> set[str]:
        """The field names used, so a registry can refuse unsupported ones ("field label not supported")."""
        return {r.field for r in self.requirements}

    def requires_exact_match(self, field: str) -> str | None:
        """The value `field` must equal for a match (e.g. metadata.name=x lets storage do a get)."""
        for r in self.requirements:
            if r.field == field and r.operator == EQUALS:
                return r.value
        return None

    def __str__(self) -> str:
        return ",".join(str(r) for r in self.requirements)


EVERYTHING = FieldSelector()


def escape_value(value: str) -> str:
    """fields.EscapeValue: backslash-escape \\, ',' and '=' so a value can sit in a selector string."""
    return value.replace("\\", "\\\\").replace(",", "\\,").replace("=", "\\=")


def unescape_value(value: str) -> str:
    """fields.UnescapeValue; SelectorError with kube's message on a bad escape or a bare ',' / '='."""
    out: list[str] = []
    in_slash = False
    for ch in value:
        if in_slash:
            if ch not in "\\,=":
                raise SelectorError(f"invalid field selector: invalid escape sequence: \\{ch}")
            out.append(ch)
            in_slash = False
        elif ch == "\\":
            in_slash = True
        elif ch in ",=":
            # Go formats the rune with %v, which prints its code point number.
            raise SelectorError(f"invalid field selector: unescaped character in value: {ord(ch)}")
        else:
            out.append(ch)
    if in_slash:
        raise SelectorError("invalid field selector: invalid escape sequence: \\")
    return "".join(out)


def _split_terms(text: str) -> list[str]:
    """Split on commas that are not backslash-escaped; the escapes stay in the terms."""
    if not text:
        return []
    terms: list[str] = []
    start, in_slash = 0, False
    for i, ch in enumerate(text):
        if in_slash:
            in_slash = False
        elif ch == "\\":
            in_slash = True
        elif ch == ",":
            terms.append(text[start:i])
            start = i + 1
    terms.append(text[start:])
    return terms


def _split_term(term: str) -> tuple[str, str, str] | None:
    # The field name has no escaping, so the first operator found is the split point.
    for i in range(len(term)):
        for op in _TERM_OPERATORS:
            if term.startswith(op, i):
                return term[:i], op, term[i + len(op) :]
    return None


def parse_field_selector(text: str) -> FieldSelector:
    """fields.ParseSelector: "" matches everything; empty terms are skipped; terms sort as kube sorts them."""
    reqs: list[FieldRequirement] = []
    # Go sorts byte strings; UTF-8 byte order equals code point order, which is how Python sorts str.
    for term in sorted(_split_terms(text)):
        if not term:
            continue
        parts = _split_term(term)
        if parts is None:
            raise SelectorError(f"invalid selector: '{text}'; can't understand '{term}'")
        lhs, op, rhs = parts
        value = unescape_value(rhs)
        if not lhs and not value:
            continue  # kube drops a term whose field and value are both empty ("=" selects everything)
        reqs.append(FieldRequirement(lhs, NOT_EQUALS if op == NOT_EQUALS else EQUALS, value))
    return FieldSelector(tuple(reqs))
