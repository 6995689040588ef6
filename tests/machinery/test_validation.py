"""Validators with apimachinery's exact messages, and Go's time.ParseDuration."""

from __future__ import annotations

from typing import Any

import pytest

from aggapi.machinery.gofmt import go_bad_value, go_float, go_quote
from aggapi.machinery.validation import (
    is_dns1123_label,
    is_dns1123_subdomain,
    is_qualified_name,
    is_valid_label_value,
    parse_go_duration,
    parse_go_duration_ns,
    validate_annotations,
    validate_labels,
)

SUBDOMAIN_MSG = (
    "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must "
    "start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is "
    "'[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"
)
LABEL_MSG = (
    "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must "
    "start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', "
    "regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')"
)
KEY_NAME_MSG = (
    "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an "
    "alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', "
    "regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')"
)
VALUE_MSG = (
    "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must "
    "start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', "
    "regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')"
)


@pytest.mark.parametrize(
    "value", ["a", "ab", "abc", "a1", "a-1", "a--1--2--b", "0", "01", "a.a", "1.2.3.4", "a" * 253, "a.b-c.d"]
)
def test_dns1123_subdomain_ok(value: str) -> None:
    assert is_dns1123_subdomain(value) == []


@pytest.mark.parametrize(
    ("value", "errors"),
    [
        ("", [SUBDOMAIN_MSG]),
        ("A", [SUBDOMAIN_MSG]),
        ("a_b", [SUBDOMAIN_MSG]),
        ("-a", [SUBDOMAIN_MSG]),
        ("a.", [SUBDOMAIN_MSG]),
        ("a..b", [SUBDOMAIN_MSG]),
        ("a\n", [SUBDOMAIN_MSG]),  # no trailing-newline loophole, unlike Python's `$`
        ("a" * 254, ["must be no more than 253 characters"]),
        ("A" * 254, ["must be no more than 253 characters", SUBDOMAIN_MSG]),
    ],
)
def test_dns1123_subdomain_errors(value: str, errors: list[str]) -> None:
    assert is_dns1123_subdomain(value) == errors


@pytest.mark.parametrize(
    ("value", "errors"),
    [
        ("my-name", []),
        ("123-abc", []),
        ("a" * 63, []),
        ("a" * 64, ["must be no more than 63 characters"]),
        ("a.b", ["must not contain dots"]),
        ("My-Name", [LABEL_MSG]),
        ("", [LABEL_MSG]),
        ("-a", [LABEL_MSG]),
    ],
)
def test_dns1123_label(value: str, errors: list[str]) -> None:
    assert is_dns1123_label(value) == errors


@pytest.mark.parametrize(
    "value",
    [
        "simple",
        "now-with-dashes",
        "1-starts-with-num",
        "1234",
        "simple/simple",
        "now-with-dashes/simple",
        "now-with-dashes/now-with-dashes",
        "now.with.dots/simple",
        "now-with.dashes-and.dots/simple",
        "1-num.2-num/3-num",
        "1234/5678",
        "1.2.3.4/5678",
        "Uppercase_Is_OK_123",
        "example.com/Uppercase_Is_OK_123",
        "requests.storage-foo",
        "a" * 63,
        "a" * 253 + "/" + "b" * 63,
        "apps.openyurt.io/nodepool",
        "app.kubernetes.io/name",
    ],
)
def test_qualified_name_ok(value: str) -> None:
    assert is_qualified_name(value) == []


@pytest.mark.parametrize(
    "value",
    [
        "nospecialchars%^=@",
        "cantendwithadash-",
        "-cantstartwithadash-",
        "only/one/slash",
        "Example.com/abc",
        "example_com/abc",
        "example.com/",
        "/simple",
        "a" * 64,
        "a" * 254 + "/abc",
        "",
    ],
)
def test_qualified_name_errors(value: str) -> None:
    assert is_qualified_name(value) != []


@pytest.mark.parametrize(
    ("value", "errors"),
    [
        ("-a", [KEY_NAME_MSG]),
        ("", ["name part must be non-empty", KEY_NAME_MSG]),
        ("/a", ["prefix part must be non-empty"]),
        ("Example.com/a", ["prefix part " + SUBDOMAIN_MSG]),
        ("a" * 254 + "/b", ["prefix part must be no more than 253 bytes"]),
        ("b" * 64, ["name part must be no more than 63 bytes"]),
        ("example.com/", ["name part must be non-empty", KEY_NAME_MSG]),
        (
            "a/b/c",
            [
                "a valid label key must consist of alphanumeric characters, '-', '_' or '.', and must "
                "start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or "
                "'123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]') "
                "with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')"
            ],
        ),
    ],
)
def test_qualified_name_messages(value: str, errors: list[str]) -> None:
    assert is_qualified_name(value) == errors


@pytest.mark.parametrize(
    "value",
    ["simple", "now-with-dashes", "1-starts-with-num", "end-with-num-1", "1234", "a" * 63, "", "A_b.C"],
)
def test_label_value_ok(value: str) -> None:
    assert is_valid_label_value(value) == []


@pytest.mark.parametrize(
    ("value", "errors"),
    [
        ("nospecialchars%^=@", [VALUE_MSG]),
        ("Tama-nui-te-rā.is.Māori.sun", [VALUE_MSG]),
        ("\\backslashes\\are\\bad", [VALUE_MSG]),
        ("-starts-with-dash", [VALUE_MSG]),
        ("ends-with-dash-", [VALUE_MSG]),
        (".starts.with.dot", [VALUE_MSG]),
        ("ends.with.dot.", [VALUE_MSG]),
        ("a" * 64, ["must be no more than 63 bytes"]),
        ("ā" * 32, ["must be no more than 63 bytes", VALUE_MSG]),  # 64 bytes of UTF-8
    ],
)
def test_label_value_errors(value: str, errors: list[str]) -> None:
    assert is_valid_label_value(value) == errors


def test_validate_labels() -> None:
    assert validate_labels(None, "metadata.labels") == []
    assert validate_labels({"app": "web", "example.com/x": ""}, "metadata.labels") == []
    assert validate_labels({"-bad": "ok", "good": "bad value"}, "metadata.labels") == [
        ("metadata.labels", f'Invalid value: "-bad": {KEY_NAME_MSG}'),
        ("metadata.labels", f'Invalid value: "bad value": {VALUE_MSG}'),
    ]
    assert validate_labels({"a": 1}, "spec.labels") == [
        ("spec.labels[a]", "Invalid value: 1: must be a string")
    ]
    assert validate_labels(["a"], "metadata.labels") == [
        ("metadata.labels", 'Invalid value: ["a"]: must be a map of strings')
    ]


def test_validate_annotations() -> None:
    assert validate_annotations({"Example.COM/Key": "any value at all: {}"}, "metadata.annotations") == []
    assert validate_annotations({"bad key": "x"}, "metadata.annotations") == [
        ("metadata.annotations", f'Invalid value: "bad key": {KEY_NAME_MSG}')
    ]
    big = {"a": "x" * (256 * 1024 - 1)}
    assert validate_annotations(big, "metadata.annotations") == []
    big["b"] = "x"
    assert validate_annotations(big, "metadata.annotations") == [
        ("metadata.annotations", "Too long: may not be more than 262144 bytes")
    ]


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("0", 0.0),
        ("-0", 0.0),
        ("+0", 0.0),
        ("5s", 5.0),
        ("30s", 30.0),
        ("1478s", 1478.0),
        ("-5s", -5.0),
        ("+5s", 5.0),
        ("-0s", 0.0),
        ("5.0s", 5.0),
        ("5.6s", 5.6),
        ("5.s", 5.0),
        (".5s", 0.5),
        ("1.0s", 1.0),
        ("1.00s", 1.0),
        ("1.004s", 1.004),
        ("100.00100s", 100.001),
        ("10ns", 1e-8),
        ("11us", 11e-6),
        ("12µs", 12e-6),
        ("12μs", 12e-6),
        ("13ms", 0.013),
        ("14s", 14.0),
        ("15m", 900.0),
        ("16h", 57600.0),
        ("3h30m", 12600.0),
        ("1h30m", 5400.0),
        ("1.5h", 5400.0),
        ("300s", 300.0),
        ("10.5s4m", 250.5),
        ("-2m3.4s", -123.4),
        ("1h2m3s4ms5us6ns", 3723.004005006),
        ("39h9m14.425s", 140954.425),
        ("52763797000ns", 52.763797),
        ("0.3333333333333333333h", 1200.0),
        ("9007199254740993ns", 9007199.254740993),
        ("9223372036854775807ns", 9223372036.854775807),
        ("-9223372036854775808ns", -9223372036.854775808),
    ],
)
def test_parse_go_duration_ok(text: str, seconds: float) -> None:
    assert parse_go_duration(text) == pytest.approx(seconds, rel=1e-12, abs=1e-12)


def test_parse_go_duration_exact_nanoseconds() -> None:
    assert parse_go_duration_ns("1.5h") == parse_go_duration_ns("90m") == 5_400_000_000_000
    assert parse_go_duration_ns("9223372036854775807ns") == (1 << 63) - 1
    assert parse_go_duration_ns("0.9223372036854775807s") == 922337203
    assert parse_go_duration_ns("1.00000000000000000000000000001s") == 1_000_000_000


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", 'time: invalid duration ""'),
        ("3", 'time: missing unit in duration "3"'),
        ("-", 'time: invalid duration "-"'),
        ("s", 'time: invalid duration "s"'),
        (".", 'time: invalid duration "."'),
        ("-.", 'time: invalid duration "-."'),
        (".s", 'time: invalid duration ".s"'),
        ("+.s", 'time: invalid duration "+.s"'),
        ("1d", 'time: unknown unit "d" in duration "1d"'),
        ("2w", 'time: unknown unit "w" in duration "2w"'),
        ("1h 30m", 'time: unknown unit "h " in duration "1h 30m"'),
        (" 1h", 'time: invalid duration " 1h"'),
        ("1.5", 'time: missing unit in duration "1.5"'),
        ("9223372036854775808ns", 'time: invalid duration "9223372036854775808ns"'),
        ("9223372036854775.808us", 'time: invalid duration "9223372036854775.808us"'),
        ("3000000h", 'time: invalid duration "3000000h"'),
        ("-9223372036854775809ns", 'time: invalid duration "-9223372036854775809ns"'),
        ("1\n", 'time: unknown unit "\\n" in duration "1\\n"'),
    ],
)
def test_parse_go_duration_errors(text: str, message: str) -> None:
    with pytest.raises(ValueError) as err:
        parse_go_duration(text)
    assert str(err.value) == message


@pytest.mark.parametrize(
    ("text", "quoted"),
    [
        ("abc", '"abc"'),
        ('a"b\\c', '"a\\"b\\\\c"'),
        ("\n\t\x00\x7f", '"\\n\\t\\x00\\x7f"'),
        ("rā", '"rā"'),
        ("\u200b", '"\\u200b"'),
        ("\U000e0001", '"\\U000e0001"'),
    ],
)
def test_go_quote(text: str, quoted: str) -> None:
    assert go_quote(text) == quoted


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        (1, "1"),
        (True, "true"),
        (None, "null"),
        ([], "[]"),
        (["a", "<b>"], '["a","\\u003cb\\u003e"]'),
        ({"b": 1, "a": 2}, '{"a":2,"b":1}'),
        (1.5, "1.5"),
        (100000.0, "100000"),
        (1e6, "1e+06"),
        (1234567.0, "1.234567e+06"),
        (0.0001, "0.0001"),
        (0.00001, "1e-05"),
        (-2.5e-7, "-2.5e-07"),
        (0.0, "0"),
    ],
)
def test_go_bad_value(value: Any, shown: str) -> None:
    assert go_bad_value(value) == shown


def test_go_float_specials() -> None:
    assert [go_float(v) for v in (float("nan"), float("inf"), float("-inf"), -0.0)] == [
        "NaN",
        "+Inf",
        "-Inf",
        "-0",
    ]
