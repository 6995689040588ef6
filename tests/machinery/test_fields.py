"""Field selectors: cases from apimachinery's pkg/fields/selector_test.go."""

from __future__ import annotations

import pytest

from aggapi.machinery.fields import (
    EVERYTHING,
    FieldRequirement,
    FieldSelector,
    escape_value,
    parse_field_selector,
    unescape_value,
)
from aggapi.machinery.labels import SelectorError


@pytest.mark.parametrize("text", ["x=a,y=b,z=c", "", "x!=a,y=b", r"x=a||y\=b", r"x=a\=\=b"])
def test_good_selectors_restring(text: str) -> None:
    assert str(parse_field_selector(text)) == text


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("x=a||y=b", "invalid field selector: unescaped character in value: 61"),
        ("x==a==b", "invalid field selector: unescaped character in value: 61"),
        ("x=a,b", "invalid selector: 'x=a,b'; can't understand 'b'"),
        ("x in (a)", "invalid selector: 'x in (a)'; can't understand 'x in (a)'"),
        ("x in (a,b,c)", "invalid selector: 'x in (a,b,c)'; can't understand 'b'"),
        ("x", "invalid selector: 'x'; can't understand 'x'"),
        (r"k=\a", r"invalid field selector: invalid escape sequence: \a"),
        ("k=\\", "invalid field selector: invalid escape sequence: \\"),
    ],
)
def test_bad_selectors(text: str, message: str) -> None:
    with pytest.raises(SelectorError) as err:
        parse_field_selector(text)
    assert str(err.value) == message


def test_deterministic_parse_and_structure() -> None:
    assert str(parse_field_selector("x=a,a=x")) == str(parse_field_selector("a=x,x=a")) == "a=x,x=a"
    sel = parse_field_selector("metadata.name==foo,spec.type!=Edge")
    assert sel.requirements == (
        FieldRequirement("metadata.name", "=", "foo"),
        FieldRequirement("spec.type", "!=", "Edge"),
    )
    assert sel.fields() == {"metadata.name", "spec.type"}
    assert sel.requires_exact_match("metadata.name") == "foo"
    assert sel.requires_exact_match("spec.type") is None


@pytest.mark.parametrize(
    ("text", "canonical"),
    [
        ("a=a,", "a=a"),
        (",a=a", "a=a"),
        # terms sort as raw strings, so "k2=..." ('2' < '=') comes first
        (r"k=\,,k2=v2", r"k2=v2,k=\,"),
        (r"k=\\,k2=v2", r"k2=v2,k=\\"),
        (r"k=\\\,,k2=v2", r"k2=v2,k=\\\,"),
        ("함=수,목=록", "목=록,함=수"),
        ("=", ""),
        ("!=", ""),
        ("x==y", "x=y"),
    ],
)
def test_split_and_escape_cases(text: str, canonical: str) -> None:
    assert str(parse_field_selector(text)) == canonical


@pytest.mark.parametrize(
    ("raw", "escaped"),
    [("", ""), ("a", "a"), ("=", r"\="), (",", r"\,"), ("\\", "\\\\"), ("\\=\\,\\", r"\\\=\\\,\\")],
)
def test_escape_round_trip(raw: str, escaped: str) -> None:
    assert escape_value(raw) == escaped
    assert unescape_value(escaped) == raw


@pytest.mark.parametrize("bad", ["\\", "\\\\\\", r"\a"])
def test_unescape_rejects_bad_sequences(bad: str) -> None:
    with pytest.raises(SelectorError, match="invalid escape sequence"):
        unescape_value(bad)


FIELDSET = {"foo": "bar", "baz": "blah", "complex": "=value\\,\\"}


@pytest.mark.parametrize(
    ("text", "fields", "match"),
    [
        ("", {"x": "y"}, True),
        ("x=y", {"x": "y"}, True),
        ("x=y,z=w", {"x": "y", "z": "w"}, True),
        ("x!=y,z!=w", {"x": "z", "z": "a"}, True),
        ("notin=in", {"notin": "in"}, True),
        ("x=y", {"x": "z"}, False),
        ("x=y,z=w", {"x": "w", "z": "w"}, False),
        ("x!=y,z!=w", {"x": "z", "z": "w"}, False),
        ("foo=bar", FIELDSET, True),
        ("baz=blah", FIELDSET, True),
        ("foo=bar,baz=blah", FIELDSET, True),
        (r"foo=bar,baz=blah,complex=\=value\\\,\\", FIELDSET, True),
        ("foo=blah", FIELDSET, False),
        ("baz=bar", FIELDSET, False),
        ("foo=bar,foobar=bar,baz=blah", FIELDSET, False),
        ("missing=", {}, True),  # an absent field reads as ""
        ("missing!=x", {}, True),
    ],
)
def test_matches(text: str, fields: dict[str, str], match: bool) -> None:
    assert parse_field_selector(text).matches(fields) is match


def test_everything() -> None:
    assert EVERYTHING.empty() and EVERYTHING.matches({"x": "y"})
    assert parse_field_selector("") == EVERYTHING == FieldSelector()
    assert not parse_field_selector("a=b").empty()
