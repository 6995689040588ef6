"""Label selectors: cases from apimachinery's pkg/labels/selector_test.go plus kube's exact messages."""

from __future__ import annotations

from typing import Any

import pytest

from aggapi.machinery.labels import (
    EVERYTHING,
    LabelSelector,
    Requirement,
    SelectorError,
    new_requirement,
    parse_label_selector,
    selector_from_object,
)

VALUE_REGEX_MSG = (
    "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', "
    "and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', "
    "regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')"
)
KEY_REGEX_MSG = (
    "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an "
    "alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', "
    "regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')"
)


@pytest.mark.parametrize(
    "text", ["x=a,y=b,z=c", "", "x!=a,y=b", "x=", "x= ", "x=,z= ", "x= ,z= ", "!x", "x>1", "x>1,z<5"]
)
def test_good_selectors_restring_without_spaces(text: str) -> None:
    assert str(parse_label_selector(text)) == text.replace(" ", "")


@pytest.mark.parametrize(
    ("text", "canonical"),
    [
        ("\rx", "x"),
        ("this-is-a-dns.domain.com/key-with-dash", "this-is-a-dns.domain.com/key-with-dash"),
        (
            "this-is-another-dns.domain.com/key-with-dash in (so,what)",
            "this-is-another-dns.domain.com/key-with-dash in (so,what)",
        ),
        (
            "0.1.2.domain/99 notin (10.10.100.1, tick.tack.clock)",
            "0.1.2.domain/99 notin (10.10.100.1,tick.tack.clock)",
        ),
        ("foo  in\t (abc)", "foo in (abc)"),
        ("x notin\n (abc)", "x notin (abc)"),
        ("x  notin\t\t(abc,def)", "x notin (abc,def)"),
        ("x in (abc,)", "x in (,abc)"),
        ("x in (abc,abc)", "x in (abc)"),
        ("x in ()", "x in ()"),
        ("x in (a,,)", "x in (,a)"),
        ("x in (a,,,,,,)", "x in (,a)"),
        ("x in (a,,a,,a,,a,,)", "x in (,a)"),
        ("x notin (abc,,def),bar,z in (),w", "bar,w,x notin (,abc,def),z in ()"),
        ("x,y in (a)", "x,y in (a)"),
        ("x=a,y!=b,z in (h,i,j)", "x=a,y!=b,z in (h,i,j)"),
        ("x notin ( )", "x notin ()"),
        ("x notin (, a)", "x notin (,a)"),
        ("a ", "a"),
        ("a in (x,y,notin, z,in)", "a in (in,notin,x,y,z)"),
        ("notin=in", "notin=in"),
        ("y==b,x=a", "x=a,y==b"),
        ("x=a\x00,garbage(", "x=a"),  # Go's lexer stops at NUL
    ],
)
def test_set_based_parse(text: str, canonical: str) -> None:
    assert str(parse_label_selector(text)) == canonical


def test_parse_structure_and_sorting() -> None:
    sel = parse_label_selector("z in (b,a),!y,x")
    assert sel.requirements == (
        Requirement("x", "exists", ()),
        Requirement("y", "!", ()),
        Requirement("z", "in", ("a", "b")),
    )
    assert str(parse_label_selector("x=a,a=x")) == str(parse_label_selector("a=x,x=a"))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("x==a==b", "found '==', expected: ',' or 'end of string'"),
        ("!x=a", "found '=', expected: ',' or 'end of string'"),
        (
            "x<a",
            'unable to parse requirement: values[0]: Invalid value: "a": '
            "for 'Gt', 'Lt' operators, the value must be an integer",
        ),
        ("x=a||y=b", f'unable to parse requirement: values[0][x]: Invalid value: "a||y": {VALUE_REGEX_MSG}'),
        ("x,,y", "found ',', expected: identifier after ','"),
        (",x,y", "found ',', expected: !, identifier, or 'end of string'"),
        (
            "x nott in (y)",
            "unable to parse requirement: found 'nott', expected: in, notin, =, ==, !=, gt, lt",
        ),
        ("a in (xyz),", "found '', expected: identifier after ','"),
        ("a in (xyz)b notin ()", "found 'b', expected: ',' or 'end of string'"),
        ("a in (xyz abc)", "unable to parse requirement: found 'abc', expected: ',' or ')'"),
        ("a notin(", "unable to parse requirement: found '', expected: ',', ')' or identifier"),
        ("a (", "unable to parse requirement: found '(', expected: in, notin, =, ==, !=, gt, lt"),
        ("(", "found '(', expected: !, identifier, or 'end of string'"),
        ("a=b c", "found 'c', expected: ',' or 'end of string'"),
        ("x in a", "unable to parse requirement: found 'a' expected: '('"),
        ("x in (a=)", "unable to parse requirement: found '=', expected: ',' or ')'"),
        ("x in (=)", "unable to parse requirement: found '=', expected: ',', ')' or identifier"),
        ("x=(", "unable to parse requirement: found '(', expected: identifier"),
        ("!", "unable to parse requirement: found '', expected: identifier"),
        ("-a=b", f'unable to parse requirement: <nil>: Invalid value: "-a": {KEY_REGEX_MSG}'),
        (
            "x=" + "a" * 64,
            f'unable to parse requirement: values[0][x]: Invalid value: "{"a" * 64}": '
            "must be no more than 63 bytes",
        ),
    ],
)
def test_bad_selectors_have_kube_messages(text: str, message: str) -> None:
    with pytest.raises(SelectorError) as err:
        parse_label_selector(text)
    assert str(err.value) == message


@pytest.mark.parametrize(
    ("text", "labels", "match"),
    [
        ("", {"x": "y"}, True),
        ("x=y", {"x": "y"}, True),
        ("x=y,z=w", {"x": "y", "z": "w"}, True),
        ("x!=y,z!=w", {"x": "z", "z": "a"}, True),
        ("notin=in", {"notin": "in"}, True),
        ("x", {"x": "z"}, True),
        ("!x", {"y": "z"}, True),
        ("x>1", {"x": "2"}, True),
        ("x<1", {"x": "0"}, True),
        ("x=z", {}, False),
        ("x=y", {"x": "z"}, False),
        ("x=y,z=w", {"x": "w", "z": "w"}, False),
        ("x!=y,z!=w", {"x": "z", "z": "w"}, False),
        ("x", {"y": "z"}, False),
        ("!x", {"x": "z"}, False),
        ("x>1", {"x": "0"}, False),
        ("x<1", {"x": "2"}, False),
        ("x>1", {"x": "v2"}, False),
        ("x>1", {}, False),
        ("x!=y", {}, True),
        ("x notin (a)", {}, True),
        ("x in (a,b)", {"x": "b"}, True),
        ("x in (a,b)", {"x": "c"}, False),
        ("x in ()", {"x": ""}, True),
        ("x=", {"x": ""}, True),
        ("x=", {}, False),
        ("foo=bar,foobar=bar,baz=blah", {"foo": "bar", "baz": "blah"}, False),
    ],
)
def test_matches(text: str, labels: dict[str, str], match: bool) -> None:
    assert parse_label_selector(text).matches(labels) is match


def test_everything_and_empty() -> None:
    assert EVERYTHING.empty() and EVERYTHING.matches({"x": "y"}) and str(EVERYTHING) == ""
    assert parse_label_selector("  ").empty()
    assert not parse_label_selector("a").empty()
    assert parse_label_selector("") == EVERYTHING


def test_requires_exact_match() -> None:
    sel = parse_label_selector("a=1,b in (2),c in (3,4),d!=5")
    assert [sel.requires_exact_match(k) for k in "abcdz"] == ["1", "2", None, None, None]


@pytest.mark.parametrize(
    ("req", "text"),
    [
        (Requirement("x", "in", ("def", "abc")), "x in (abc,def)"),
        (Requirement("y", "notin", ("jkl",)), "y notin (jkl)"),
        (Requirement("z", "exists"), "z"),
        (Requirement("z", "!"), "!z"),
        (Requirement("z", "notin", ("",)), "z notin ()"),
        (Requirement("y", "==", ("jkl",)), "y==jkl"),
        (Requirement("x", "gt", ("2",)), "x>2"),
        (Requirement("y", "lt", ("8",)), "y<8"),
    ],
)
def test_requirement_to_string(req: Requirement, text: str) -> None:
    assert str(req) == text


@pytest.mark.parametrize(
    ("key", "op", "values", "message"),
    [
        (
            "x1",
            "in",
            None,
            "values: Invalid value: null: for 'in', 'notin' operators, values set can't be empty",
        ),
        (
            "x2",
            "notin",
            [],
            "values: Invalid value: []: for 'in', 'notin' operators, values set can't be empty",
        ),
        (
            "x5",
            "=",
            ["bar", "foo"],
            'values: Invalid value: ["bar","foo"]: exact-match compatibility requires one single value',
        ),
        (
            "x8",
            "exists",
            ["foo"],
            'values: Invalid value: ["foo"]: values set must be empty for exists and does not exist',
        ),
        (
            "x13",
            "gt",
            [],
            "values: Invalid value: []: for 'Gt', 'Lt' operators, exactly one value is required",
        ),
        (
            "x14",
            "gt",
            ["bar"],
            "values[0]: Invalid value: \"bar\": for 'Gt', 'Lt' operators, the value must be an integer",
        ),
        ("x17", "=", ["a b"], f'values[0][x17]: Invalid value: "a b": {VALUE_REGEX_MSG}'),
        (
            "x18",
            "unsupportedOp",
            [],
            'operator: Unsupported value: "unsupportedOp": supported values: "in", "notin", "=", "==", "!=", '
            '"gt", "lt", "exists", "!"',
        ),
        (
            "a" * 254,
            "exists",
            [],
            f'key: Invalid value: "{"a" * 254}": name part must be no more than 63 bytes',
        ),
        ("", "exists", [], f'key: Invalid value: "": name part must be non-empty; {KEY_REGEX_MSG}'),
    ],
)
def test_new_requirement_errors(key: str, op: str, values: list[str] | None, message: str) -> None:
    with pytest.raises(SelectorError) as err:
        new_requirement(key, op, values)
    assert str(err.value) == message


def test_new_requirement_aggregates_several_errors() -> None:
    with pytest.raises(SelectorError) as err:
        new_requirement("-k", "gt", ["x"])
    text = str(err.value)
    assert text.startswith('[key: Invalid value: "-k": ')
    assert "values[0]: Invalid value: \"x\": for 'Gt', 'Lt' operators, the value must be an integer]" in text


def test_new_requirement_ok() -> None:
    assert new_requirement("x11", "gt", ["1"]) == Requirement("x11", "gt", ("1",))
    assert new_requirement("x", "in", ["b", "a"]).values == ("b", "a")


@pytest.mark.parametrize(
    ("obj", "canonical"),
    [
        ({}, ""),
        ({"matchLabels": {}, "matchExpressions": []}, ""),
        ({"matchLabels": {"b": "1", "a": "2"}}, "a=2,b=1"),
        (
            {
                "matchLabels": {"app": "web"},
                "matchExpressions": [
                    {"key": "tier", "operator": "In", "values": ["fe", "be"]},
                    {"key": "env", "operator": "NotIn", "values": ["dev"]},
                    {"key": "gpu", "operator": "Exists"},
                    {"key": "spot", "operator": "DoesNotExist", "values": []},
                ],
            },
            "app=web,env notin (dev),gpu,!spot,tier in (be,fe)",
        ),
    ],
)
def test_selector_from_object(obj: dict[str, Any], canonical: str) -> None:
    sel = selector_from_object(obj)
    assert str(sel) == canonical
    assert isinstance(sel, LabelSelector)


def test_selector_from_object_matches() -> None:
    sel = selector_from_object(
        {"matchExpressions": [{"key": "tier", "operator": "In", "values": ["fe", "be"]}]}
    )
    assert sel.matches({"tier": "be"}) and not sel.matches({"tier": "db"}) and not sel.matches({})


@pytest.mark.parametrize(
    ("obj", "message"),
    [
        (
            {"matchExpressions": [{"key": "a", "operator": "Foo"}]},
            '"Foo" is not a valid label selector operator',
        ),
        (
            {"matchExpressions": [{"key": "a", "operator": "in", "values": ["x"]}]},
            '"in" is not a valid label selector operator',
        ),
        ({"matchExpressions": [{"key": "a"}]}, '"" is not a valid label selector operator'),
        (
            {"matchExpressions": [{"key": "a", "operator": "In"}]},
            "values: Invalid value: null: for 'in', 'notin' operators, values set can't be empty",
        ),
        (
            {"matchExpressions": [{"key": "a", "operator": "Exists", "values": ["x"]}]},
            'values: Invalid value: ["x"]: values set must be empty for exists and does not exist',
        ),
        ({"matchLabels": {"a": "b c"}}, f'values[0][a]: Invalid value: "b c": {VALUE_REGEX_MSG}'),
        ({"matchLabels": {"-a": "b"}}, f'key: Invalid value: "-a": {KEY_REGEX_MSG}'),
    ],
)
def test_selector_from_object_errors(obj: dict[str, Any], message: str) -> None:
    with pytest.raises(SelectorError) as err:
        selector_from_object(obj)
    assert str(err.value) == message


@pytest.mark.parametrize(
    "obj",
    [
        {"matchLabels": ["a"]},
        {"matchLabels": {"a": 1}},
        {"matchExpressions": {"key": "a"}},
        {"matchExpressions": ["a"]},
        {"matchExpressions": [{"key": "a", "operator": "In", "values": "x"}]},
        {"matchExpressions": [{"key": 3, "operator": "Exists"}]},
    ],
)
def test_selector_from_object_rejects_bad_shapes(obj: dict[str, Any]) -> None:
    with pytest.raises(SelectorError):
        selector_from_object(obj)
