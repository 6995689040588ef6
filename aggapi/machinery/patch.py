"""JSON merge patch (RFC 7386) and JSON patch (RFC 6902) over decoded JSON values.

Both return new values and never mutate their inputs: the caller's stored object and the request's
patch body stay intact, so a failed patch leaves nothing half-applied.
"""

from __future__ import annotations

import copy
import re
from typing import Any


class PatchError(ValueError):
    """The patch cannot be applied; str() is meant for the Status message."""


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 MergePatch: objects merge key by key, null deletes, anything else replaces."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result: dict[str, Any] = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    # Untouched members are shared with `target` above; copy so the result owns all its parts.
    return {k: (v if k in patch else copy.deepcopy(v)) for k, v in result.items()}


_ARRAY_INDEX_RE = re.compile(r"0|[1-9][0-9]*")


def parse_pointer(pointer: Any) -> list[str]:
    """RFC 6901 JSON pointer into its unescaped reference tokens ("" is the whole document)."""
    if not isinstance(pointer, str):
        raise PatchError(f"JSON pointer must be a string, got {pointer!r}")
    if pointer == "":
        return []
    if not pointer.startswith("/"):
        raise PatchError(f'JSON pointer must be empty or start with "/": {pointer}')
    tokens = []
    for raw in pointer[1:].split("/"):
        if re.search(r"~(?![01])", raw):
            raise PatchError(f'invalid JSON pointer {pointer}: "~" must be followed by "0" or "1"')
        tokens.append(raw.replace("~1", "/").replace("~0", "~"))
    return tokens


def _index(container: list[Any], token: str, pointer: str, *, allow_end: bool) -> int:
    if token == "-" and allow_end:
        return len(container)
    if not _ARRAY_INDEX_RE.fullmatch(token):
        raise PatchError(f"invalid array index {token!r} in path {pointer}")
    idx = int(token)
    if idx > len(container) or (idx == len(container) and not allow_end):
        raise PatchError(f"array index {idx} out of bounds in path {pointer}")
    return idx


def format_pointer(tokens: list[str]) -> str:
    return "".join("/" + t.replace("~", "~0").replace("/", "~1") for t in tokens)


def _resolve(doc: Any, tokens: list[str]) -> Any:
    """The value at `tokens`; the error names the first part of the path that is missing."""
    cur = doc
    for i, token in enumerate(tokens):
        if isinstance(cur, dict) and token in cur:
            cur = cur[token]
        elif isinstance(cur, list) and _ARRAY_INDEX_RE.fullmatch(token) and int(token) < len(cur):
            cur = cur[int(token)]
        else:
            raise PatchError(f"path {format_pointer(tokens[: i + 1])} does not exist")
    return cur


def _add(doc: Any, tokens: list[str], pointer: str, value: Any) -> Any:
    if not tokens:
        return value
    parent = _resolve(doc, tokens[:-1])
    last = tokens[-1]
    if isinstance(parent, dict):
        parent[last] = value
    elif isinstance(parent, list):
        parent.insert(_index(parent, last, pointer, allow_end=True), value)
    else:
        raise PatchError(f"path {pointer} does not exist")
    return doc


def _remove(doc: Any, tokens: list[str], pointer: str) -> tuple[Any, Any]:
    """Remove the value at `tokens`; returns (document, removed value)."""
    if not tokens:
        raise PatchError("cannot remove the whole document (path is empty)")
    parent = _resolve(doc, tokens[:-1])
    last = tokens[-1]
    if isinstance(parent, dict) and last in parent:
        return doc, parent.pop(last)
    if isinstance(parent, list) and _ARRAY_INDEX_RE.fullmatch(last) and int(last) < len(parent):
        return doc, parent.pop(int(last))
    raise PatchError(f"path {pointer} does not exist")


def _replace(doc: Any, tokens: list[str], pointer: str, value: Any) -> Any:
    if not tokens:
        return value
    _resolve(doc, tokens)  # must exist
    parent = _resolve(doc, tokens[:-1])
    if isinstance(parent, dict):
        parent[tokens[-1]] = value
    else:
        parent[int(tokens[-1])] = value
    return doc


def json_equal(a: Any, b: Any) -> bool:
    """JSON value equality: unlike Python ==, true is not 1; objects ignore member order."""
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return a == b
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(json_equal(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(json_equal(x, y) for x, y in zip(a, b, strict=True))
    return type(a) is type(b) and bool(a == b)


def _member(op: dict[str, Any], name: str, kind: str) -> Any:
    if name not in op:
        raise PatchError(f'"{kind}" operation is missing "{name}"')
    return op[name]


def json_patch(doc: Any, operations: Any) -> Any:
    """RFC 6902: apply add/remove/replace/move/copy/test in order to a copy of `doc`; all or nothing."""
    if not isinstance(operations, list) or not all(isinstance(op, dict) for op in operations):
        raise PatchError("operations must be a JSON array of objects")
    result = copy.deepcopy(doc)
    for op in operations:
        kind = op.get("op")
        if not isinstance(kind, str):
            raise PatchError('each operation must have an "op" member that is a string')
        path = _member(op, "path", kind)
        tokens = parse_pointer(path)
        if kind == "add":
            result = _add(result, tokens, path, copy.deepcopy(_member(op, "value", kind)))
        elif kind == "remove":
            result, _ = _remove(result, tokens, path)
        elif kind == "replace":
            result = _replace(result, tokens, path, copy.deepcopy(_member(op, "value", kind)))
        elif kind in ("move", "copy"):
            src = _member(op, "from", kind)
            src_tokens = parse_pointer(src)
            if kind == "move":
                if tokens[: len(src_tokens)] == src_tokens and len(tokens) > len(src_tokens):
                    raise PatchError(f"cannot move {src} into its own child {path}")
                if src_tokens == tokens:
                    _resolve(result, src_tokens)  # a no-op, but "from" must still exist
                    continue
                result, value = _remove(result, src_tokens, src)
            else:
                value = copy.deepcopy(_resolve(result, src_tokens))
            result = _add(result, tokens, path, value)
        elif kind == "test":
            want = _member(op, "value", kind)
            try:
                have = _resolve(result, tokens)
            except PatchError:
                raise PatchError(f'the "test" operation failed at {path}: path does not exist') from None
            if not json_equal(have, want):
                raise PatchError(f'the "test" operation failed at {path}')
        else:
            raise PatchError(f'unknown operation "{kind}"')
    return result
