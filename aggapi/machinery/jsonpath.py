"""The JSONPath subset printer columns and field extraction use (client-go util/jsonpath, relaxed).

Supported: optional `{...}` and leading `$`; `.field` with backslash escapes (`.metadata.labels.
app\\.kubernetes\\.io/name`); `['key']` / `["key"]`; `[n]` (negative counts from the end); `[*]`,
`.*` and `[a:b]`, which make the result a list. Missing parts evaluate to None, as with
kubectl's allowMissingKeys.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from typing import Any

# client-go's identifier terminators: whitespace and . , [ ] $ @ { }
_TERMINATORS = frozenset(" \t\r\n.,[]$@{}")
_SLICE_RE = re.compile(r"(-?\d*):(-?\d*)")


@dataclass(frozen=True, slots=True)
class _Step:
    kind: str  # "field", "index", "wildcard", "slice"
    name: str = ""
    index: int = 0
    end: int | None = None


@functools.lru_cache(maxsize=512)  # printer columns evaluate the same few paths for every row
def parse(path: str) -> tuple[_Step, ...]:
    """Compile a path; ValueError on syntax outside the supported subset."""
    text = path.strip()
    if text.startswith("{") and text.endswith("}"):
        text = text[1:-1].strip()
    if text.startswith("$"):
        text = text[1:]
    elif text and text[0] not in ".[":
        text = "." + text  # kubectl's relaxed form: "spec.type" means ".spec.type"
    steps: list[_Step] = []
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        if ch == ".":
            i += 1
            if i < n and text[i] == ".":
                raise ValueError(f"unsupported JSONPath (recursive descent): {path}")
            name: list[str] = []
            while i < n and text[i] not in _TERMINATORS:
                if text[i] == "\\" and i + 1 < n:
                    i += 1  # an escaped character is literal, the backslash is dropped
                name.append(text[i])
                i += 1
            field = "".join(name)
            if field == "*":
                steps.append(_Step("wildcard"))
            elif field:
                steps.append(_Step("field", name=field))
            elif i < n and text[i] != "[":
                raise ValueError(f"empty field name in JSONPath: {path}")
        elif ch == "[":
            close = text.find("]", i)
            if close < 0:
                raise ValueError(f"unterminated array in JSONPath: {path}")
            steps.append(_subscript(text[i + 1 : close].strip(), path))
            i = close + 1
        else:
            raise ValueError(f"unexpected {ch!r} in JSONPath: {path}")
    return tuple(steps)


def _subscript(inner: str, path: str) -> _Step:
    if inner == "*":
        return _Step("wildcard")
    if len(inner) >= 2 and inner[0] == inner[-1] and inner[0] in "'\"":
        return _Step("field", name=inner[1:-1])
    if re.fullmatch(r"-?\d+", inner):
        return _Step("index", index=int(inner))
    if m := _SLICE_RE.fullmatch(inner):
        start, end = m.group(1), m.group(2)
        return _Step("slice", index=int(start) if start else 0, end=int(end) if end else None)
    raise ValueError(f"invalid array index {inner} in JSONPath: {path}")


def _apply(step: _Step, value: Any) -> list[Any]:
    if step.kind == "field":
        return [value[step.name]] if isinstance(value, dict) and step.name in value else []
    if step.kind == "wildcard":
        if isinstance(value, dict):
            return [value[k] for k in sorted(value)]  # client-go walks map keys in sorted order
        return list(value) if isinstance(value, list) else []
    if not isinstance(value, list):
        return []
    if step.kind == "index":
        idx = step.index + len(value) if step.index < 0 else step.index
        return [value[idx]] if 0 <= idx < len(value) else []
    return value[step.index : step.end]


def evaluate(obj: Any, path: str) -> Any | None:
    """The value at `path`, or None if any part is missing. With a wildcard or slice the result is the
    list of every value found (None when nothing is found)."""
    steps = parse(path)
    current = [obj]
    multi = False
    for step in steps:
        multi = multi or step.kind in ("wildcard", "slice")
        current = [out for value in current for out in _apply(step, value)]
        if not current:
            return None
    if multi:
        return current
    return current[0]
