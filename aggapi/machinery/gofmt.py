"""Go formatting that shows up in Kubernetes error text: strconv.Quote, field.Error bodies, aggregates.

kube-apiserver renders bad values with Go's `%q` / `%v` / json.Marshal, so messages built here read
byte-for-byte like the ones kubectl users already know.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from decimal import Decimal
from typing import Any

_SHORT_ESCAPES = {
    "\a": "\\a",
    "\b": "\\b",
    "\f": "\\f",
    "\n": "\\n",
    "\r": "\\r",
    "\t": "\\t",
    "\v": "\\v",
    "\\": "\\\\",
    '"': '\\"',
}


def go_quote(text: str) -> str:
    """Go's strconv.Quote (what `%q` prints for a string)."""
    out = ['"']
    for ch in text:
        code = ord(ch)
        if ch in _SHORT_ESCAPES:
            out.append(_SHORT_ESCAPES[ch])
        elif ch.isprintable():  # same classes as Go's unicode.IsPrint: L, M, N, P, S and ASCII space
            out.append(ch)
        elif code < 0x20 or code == 0x7F:
            out.append(f"\\x{code:02x}")
        elif code <= 0xFFFF:
            out.append(f"\\u{code:04x}")
        else:
            out.append(f"\\U{code:08x}")
    out.append('"')
    return "".join(out)


def go_json(value: Any) -> str:
    """Go's json.Marshal: compact, map keys sorted, and <, >, & escaped as Go does for HTML safety."""
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"), sort_keys=True)
    for raw, esc in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026"), ("\u2028", "\\u2028")):
        text = text.replace(raw, esc)
    return text.replace("\u2029", "\\u2029")


def go_float(value: float) -> str:
    """Go's `%v` for a float64: strconv 'g' with shortest digits, exponent form when exp < -4 or >= 6."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if value == 0:
        return "-0" if math.copysign(1.0, value) < 0 else "0"
    sign, digits_t, exp = Decimal(repr(value)).normalize().as_tuple()
    assert isinstance(exp, int)
    digits = "".join(map(str, digits_t))
    point = len(digits) + exp  # decimal point position relative to the digit string
    x = point - 1
    neg = "-" if sign else ""
    if x < -4 or x >= 6:
        mantissa = digits[0] + ("." + digits[1:] if len(digits) > 1 else "")
        return f"{neg}{mantissa}e{'-' if x < 0 else '+'}{abs(x):02d}"
    if point <= 0:
        return f"{neg}0.{'0' * -point}{digits}"
    if point >= len(digits):
        return f"{neg}{digits}{'0' * (point - len(digits))}"
    return f"{neg}{digits[:point]}.{digits[point:]}"


def go_bad_value(value: Any) -> str:
    """How field.Error renders BadValue: `%q` for strings, `%v` for numbers/bools, else json.Marshal."""
    if isinstance(value, str):
        return go_quote(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return go_float(value)
    try:
        return go_json(value)
    except (TypeError, ValueError):
        return repr(value)


def invalid_body(value: Any, detail: str) -> str:
    """field.Invalid(...).ErrorBody(): what a 422 cause's message says."""
    body = f"Invalid value: {go_bad_value(value)}"
    return f"{body}: {detail}" if detail else body


def field_error(path: str | None, body: str) -> str:
    """field.Error.Error(): `<path>: <body>`, with Go's "<nil>" for an absent path."""
    return f"{'<nil>' if path is None else path}: {body}"


def aggregate(messages: Iterable[str]) -> str:
    """utilerrors.Aggregate.Error(): one message as is, several deduplicated inside brackets."""
    seen: list[str] = []
    for msg in messages:
        if msg not in seen:
            seen.append(msg)
    if len(seen) == 1:
        return seen[0]
    return "[" + ", ".join(seen) + "]"
