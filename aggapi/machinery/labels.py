"""Label selectors, parsed, matched and printed exactly as k8s.io/apimachinery/pkg/labels does.

The parser mirrors kube's lexer and recursive-descent parser token for token, so the same input
is accepted or refused with the same message kube-apiserver sends for `labelSelector=`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import Enum, auto
from typing import Any

from aggapi.machinery.gofmt import aggregate, field_error, go_bad_value, go_json, invalid_body
from aggapi.machinery.validation import is_qualified_name, is_valid_label_value


class SelectorError(ValueError):
    """A label or field selector kube-apiserver would refuse (400 BadRequest); str() is kube's text."""


EQUALS, DOUBLE_EQUALS, NOT_EQUALS = "=", "==", "!="
IN, NOT_IN, EXISTS, DOES_NOT_EXIST, GREATER_THAN, LESS_THAN = "in", "notin", "exists", "!", "gt", "lt"
# Order matters: it is the order kube lists them in "expected: ..." messages.
_BINARY_OPERATORS = (IN, NOT_IN, EQUALS, DOUBLE_EQUALS, NOT_EQUALS, GREATER_THAN, LESS_THAN)
_UNARY_OPERATORS = (EXISTS, DOES_NOT_EXIST)
_INT64_RE = re.compile(r"[+-]?[0-9]+")


def _parse_int64(text: str) -> int | None:
    """strconv.ParseInt(text, 10, 64), without Python int()'s leniency (spaces, underscores)."""
    if not _INT64_RE.fullmatch(text):
        return None
    value = int(text)
    return value if -(1 << 63) <= value < (1 << 63) else None


@dataclass(frozen=True, slots=True)
class Requirement:
    key: str
    operator: str  # "=", "==", "!=", "in", "notin", "exists", "!", "gt", "lt"
    values: tuple[str, ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        op = self.operator
        if op in (IN, EQUALS, DOUBLE_EQUALS):
            return self.key in labels and labels[self.key] in self.values
        if op in (NOT_IN, NOT_EQUALS):
            return self.key not in labels or labels[self.key] not in self.values
        if op == EXISTS:
            return self.key in labels
        if op == DOES_NOT_EXIST:
            return self.key not in labels
        if op in (GREATER_THAN, LESS_THAN):
            if self.key not in labels or len(self.values) != 1:
                return False
            have, want = _parse_int64(labels[self.key]), _parse_int64(self.values[0])
            if have is None or want is None:
                return False
            return have > want if op == GREATER_THAN else have < want
        return False

    def __str__(self) -> str:
        op = self.operator
        if op == EXISTS:
            return self.key
        if op == DOES_NOT_EXIST:
            return "!" + self.key
        symbol = {IN: " in ", NOT_IN: " notin ", GREATER_THAN: ">", LESS_THAN: "<"}.get(op, op)
        # Values print sorted so equal selectors print the same, whatever order they were given in.
        vals = self.values[0] if len(self.values) == 1 else ",".join(sorted(self.values))
        if op in (IN, NOT_IN):
            vals = f"({vals})"
        return f"{self.key}{symbol}{vals}"


@dataclass(frozen=True, slots=True)
class LabelSelector:
    requirements: tuple[Requirement, ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        return all(r.matches(labels) for r in self.requirements)

    def empty(self) -> bool:
        return not self.requirements

    def requires_exact_match(self, key: str) -> str | None:
        """The single value `key` must have for this selector to match, if the selector pins one."""
        for r in self.requirements:
            if r.key == key:
                if r.operator in (EQUALS, DOUBLE_EQUALS, IN) and len(r.values) == 1:
                    return r.values[0]
                return None
        return None

    def __str__(self) -> str:
        return ",".join(str(r) for r in self.requirements)


EVERYTHING = LabelSelector()


def _key_error(key: str, path: str | None) -> str | None:
    msgs = is_qualified_name(key)
    return field_error(path, invalid_body(key, "; ".join(msgs))) if msgs else None


def new_requirement(key: str, operator: str, values: Sequence[str] | None) -> Requirement:
    """labels.NewRequirement: validates key, operator arity and values; SelectorError on failure.
    `values=None` stands for a Go nil slice (it prints as `null` in messages)."""
    vals = list(values) if values is not None else []
    shown: Any = vals if values is not None else None
    errs: list[str] = []
    if (err := _key_error(key, "key")) is not None:
        errs.append(err)
    if operator in (IN, NOT_IN):
        if not vals:
            detail = "for 'in', 'notin' operators, values set can't be empty"
            errs.append(field_error("values", invalid_body(shown, detail)))
    elif operator in (EQUALS, DOUBLE_EQUALS, NOT_EQUALS):
        if len(vals) != 1:
            detail = "exact-match compatibility requires one single value"
            errs.append(field_error("values", invalid_body(shown, detail)))
    elif operator in _UNARY_OPERATORS:
        if vals:
            detail = "values set must be empty for exists and does not exist"
            errs.append(field_error("values", invalid_body(shown, detail)))
    elif operator in (GREATER_THAN, LESS_THAN):
        if len(vals) != 1:
            detail = "for 'Gt', 'Lt' operators, exactly one value is required"
            errs.append(field_error("values", invalid_body(shown, detail)))
        for i, v in enumerate(vals):
            if _parse_int64(v) is None:
                detail = "for 'Gt', 'Lt' operators, the value must be an integer"
                errs.append(field_error(f"values[{i}]", invalid_body(v, detail)))
    else:
        supported = ", ".join(go_json(op) for op in (*_BINARY_OPERATORS, *_UNARY_OPERATORS))
        # kube's BadValue here is a selection.Operator, which Go renders through json.Marshal.
        errs.append(
            field_error("operator", f"Unsupported value: {go_json(operator)}: supported values: {supported}")
        )
    for i, v in enumerate(vals):
        if msgs := is_valid_label_value(v):
            errs.append(field_error(f"values[{i}][{key}]", invalid_body(v, "; ".join(msgs))))
    if errs:
        raise SelectorError(aggregate(errs))
    return Requirement(key, operator, tuple(vals))


class _Tok(Enum):
    ERROR = auto()
    END = auto()
    CLOSE_PAR = auto()
    COMMA = auto()
    DOES_NOT_EXIST = auto()
    DOUBLE_EQUALS = auto()
    EQUALS = auto()
    GREATER_THAN = auto()
    IDENTIFIER = auto()
    IN = auto()
    LESS_THAN = auto()
    NOT_EQUALS = auto()
    NOT_IN = auto()
    OPEN_PAR = auto()


_LITERALS = {
    ")": _Tok.CLOSE_PAR,
    ",": _Tok.COMMA,
    "!": _Tok.DOES_NOT_EXIST,
    "==": _Tok.DOUBLE_EQUALS,
    "=": _Tok.EQUALS,
    ">": _Tok.GREATER_THAN,
    "in": _Tok.IN,
    "<": _Tok.LESS_THAN,
    "!=": _Tok.NOT_EQUALS,
    "notin": _Tok.NOT_IN,
    "(": _Tok.OPEN_PAR,
}
_SPECIAL = frozenset("=!(),><")
_WHITESPACE = frozenset(" \t\r\n")
_OPERATOR_TOKENS = {
    _Tok.IN: IN,
    _Tok.EQUALS: EQUALS,
    _Tok.DOUBLE_EQUALS: DOUBLE_EQUALS,
    _Tok.GREATER_THAN: GREATER_THAN,
    _Tok.LESS_THAN: LESS_THAN,
    _Tok.NOT_IN: NOT_IN,
    _Tok.NOT_EQUALS: NOT_EQUALS,
}


def _lex(text: str) -> list[tuple[_Tok, str]]:
    # Go's lexer reads a NUL byte as end of input; keep that so both stop at the same place.
    text = text.split("\x00", 1)[0]
    items: list[tuple[_Tok, str]] = []
    pos, n = 0, len(text)
    while True:
        while pos < n and text[pos] in _WHITESPACE:
            pos += 1
        if pos >= n:
            items.append((_Tok.END, ""))
            return items
        if text[pos] in _SPECIAL:
            # Longest run of special characters that is still a known token ("!=" over "!").
            buf, best = "", None
            while pos < n and text[pos] in _SPECIAL:
                cand = buf + text[pos]
                if cand in _LITERALS:
                    buf, best = cand, (_LITERALS[cand], cand)
                    pos += 1
                elif best is not None:
                    break
                else:
                    buf, pos = cand, pos + 1
            items.append(best or (_Tok.ERROR, f"error expected: keyword found '{buf}'"))
            continue
        start = pos
        while pos < n and text[pos] not in _SPECIAL and text[pos] not in _WHITESPACE:
            pos += 1
        word = text[start:pos]
        items.append((_LITERALS.get(word, _Tok.IDENTIFIER), word))


class _Parser:
    def __init__(self, text: str) -> None:
        self.items = _lex(text)
        self.pos = 0

    def lookahead(self, values: bool) -> tuple[_Tok, str]:
        tok, lit = self.items[self.pos]
        # In a value position "in" and "notin" are just words.
        if values and tok in (_Tok.IN, _Tok.NOT_IN):
            tok = _Tok.IDENTIFIER
        return tok, lit

    def consume(self, values: bool) -> tuple[_Tok, str]:
        item = self.lookahead(values)
        self.pos += 1
        return item

    def parse(self) -> list[Requirement]:
        reqs: list[Requirement] = []
        while True:
            tok, lit = self.lookahead(True)
            if tok in (_Tok.IDENTIFIER, _Tok.DOES_NOT_EXIST):
                try:
                    reqs.append(self.requirement())
                except SelectorError as err:
                    raise SelectorError(f"unable to parse requirement: {err}") from None
                tok, lit = self.consume(True)
                if tok == _Tok.END:
                    return reqs
                if tok != _Tok.COMMA:
                    raise SelectorError(f"found '{lit}', expected: ',' or 'end of string'")
                tok2, lit2 = self.lookahead(True)
                if tok2 not in (_Tok.IDENTIFIER, _Tok.DOES_NOT_EXIST):
                    raise SelectorError(f"found '{lit2}', expected: identifier after ','")
            elif tok == _Tok.END:
                return reqs
            else:
                raise SelectorError(f"found '{lit}', expected: !, identifier, or 'end of string'")

    def requirement(self) -> Requirement:
        operator = ""
        tok, key = self.consume(True)
        if tok == _Tok.DOES_NOT_EXIST:
            operator = DOES_NOT_EXIST
            tok, key = self.consume(True)
        if tok != _Tok.IDENTIFIER:
            raise SelectorError(f"found '{key}', expected: identifier")
        if (err := _key_error(key, None)) is not None:
            raise SelectorError(err)
        if self.lookahead(True)[0] in (_Tok.END, _Tok.COMMA) and operator != DOES_NOT_EXIST:
            operator = EXISTS
        if operator in _UNARY_OPERATORS:
            return new_requirement(key, operator, [])
        tok, lit = self.consume(False)
        if tok not in _OPERATOR_TOKENS:
            raise SelectorError(f"found '{lit}', expected: {', '.join(_BINARY_OPERATORS)}")
        operator = _OPERATOR_TOKENS[tok]
        values = self.value_set() if operator in (IN, NOT_IN) else self.exact_value()
        return new_requirement(key, operator, sorted(values))

    def value_set(self) -> set[str]:
        tok, lit = self.consume(True)
        if tok != _Tok.OPEN_PAR:
            raise SelectorError(f"found '{lit}' expected: '('")
        tok, lit = self.lookahead(True)
        if tok == _Tok.CLOSE_PAR:  # "()" means the one empty value
            self.consume(True)
            return {""}
        if tok not in (_Tok.IDENTIFIER, _Tok.COMMA):
            raise SelectorError(f"found '{lit}', expected: ',', ')' or identifier")
        values = self.identifier_list()
        if self.consume(True)[0] != _Tok.CLOSE_PAR:
            raise SelectorError(f"found '{lit}', expected: ')'")
        return values

    def identifier_list(self) -> set[str]:
        # Empty items count as the empty value: "(a,)", "(,a)" and "(a,,b)" all include "".
        values: set[str] = set()
        while True:
            tok, lit = self.consume(True)
            if tok == _Tok.IDENTIFIER:
                values.add(lit)
                tok2, lit2 = self.lookahead(True)
                if tok2 == _Tok.CLOSE_PAR:
                    return values
                if tok2 != _Tok.COMMA:
                    raise SelectorError(f"found '{lit2}', expected: ',' or ')'")
            elif tok == _Tok.COMMA:
                if not values:
                    values.add("")
                tok2 = self.lookahead(True)[0]
                if tok2 == _Tok.CLOSE_PAR:
                    values.add("")
                    return values
                if tok2 == _Tok.COMMA:
                    values.add("")
            else:
                raise SelectorError(f"found '{lit}', expected: ',', or identifier")

    def exact_value(self) -> set[str]:
        if self.lookahead(True)[0] in (_Tok.END, _Tok.COMMA):
            return {""}
        tok, lit = self.consume(True)
        if tok == _Tok.IDENTIFIER:
            return {lit}
        raise SelectorError(f"found '{lit}', expected: identifier")


def parse_label_selector(text: str) -> LabelSelector:
    """labels.Parse: "" is the empty selector (matches everything); requirements come out sorted by key."""
    reqs = _Parser(text).parse()
    return LabelSelector(tuple(sorted(reqs, key=lambda r: r.key)))


_OBJECT_OPERATORS = {"In": IN, "NotIn": NOT_IN, "Exists": EXISTS, "DoesNotExist": DOES_NOT_EXIST}


def selector_from_object(sel: Mapping[str, Any]) -> LabelSelector:
    """metav1.LabelSelectorAsSelector for a non-nil selector: {} selects everything."""
    match_labels = sel.get("matchLabels") or {}
    match_expressions = sel.get("matchExpressions") or []
    if not isinstance(match_labels, Mapping):
        raise SelectorError(f"matchLabels: {invalid_body(match_labels, 'must be a map of strings')}")
    if not isinstance(match_expressions, list):
        raise SelectorError(f"matchExpressions: {invalid_body(match_expressions, 'must be a list')}")
    reqs: list[Requirement] = []
    for key, value in match_labels.items():
        if not isinstance(key, str) or not isinstance(value, str):
            raise SelectorError(f"matchLabels: {invalid_body(value, 'must be a map of strings')}")
        reqs.append(new_requirement(key, EQUALS, [value]))
    for i, expr in enumerate(match_expressions):
        if not isinstance(expr, Mapping):
            raise SelectorError(f"matchExpressions[{i}]: {invalid_body(expr, 'must be an object')}")
        operator = expr.get("operator")
        if operator not in _OBJECT_OPERATORS:
            shown = go_bad_value(operator) if isinstance(operator, str) else go_bad_value(str(operator or ""))
            raise SelectorError(f"{shown} is not a valid label selector operator")
        key, values = expr.get("key", ""), expr.get("values")
        if not isinstance(key, str):
            raise SelectorError(f"matchExpressions[{i}].key: {invalid_body(key, 'must be a string')}")
        if values is not None and (
            not isinstance(values, list) or not all(isinstance(v, str) for v in values)
        ):
            raise SelectorError(
                f"matchExpressions[{i}].values: {invalid_body(values, 'must be a list of strings')}"
            )
        # An empty list is a Go nil slice after kube's append([]string(nil), ...): it prints as null.
        reqs.append(new_requirement(key, _OBJECT_OPERATORS[operator], values or None))
    return LabelSelector(tuple(sorted(reqs, key=lambda r: r.key)))
