"""JSON merge patch (RFC 7386 appendix A) and JSON patch (RFC 6902 appendix A) examples, plus errors."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from aggapi.machinery.patch import PatchError, json_equal, json_patch, merge_patch, parse_pointer

RFC7386_CASES = [
    ('{"a":"b"}', '{"a":"c"}', '{"a":"c"}'),
    ('{"a":"b"}', '{"b":"c"}', '{"a":"b","b":"c"}'),
    ('{"a":"b"}', '{"a":null}', "{}"),
    ('{"a":"b","b":"c"}', '{"a":null}', '{"b":"c"}'),
    ('{"a":["b"]}', '{"a":"c"}', '{"a":"c"}'),
    ('{"a":"c"}', '{"a":["b"]}', '{"a":["b"]}'),
    ('{"a":{"b":"c"}}', '{"a":{"b":"d","c":null}}', '{"a":{"b":"d"}}'),
    ('{"a":[{"b":"c"}]}', '{"a":[1]}', '{"a":[1]}'),
    ('["a","b"]', '["c","d"]', '["c","d"]'),
    ('{"a":"b"}', '["c"]', '["c"]'),
    ('{"a":"foo"}', "null", "null"),
    ('{"a":"foo"}', '"bar"', '"bar"'),
    ('{"e":null}', '{"a":1}', '{"e":null,"a":1}'),
    ("[1,2]", '{"a":"b","c":null}', '{"a":"b"}'),
    ("{}", '{"a":{"bb":{"ccc":null}}}', '{"a":{"bb":{}}}'),
]


@pytest.mark.parametrize(("target", "patch", "result"), RFC7386_CASES)
def test_merge_patch_rfc7386_appendix(target: str, patch: str, result: str) -> None:
    t, p = json.loads(target), json.loads(patch)
    t_before, p_before = copy.deepcopy(t), copy.deepcopy(p)
    assert merge_patch(t, p) == json.loads(result)
    assert t == t_before and p == p_before


def test_merge_patch_result_shares_nothing_with_inputs() -> None:
    target = {"keep": {"deep": [1]}, "spec": {"x": 1}}
    patch = {"spec": {"y": {"z": [2]}}}
    out = merge_patch(target, patch)
    out["keep"]["deep"].append(9)
    out["spec"]["y"]["z"].append(9)
    assert target == {"keep": {"deep": [1]}, "spec": {"x": 1}}
    assert patch == {"spec": {"y": {"z": [2]}}}


def test_merge_patch_kubernetes_style() -> None:
    obj = {"metadata": {"name": "p", "labels": {"a": "1", "b": "2"}}, "spec": {"type": "Edge"}}
    out = merge_patch(obj, {"metadata": {"labels": {"a": None, "c": "3"}}, "spec": {"type": "Cloud"}})
    assert out == {"metadata": {"name": "p", "labels": {"b": "2", "c": "3"}}, "spec": {"type": "Cloud"}}


def _ops(text: str) -> Any:
    return json.loads(text)


RFC6902_OK = [
    # A.1 adding an object member
    ('{"foo":"bar"}', '[{"op":"add","path":"/baz","value":"qux"}]', '{"baz":"qux","foo":"bar"}'),
    # A.2 adding an array element
    ('{"foo":["bar","baz"]}', '[{"op":"add","path":"/foo/1","value":"qux"}]', '{"foo":["bar","qux","baz"]}'),
    # A.3 removing an object member
    ('{"baz":"qux","foo":"bar"}', '[{"op":"remove","path":"/baz"}]', '{"foo":"bar"}'),
    # A.4 removing an array element
    ('{"foo":["bar","qux","baz"]}', '[{"op":"remove","path":"/foo/1"}]', '{"foo":["bar","baz"]}'),
    # A.5 replacing a value
    (
        '{"baz":"qux","foo":"bar"}',
        '[{"op":"replace","path":"/baz","value":"boo"}]',
        '{"baz":"boo","foo":"bar"}',
    ),
    # A.6 moving a value
    (
        '{"foo":{"bar":"baz","waldo":"fred"},"qux":{"corge":"grault"}}',
        '[{"op":"move","from":"/foo/waldo","path":"/qux/thud"}]',
        '{"foo":{"bar":"baz"},"qux":{"corge":"grault","thud":"fred"}}',
    ),
    # A.7 moving an array element
    (
        '{"foo":["all","grass","cows","eat"]}',
        '[{"op":"move","from":"/foo/1","path":"/foo/3"}]',
        '{"foo":["all","cows","eat","grass"]}',
    ),
    # A.8 testing a value: success
    (
        '{"baz":"qux","foo":["a",2,"c"]}',
        '[{"op":"test","path":"/baz","value":"qux"},{"op":"test","path":"/foo/1","value":2}]',
        '{"baz":"qux","foo":["a",2,"c"]}',
    ),
    # A.10 adding a nested member object
    (
        '{"foo":"bar"}',
        '[{"op":"add","path":"/child","value":{"grandchild":{}}}]',
        '{"foo":"bar","child":{"grandchild":{}}}',
    ),
    # A.11 ignoring unrecognized elements
    ('{"foo":"bar"}', '[{"op":"add","path":"/baz","value":"qux","xyz":123}]', '{"foo":"bar","baz":"qux"}'),
    # A.14 ~ escape ordering
    ('{"/":9,"~1":10}', '[{"op":"test","path":"/~01","value":10}]', '{"/":9,"~1":10}'),
    # A.16 adding an array value
    (
        '{"foo":["bar"]}',
        '[{"op":"add","path":"/foo/-","value":["abc","def"]}]',
        '{"foo":["bar",["abc","def"]]}',
    ),
    # beyond the appendix
    ('{"a":1}', '[{"op":"copy","from":"/a","path":"/b"}]', '{"a":1,"b":1}'),
    ('{"a":[1,2]}', '[{"op":"add","path":"/a/2","value":3}]', '{"a":[1,2,3]}'),
    ('{"a":1}', '[{"op":"add","path":"","value":[1]}]', "[1]"),
    ('{"a":1}', '[{"op":"replace","path":"","value":{"b":2}}]', '{"b":2}'),
    ('{"a":{"b":1}}', '[{"op":"move","from":"/a","path":"/a"}]', '{"a":{"b":1}}'),
    ('{"a/b":{"m~n":1}}', '[{"op":"replace","path":"/a~1b/m~0n","value":2}]', '{"a/b":{"m~n":2}}'),
    ('{"a":null}', '[{"op":"test","path":"/a","value":null}]', '{"a":null}'),
    (
        '{"a":{"x":1,"y":[1,{"z":true}]}}',
        '[{"op":"test","path":"/a","value":{"y":[1,{"z":true}],"x":1.0}}]',
        '{"a":{"x":1,"y":[1,{"z":true}]}}',
    ),
    ('{"a":1}', "[]", '{"a":1}'),
    ('{"spec":{"x":1}}', '[{"op":"add","path":"/spec/x","value":2}]', '{"spec":{"x":2}}'),
]


@pytest.mark.parametrize(("doc", "ops", "result"), RFC6902_OK)
def test_json_patch_rfc6902_appendix(doc: str, ops: str, result: str) -> None:
    d = json.loads(doc)
    before = copy.deepcopy(d)
    assert json_patch(d, _ops(ops)) == json.loads(result)
    assert d == before


RFC6902_ERRORS = [
    # A.9 testing a value: error
    ('{"baz":"qux"}', '[{"op":"test","path":"/baz","value":"bar"}]', 'the "test" operation failed at /baz'),
    # A.12 adding to a nonexistent target
    ('{"foo":"bar"}', '[{"op":"add","path":"/baz/bat","value":"qux"}]', "path /baz does not exist"),
    # A.15 comparing strings and numbers
    ('{"/":9,"~1":10}', '[{"op":"test","path":"/~01","value":"10"}]', 'the "test" operation failed at /~01'),
    ('{"a":1}', '[{"op":"test","path":"/a","value":true}]', 'the "test" operation failed at /a'),
    ('{"a":[1,2]}', '[{"op":"test","path":"/a","value":[2,1]}]', 'the "test" operation failed at /a'),
    (
        '{"spec":{}}',
        '[{"op":"test","path":"/spec/type","value":"Edge"}]',
        'the "test" operation failed at /spec/type: path does not exist',
    ),
    ('{"spec":{}}', '[{"op":"replace","path":"/spec/x","value":1}]', "path /spec/x does not exist"),
    ('{"spec":{}}', '[{"op":"remove","path":"/spec/x"}]', "path /spec/x does not exist"),
    ('{"a":[1]}', '[{"op":"remove","path":"/a/1"}]', "path /a/1 does not exist"),
    ('{"a":[1]}', '[{"op":"remove","path":"/a/-"}]', "path /a/- does not exist"),
    ('{"a":[1]}', '[{"op":"add","path":"/a/2","value":0}]', "array index 2 out of bounds in path /a/2"),
    ('{"a":[1]}', '[{"op":"add","path":"/a/01","value":0}]', "invalid array index '01' in path /a/01"),
    (
        '{"a":{"b":1}}',
        '[{"op":"move","from":"/a","path":"/a/b/c"}]',
        "cannot move /a into its own child /a/b/c",
    ),
    ('{"a":1}', '[{"op":"copy","from":"/nope","path":"/b"}]', "path /nope does not exist"),
    ('{"a":1}', '[{"op":"remove","path":""}]', "cannot remove the whole document (path is empty)"),
    ('{"a":1}', '[{"op":"add","path":"/b"}]', '"add" operation is missing "value"'),
    ('{"a":1}', '[{"op":"move","path":"/b"}]', '"move" operation is missing "from"'),
    ('{"a":1}', '[{"op":"replace","value":1}]', '"replace" operation is missing "path"'),
    ('{"a":1}', '[{"op":"frobnicate","path":"/a"}]', 'unknown operation "frobnicate"'),
    ('{"a":1}', '[{"path":"/a"}]', 'each operation must have an "op" member that is a string'),
    ('{"a":1}', '[{"op":"add","path":"a","value":1}]', 'JSON pointer must be empty or start with "/": a'),
    (
        '{"a":1}',
        '[{"op":"add","path":"/~2","value":1}]',
        'invalid JSON pointer /~2: "~" must be followed by "0" or "1"',
    ),
    ('{"a":"s"}', '[{"op":"add","path":"/a/b","value":1}]', "path /a/b does not exist"),
    ('{"a":1}', '{"op":"add","path":"/b","value":1}', "operations must be a JSON array of objects"),
    ('{"a":1}', '["add"]', "operations must be a JSON array of objects"),
]


@pytest.mark.parametrize(("doc", "ops", "message"), RFC6902_ERRORS)
def test_json_patch_errors(doc: str, ops: str, message: str) -> None:
    d = json.loads(doc)
    before = copy.deepcopy(d)
    with pytest.raises(PatchError) as err:
        json_patch(d, _ops(ops))
    assert str(err.value) == message
    assert d == before


def test_json_patch_is_all_or_nothing() -> None:
    doc = {"a": 1}
    with pytest.raises(PatchError):
        json_patch(doc, [{"op": "add", "path": "/b", "value": 2}, {"op": "test", "path": "/a", "value": 3}])
    assert doc == {"a": 1}


def test_json_patch_values_are_copied() -> None:
    value = {"x": [1]}
    out = json_patch(
        {}, [{"op": "add", "path": "/v", "value": value}, {"op": "copy", "from": "/v", "path": "/w"}]
    )
    out["v"]["x"].append(2)
    assert value == {"x": [1]} and out["w"] == {"x": [1]}


@pytest.mark.parametrize(
    ("pointer", "tokens"),
    [
        ("", []),
        ("/", [""]),
        ("/foo/0", ["foo", "0"]),
        ("/a~1b", ["a/b"]),
        ("/m~0n", ["m~n"]),
        ("/~01", ["~1"]),
    ],
)
def test_parse_pointer_rfc6901(pointer: str, tokens: list[str]) -> None:
    assert parse_pointer(pointer) == tokens


@pytest.mark.parametrize(
    ("a", "b", "equal"),
    [
        (1, 1.0, True),
        (True, 1, False),
        (0, False, False),
        ("1", 1, False),
        ({"a": [1]}, {"a": [1]}, True),
        ([1, 2], [2, 1], False),
        (None, None, True),
        (None, False, False),
    ],
)
def test_json_equal(a: Any, b: Any, equal: bool) -> None:
    assert json_equal(a, b) is equal
