"""Kubernetes' string validators, with apimachinery's exact messages (util/validation, api/validate/content).

Current apimachinery has two MaxLenError wordings: util/validation says "characters" (object names),
api/validate/content says "bytes" (label keys, label values and the DNS prefix of a key). Both are kept
so each message matches what kube-apiserver prints for the same input.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from aggapi.machinery.gofmt import go_quote, invalid_body

_DNS1123_LABEL_FMT = "[a-z0-9]([-a-z0-9]*[a-z0-9])?"
_DNS1123_LABEL_MSG = (
    "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', "
    "and must start and end with an alphanumeric character"
)
_DNS1123_SUBDOMAIN_FMT = _DNS1123_LABEL_FMT + "(\\." + _DNS1123_LABEL_FMT + ")*"
_DNS1123_SUBDOMAIN_MSG = (
    "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', "
    "and must start and end with an alphanumeric character"
)
_LABEL_KEY_FMT = "([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]"
_LABEL_KEY_MSG = (
    "must consist of alphanumeric characters, '-', '_' or '.', "
    "and must start and end with an alphanumeric character"
)
_LABEL_VALUE_FMT = "(" + _LABEL_KEY_FMT + ")?"
_LABEL_VALUE_MSG = (
    "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', "
    "and must start and end with an alphanumeric character"
)

# re.fullmatch and ASCII classes: Go's `^...$` has no "before a trailing newline" loophole.
_DNS1123_LABEL_RE = re.compile(_DNS1123_LABEL_FMT)
_DNS1123_SUBDOMAIN_RE = re.compile(_DNS1123_SUBDOMAIN_FMT)
_LABEL_KEY_RE = re.compile(_LABEL_KEY_FMT)
_LABEL_VALUE_RE = re.compile(_LABEL_VALUE_FMT)

DNS1123_LABEL_MAX_LENGTH = 63
DNS1123_SUBDOMAIN_MAX_LENGTH = 253
LABEL_VALUE_MAX_LENGTH = 63
QUALIFIED_NAME_MAX_LENGTH = 63
TOTAL_ANNOTATION_SIZE_LIMIT_B = 256 * 1024


def regex_error(msg: str, fmt: str, *examples: str) -> str:
    """validation.RegexError."""
    if not examples:
        return f"{msg} (regex used for validation is '{fmt}')"
    shown = " or ".join(f"'{e}', " for e in examples)
    return f"{msg} (e.g. {shown}regex used for validation is '{fmt}')"


def max_len_error(length: int, unit: str = "characters") -> str:
    return f"must be no more than {length} {unit}"


def _byte_len(value: str) -> int:
    return len(value.encode("utf-8", "surrogatepass"))  # Go's len() counts bytes


def _dns1123_subdomain(value: str, unit: str) -> list[str]:
    errs: list[str] = []
    if _byte_len(value) > DNS1123_SUBDOMAIN_MAX_LENGTH:
        errs.append(max_len_error(DNS1123_SUBDOMAIN_MAX_LENGTH, unit))
    if not _DNS1123_SUBDOMAIN_RE.fullmatch(value):
        errs.append(regex_error(_DNS1123_SUBDOMAIN_MSG, _DNS1123_SUBDOMAIN_FMT, "example.com"))
    return errs


def is_dns1123_subdomain(value: str) -> list[str]:
    """Object names of most kinds: lowercase RFC 1123 subdomain, at most 253 characters."""
    return _dns1123_subdomain(value, "characters")


def is_dns1123_label(value: str) -> list[str]:
    """Lowercase RFC 1123 label, at most 63 characters (namespaces, NodePool names)."""
    errs: list[str] = []
    if _byte_len(value) > DNS1123_LABEL_MAX_LENGTH:
        errs.append(max_len_error(DNS1123_LABEL_MAX_LENGTH))
    if not _DNS1123_LABEL_RE.fullmatch(value):
        if _DNS1123_SUBDOMAIN_RE.fullmatch(value):
            errs.append("must not contain dots")  # a valid subdomain of the right length: only dots are wrong
        else:
            errs.append(regex_error(_DNS1123_LABEL_MSG, _DNS1123_LABEL_FMT, "my-name", "123-abc"))
    return errs


def is_qualified_name(value: str) -> list[str]:
    """Label and annotation keys: optional DNS-subdomain prefix and '/', then a name of at most 63 bytes."""
    errs: list[str] = []
    parts = value.split("/")
    if len(parts) == 1:
        name = parts[0]
    elif len(parts) == 2:
        prefix, name = parts
        if not prefix:
            errs.append("prefix part must be non-empty")
        else:
            errs += ["prefix part " + m for m in _dns1123_subdomain(prefix, "bytes")]
    else:
        return [
            "a valid label key "
            + regex_error(_LABEL_KEY_MSG, _LABEL_KEY_FMT, "MyName", "my.name", "123-abc")
            + " with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')"
        ]
    if not name:
        errs.append("name part must be non-empty")
    elif _byte_len(name) > QUALIFIED_NAME_MAX_LENGTH:
        errs.append("name part " + max_len_error(QUALIFIED_NAME_MAX_LENGTH, "bytes"))
    if not _LABEL_KEY_RE.fullmatch(name):
        errs.append(
            "name part " + regex_error(_LABEL_KEY_MSG, _LABEL_KEY_FMT, "MyName", "my.name", "123-abc")
        )
    return errs


def is_valid_label_value(value: str) -> list[str]:
    """Label values: empty, or at most 63 bytes of [A-Za-z0-9_.-] starting and ending alphanumeric."""
    errs: list[str] = []
    if _byte_len(value) > LABEL_VALUE_MAX_LENGTH:
        errs.append(max_len_error(LABEL_VALUE_MAX_LENGTH, "bytes"))
    if not _LABEL_VALUE_RE.fullmatch(value):
        errs.append(regex_error(_LABEL_VALUE_MSG, _LABEL_VALUE_FMT, "MyValue", "my_value", "12345"))
    return errs


def validate_labels(labels: Any, path: str) -> list[tuple[str, str]]:
    """metav1validation.ValidateLabels. Each item is (field, message) where message is the cause text
    kube-apiserver sends (`Invalid value: "<bad>": <why>`); every cause here is FieldValueInvalid.
    Like kube, key and value errors are both reported at `path` itself, not `path[key]`."""
    if labels is None:
        return []
    if not isinstance(labels, Mapping):
        return [(path, invalid_body(labels, "must be a map of strings"))]
    errs: list[tuple[str, str]] = []
    for key, value in labels.items():
        if not isinstance(key, str):
            errs.append((path, invalid_body(key, "must be a string")))
            continue
        errs += [(path, invalid_body(key, msg)) for msg in is_qualified_name(key)]
        if not isinstance(value, str):
            errs.append((f"{path}[{key}]", invalid_body(value, "must be a string")))
            continue
        errs += [(path, invalid_body(value, msg)) for msg in is_valid_label_value(value)]
    return errs


def validate_annotations(annotations: Any, path: str) -> list[tuple[str, str]]:
    """apimachinery ValidateAnnotations: keys are qualified names compared case-insensitively, and
    keys plus values total at most 256 KiB. Causes are FieldValueInvalid, except the size one, whose
    message starts with "Too long:" (FieldValueTooLong)."""
    if annotations is None:
        return []
    if not isinstance(annotations, Mapping):
        return [(path, invalid_body(annotations, "must be a map of strings"))]
    errs: list[tuple[str, str]] = []
    total = 0
    for key, value in annotations.items():
        if not isinstance(key, str):
            errs.append((path, invalid_body(key, "must be a string")))
            continue
        errs += [(path, invalid_body(key, msg)) for msg in is_qualified_name(key.lower())]
        if not isinstance(value, str):
            errs.append((f"{path}[{key}]", invalid_body(value, "must be a string")))
            continue
        total += _byte_len(key) + _byte_len(value)
    if total > TOTAL_ANNOTATION_SIZE_LIMIT_B:
        errs.append((path, f"Too long: may not be more than {TOTAL_ANNOTATION_SIZE_LIMIT_B} bytes"))
    return errs


# Go time.ParseDuration, in integer nanoseconds so "1.5h" and "90m" compare equal exactly.
_UNITS_NS = {
    "ns": 1,
    "us": 1_000,
    "\u00b5s": 1_000,  # micro sign
    "\u03bcs": 1_000,  # Greek mu
    "ms": 1_000_000,
    "s": 1_000_000_000,
    "m": 60_000_000_000,
    "h": 3_600_000_000_000,
}
_MAX_NS = 1 << 63


def parse_go_duration_ns(text: str) -> int:
    """time.ParseDuration in nanoseconds; ValueError with Go's message on bad input."""
    orig = text
    invalid = ValueError(f"time: invalid duration {go_quote(orig)}")
    neg = False
    if text and text[0] in "+-":
        neg = text[0] == "-"
        text = text[1:]
    if text == "0":
        return 0
    if not text:
        raise invalid
    total = 0
    while text:
        if not (text[0] == "." or "0" <= text[0] <= "9"):
            raise invalid
        i = 0
        while i < len(text) and "0" <= text[i] <= "9":
            i += 1
        whole = int(text[:i]) if i else 0
        if whole > _MAX_NS:
            raise invalid
        had_int, text = i > 0, text[i:]
        frac, scale, had_frac = 0, 1, False
        if text.startswith("."):
            text = text[1:]
            j, overflow = 0, False
            while j < len(text) and "0" <= text[j] <= "9":
                # Digits past int64 precision are consumed but ignored, as Go does.
                nxt = frac * 10 + int(text[j])
                overflow = overflow or frac > (_MAX_NS - 1) // 10 or nxt > _MAX_NS
                if not overflow:
                    frac, scale = nxt, scale * 10
                j += 1
            had_frac, text = j > 0, text[j:]
        if not had_int and not had_frac:
            raise invalid
        k = 0
        while k < len(text) and not (text[k] == "." or "0" <= text[k] <= "9"):
            k += 1
        if k == 0:
            raise ValueError(f"time: missing unit in duration {go_quote(orig)}")
        unit_name, text = text[:k], text[k:]
        unit = _UNITS_NS.get(unit_name)
        if unit is None:
            raise ValueError(f"time: unknown unit {go_quote(unit_name)} in duration {go_quote(orig)}")
        if whole > _MAX_NS // unit:
            raise invalid
        value = whole * unit
        if frac:
            value += int(float(frac) * (float(unit) / scale))  # float64 maths, as Go rounds it
            if value > _MAX_NS:
                raise invalid
        total += value
        if total > _MAX_NS:
            raise invalid
    if neg:
        return -total
    if total > _MAX_NS - 1:
        raise invalid
    return total


def parse_go_duration(text: str) -> float:
    """Go time.ParseDuration ("300s", "1h30m", "1.5h", "-1m", "0"), in seconds; ValueError otherwise."""
    return parse_go_duration_ns(text) / 1e9
