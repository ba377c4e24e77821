"""Lambda's event filtering (`FilterCriteria`), re-applied to records read back from a stream.

A failed batch's sequence range also spans records the mapping's filter excluded: the
function never saw them, and a re-drive should not show them to it either. This module
decides, record by record, what the mapping would have delivered; the same language
serves `--where`.

No well-kept Python library implements these rules: the one on PyPI (`event-ruler`
0.3.0) was last released in December 2023, before several operators below existed.
The rules follow AWS's Lambda event-filtering and EventBridge event-pattern documentation:

- A pattern is a JSON object whose shape follows the record. A key maps to a nested
  object (descend) or to a non-empty list of matchers (any one may match). Every key
  must match (AND); ``"$or": [pattern, ...]`` at any level matches when one branch does.
- Matchers: a literal string, number, ``true``/``false`` or ``null`` (equality; ``null``
  matches JSON null, ``""`` the empty string; numbers compare by their JSON text, so
  ``300`` is not ``300.0``); ``{"prefix": S}``, ``{"suffix": S}`` (also with
  ``{"equals-ignore-case": S}`` inside); ``{"equals-ignore-case": S}``;
  ``{"wildcard": "a*b"}`` (``\\*`` is a literal star); ``{"anything-but": V}`` with a
  literal, a list of literals, or a prefix / suffix / equals-ignore-case / wildcard form;
  ``{"numeric": [">", 0, "<=", 5]}`` (JSON numbers only: a DynamoDB ``N`` value is a JSON
  string and never matches it); ``{"exists": true|false}`` (leaves only: an object is not
  a value); ``{"cidr": "10.0.0.0/24"}``.
- A field holding a list matches when any element does; a nested pattern is tried
  against each object of a list separately (no mixing fields of different elements).
- DynamoDB records are matched as the Lambda record (``eventName``, ``dynamodb``...).
  Kinesis records are matched as their ``kinesis`` object (``partitionKey``, ``data``...),
  with ``data`` decoded from base64 and parsed when it is a JSON object or array; when it
  is not, no pattern that names ``data`` matches (Lambda drops such records).
- `FilterCriteria` holds up to ten patterns, ORed; none means every record passes.
"""

from __future__ import annotations

import base64
import binascii
import functools
import ipaddress
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from replayer.model import StreamKind, StreamRecord

__all__ = [
    "FilterCriteria",
    "Number",
    "Pattern",
    "PatternError",
    "criteria_for",
    "filter_document",
    "loads",
]


class PatternError(ValueError):
    """A filter pattern that Lambda (or EventBridge) would refuse; the message says why."""


@dataclass(frozen=True, slots=True)
class Number:
    """A JSON number as written: equality compares the text, `numeric` the value."""

    text: str
    value: Decimal


def _number(text: str) -> Number:
    return Number(text, Decimal(text))


def _no_constant(text: str) -> Any:
    raise ValueError(f"{text} is not JSON")


def loads(text: str | bytes) -> Any:
    """Parse JSON keeping numbers as `Number` (their text and value); ValueError when not JSON."""
    return json.loads(text, parse_int=_number, parse_float=_number, parse_constant=_no_constant)


def _normalize(value: Any) -> Any:
    """A Python JSON value with its numbers as `Number` (documents handed in as dicts)."""
    if isinstance(value, bool) or value is None or isinstance(value, str | Number):
        return value
    if isinstance(value, int):
        return Number(str(value), Decimal(value))
    if isinstance(value, float):
        return Number(json.dumps(value), Decimal(repr(value)))
    if isinstance(value, Mapping):
        return {str(k): _normalize(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_normalize(v) for v in value]
    return _OPAQUE if isinstance(value, _Opaque) else str(value)


class _Opaque:
    """A field no pattern can match (Kinesis `data` that is not JSON): even `exists` fails."""

    __slots__ = ()


_OPAQUE = _Opaque()
_MISSING = object()

# --------------------------------------------------------------------------- matchers


def _literal_key(value: Any) -> tuple[str, Any]:
    """What equality compares: the JSON type and, for numbers, the text as written."""
    if value is None:
        return ("null", None)
    if isinstance(value, bool):
        return ("bool", value)
    if isinstance(value, Number):
        return ("number", value.text)
    if isinstance(value, str):
        return ("string", value)
    return ("other", id(value))


def _is_literal(value: Any) -> bool:
    return value is None or isinstance(value, bool | str | Number)


@dataclass(frozen=True, slots=True)
class _Test:
    """One leaf test; `exists` is decided on the whole field, the others value by value."""

    op: str
    arg: Any = None

    def value(self, v: Any) -> bool:
        op, arg = self.op, self.arg
        if op == "equals":
            return bool(_literal_key(v) == arg)
        if op == "prefix":
            return isinstance(v, str) and v.startswith(arg)
        if op == "suffix":
            return isinstance(v, str) and v.endswith(arg)
        if op == "prefix-ic":
            return isinstance(v, str) and v.lower().startswith(arg)
        if op == "suffix-ic":
            return isinstance(v, str) and v.lower().endswith(arg)
        if op == "equals-ic":
            return isinstance(v, str) and v.lower() in arg
        if op == "wildcard":
            return isinstance(v, str) and any(r.fullmatch(v) for r in arg)
        if op == "numeric":
            return isinstance(v, Number) and all(_COMPARE[o](v.value, b) for o, b in arg)
        if op == "cidr":
            return isinstance(v, str) and _in_network(v, arg)
        if op == "anything-but":
            return not any(t.value(v) for t in arg)
        raise AssertionError(op)


def _in_network(text: str, network: ipaddress.IPv4Network | ipaddress.IPv6Network) -> bool:
    try:
        return ipaddress.ip_address(text) in network
    except ValueError:
        return False


_COMPARE = {
    "=": lambda a, b: a == b,
    "<": lambda a, b: a < b,
    "<=": lambda a, b: a <= b,
    ">": lambda a, b: a > b,
    ">=": lambda a, b: a >= b,
}


def _string(value: Any, where: str) -> str:
    if not isinstance(value, str):
        raise PatternError(f"{where} takes a string")
    return value


def _strings(value: Any, where: str) -> list[str]:
    items = value if isinstance(value, list) else [value]
    if not items:
        raise PatternError(f"{where} takes a string or a non-empty list of strings")
    return [_string(v, where) for v in items]


def _wildcard(text: str) -> re.Pattern[str]:
    if "**" in text:
        raise PatternError(f"wildcard {text!r}: consecutive '*' are not allowed")
    out, i = [], 0
    while i < len(text):
        c = text[i]
        if c == "\\":
            if i + 1 >= len(text) or text[i + 1] not in "*\\":
                raise PatternError(f"wildcard {text!r}: only \\* and \\\\ may be escaped")
            out.append(re.escape(text[i + 1]))
            i += 2
            continue
        out.append(".*" if c == "*" else re.escape(c))
        i += 1
    return re.compile("".join(out), re.DOTALL)


def _affix(op: str, value: Any) -> _Test:
    """`prefix`/`suffix`: a string, or {"equals-ignore-case": string}."""
    if isinstance(value, Mapping):
        if set(value) != {"equals-ignore-case"}:
            raise PatternError(f'{op} takes a string or {{"equals-ignore-case": string}}')
        return _Test(f"{op}-ic", _string(value["equals-ignore-case"], op).lower())
    return _Test(op, _string(value, op))


def _numeric(value: Any) -> _Test:
    if not isinstance(value, list) or not value or len(value) % 2 or len(value) > 4:
        raise PatternError('numeric takes one or two [operator, number] pairs, e.g. [">", 0, "<=", 5]')
    pairs: list[tuple[str, Decimal]] = []
    for op, bound in zip(value[::2], value[1::2], strict=True):
        if op not in _COMPARE:
            raise PatternError(f"numeric: unknown operator {op!r}; expected one of = < <= > >=")
        if not isinstance(bound, Number):
            raise PatternError(f"numeric: {op} needs a number")
        pairs.append((op, bound.value))
    lower = [op for op, _ in pairs if op in (">", ">=")]
    upper = [op for op, _ in pairs if op in ("<", "<=")]
    equal = [op for op, _ in pairs if op == "="]
    if len(lower) > 1 or len(upper) > 1 or (equal and len(pairs) > 1):
        raise PatternError("numeric: at most one lower and one upper bound, or a single '='")
    return _Test("numeric", tuple(pairs))


def _anything_but(value: Any) -> _Test:
    if isinstance(value, Mapping):
        if len(value) != 1:
            raise PatternError(
                "anything-but takes a value, a list, or one of prefix/suffix/equals-ignore-case/wildcard"
            )
        ((op, arg),) = value.items()
        if op in ("prefix", "suffix"):
            tests = [_affix(op, a) for a in (arg if isinstance(arg, list) else [arg])]
        elif op == "equals-ignore-case":
            tests = [_Test("equals-ic", frozenset(s.lower() for s in _strings(arg, op)))]
        elif op == "wildcard":
            tests = [_Test("wildcard", tuple(_wildcard(s) for s in _strings(arg, op)))]
        else:
            raise PatternError(f"anything-but does not take {op!r}")
        return _Test("anything-but", tuple(tests))
    items = value if isinstance(value, list) else [value]
    if not items or not all(isinstance(v, str | Number) for v in items):
        raise PatternError("anything-but takes a string, a number or a non-empty list of them")
    return _Test("anything-but", tuple(_Test("equals", _literal_key(v)) for v in items))


def _matcher(item: Any) -> _Test:
    if _is_literal(item):
        return _Test("equals", _literal_key(item))
    if not isinstance(item, Mapping) or len(item) != 1:
        raise PatternError(f"a matcher is a literal or an object with one operator, not {_show(item)}")
    ((op, arg),) = item.items()
    if op in ("prefix", "suffix"):
        return _affix(op, arg)
    if op == "equals-ignore-case":
        return _Test("equals-ic", frozenset(s.lower() for s in _strings(arg, op)))
    if op == "wildcard":
        return _Test("wildcard", tuple(_wildcard(s) for s in _strings(arg, op)))
    if op == "anything-but":
        return _anything_but(arg)
    if op == "numeric":
        return _numeric(arg)
    if op == "exists":
        if not isinstance(arg, bool):
            raise PatternError("exists takes true or false")
        return _Test("exists", arg)
    if op == "cidr":
        try:
            return _Test("cidr", ipaddress.ip_network(_string(arg, op), strict=False))
        except ValueError as exc:
            raise PatternError(f"cidr {arg!r}: {exc}") from None
    raise PatternError(f"unknown operator {op!r}")


def _show(value: Any) -> str:
    return json.dumps(value, default=lambda v: v.text if isinstance(v, Number) else str(v))[:80]


# --------------------------------------------------------------------------- patterns


@dataclass(frozen=True, slots=True)
class _Node:
    """An object pattern: leaf tests per key, nested nodes per key, and `$or` branches."""

    leaves: tuple[tuple[str, tuple[_Test, ...]], ...]
    nested: tuple[tuple[str, _Node], ...]
    branches: tuple[tuple[_Node, ...], ...]  # each `$or`: one of these must match

    def matches(self, obj: Any) -> bool:
        fields = obj if isinstance(obj, dict) else {}
        for key, tests in self.leaves:
            if not _leaf(tests, fields.get(key, _MISSING)):
                return False
        for key, node in self.nested:
            if not node.within(fields.get(key, _MISSING)):
                return False
        return all(any(b.matches(obj) for b in branch) for branch in self.branches)

    def within(self, value: Any) -> bool:
        """This nested pattern against a field: an object, each object of a list, or nothing."""
        if value is _OPAQUE:
            return False
        if isinstance(value, list) and value:
            return any(self.within(v) for v in value)
        return self.matches(value if isinstance(value, dict) else _MISSING)


def _values(value: Any) -> list[Any]:
    """The leaf values of a field: a list contributes each scalar inside it; objects none."""
    if value is _MISSING or isinstance(value, dict):
        return []
    if isinstance(value, list):
        return [leaf for v in value for leaf in _values(v)]
    return [value]


def _leaf(tests: tuple[_Test, ...], value: Any) -> bool:
    if value is _OPAQUE:
        return False
    values = _values(value)
    for test in tests:
        if test.op == "exists":
            if bool(values) == test.arg:
                return True
        elif any(test.value(v) for v in values):
            return True
    return False


def _compile(pattern: Any, path: str = "") -> _Node:
    if not isinstance(pattern, Mapping):
        raise PatternError(f"{path or 'a pattern'} must be a JSON object")
    leaves, nested, branches = [], [], []
    for key, value in pattern.items():
        here = f"{path}.{key}" if path else key
        if key == "$or":
            if not isinstance(value, list) or len(value) < 2:
                raise PatternError(f"{here} takes a list of at least two patterns")
            branches.append(tuple(_compile(v, here) for v in value))
        elif isinstance(value, Mapping):
            nested.append((key, _compile(value, here)))
        elif isinstance(value, list):
            if not value:
                raise PatternError(f"{here}: empty lists are not allowed")
            leaves.append((key, tuple(_matcher(v) for v in value)))
        else:
            raise PatternError(f"{here} must be an object or a list of matchers, not {_show(value)}")
    return _Node(tuple(leaves), tuple(nested), tuple(branches))


@dataclass(frozen=True, slots=True)
class Pattern:
    """One compiled filter pattern; `text` is the pattern as given."""

    text: str
    _root: _Node

    @classmethod
    def parse(cls, pattern: str | bytes | Mapping[str, Any]) -> Pattern:
        """Compile a pattern (JSON text, or an already parsed object); PatternError says what is wrong."""
        if isinstance(pattern, Mapping):
            tree, text = _normalize(pattern), json.dumps(pattern, separators=(",", ":"))
        else:
            text = pattern.decode() if isinstance(pattern, bytes) else pattern
            try:
                tree = loads(text)
            except ValueError as exc:
                raise PatternError(f"not JSON: {exc}") from None
        return cls(text, _compile(tree))

    def matches(self, document: Any) -> bool:
        """True when `document` (a JSON object, as parsed by `loads` or plain Python) matches."""
        return self._root.matches(document if _numbers_kept(document) else _normalize(document))


def _numbers_kept(document: Any) -> bool:
    """Whether `document` came from `loads` (or `filter_document`): numbers already `Number`."""
    return isinstance(document, _Document)


class _Document(dict[str, Any]):
    """A parsed document whose numbers are already `Number`s; spares normalizing it again."""


def _parse_document(text: str | bytes) -> _Document:
    value = loads(text)
    if not isinstance(value, dict):
        raise ValueError("a record must be a JSON object")
    return _Document(value)


def filter_document(kind: StreamKind, record: StreamRecord | bytes | Mapping[str, Any]) -> Mapping[str, Any]:
    """What Lambda matches patterns against for a stream record in its Lambda event shape.

    DynamoDB: the record itself. Kinesis: its ``kinesis`` object, ``data`` decoded when it
    is a JSON object or array (else a value no pattern matches). Kafka: the record, its ``value``
    decoded the same way.
    """
    if isinstance(record, StreamRecord):
        record = record.json
    doc = _parse_document(record) if isinstance(record, bytes | str) else _Document(_normalize(record))
    if kind is StreamKind.KAFKA and "value" in doc:
        doc["value"] = _decode_data(doc["value"])
    if kind is not StreamKind.KINESIS:
        return doc
    inner = doc.get("kinesis")
    inner = _Document(inner) if isinstance(inner, dict) else _Document()
    if "data" in inner:
        inner["data"] = _decode_data(inner["data"])
    return inner


def _decode_data(data: Any) -> Any:
    if not isinstance(data, str):
        return _OPAQUE
    try:
        value = loads(base64.b64decode(data, validate=True).decode("utf-8"))
    except (ValueError, binascii.Error, UnicodeDecodeError):
        return _OPAQUE
    return value if isinstance(value, dict | list) else _OPAQUE


@dataclass(frozen=True, slots=True)
class FilterCriteria:
    """A mapping's filters: a record passes when any pattern matches (or there are none)."""

    patterns: tuple[Pattern, ...] = ()

    @classmethod
    def from_api(cls, value: Mapping[str, Any] | None) -> FilterCriteria:
        """From the API's ``{"Filters": [{"Pattern": "..."}]}`` (None or empty: no filter)."""
        filters = (value or {}).get("Filters") or []
        if not isinstance(filters, list):
            raise PatternError("FilterCriteria.Filters must be a list")
        patterns = []
        for n, item in enumerate(filters):
            text = item.get("Pattern") if isinstance(item, Mapping) else None
            if not isinstance(text, str):
                raise PatternError(f"FilterCriteria.Filters[{n}] has no Pattern string")
            try:
                patterns.append(Pattern.parse(text))
            except PatternError as exc:
                raise PatternError(f"FilterCriteria.Filters[{n}]: {exc}") from None
        return cls(tuple(patterns))

    @classmethod
    def of(cls, *patterns: str | Mapping[str, Any]) -> FilterCriteria:
        return cls(tuple(Pattern.parse(p) for p in patterns))

    def __bool__(self) -> bool:
        return bool(self.patterns)

    def matches(self, document: Any) -> bool:
        """True when there is no pattern, or `document` matches one of them."""
        return not self.patterns or any(p.matches(document) for p in self.patterns)

    def admits(self, kind: StreamKind, record: StreamRecord | bytes | Mapping[str, Any]) -> bool:
        """Whether Lambda would have delivered this stream record (in its Lambda event shape)."""
        if not self.patterns:
            return True
        try:
            document = filter_document(kind, record)
        except ValueError:  # not a JSON object: nothing to match, as Lambda would drop it
            return False
        return any(p.matches(document) for p in self.patterns)

    def select(self, kind: StreamKind, records: Iterable[StreamRecord]) -> list[StreamRecord]:
        """The records this filter admits, in their order."""
        return [r for r in records if self.admits(kind, r)]

    def describe(self) -> list[str]:
        """The patterns as given (for manifests and dry runs)."""
        return [p.text for p in self.patterns]


@functools.lru_cache(maxsize=128)
def criteria_for(patterns: tuple[str, ...]) -> FilterCriteria:
    """The compiled criteria of a mapping's pattern texts (compiled once per process)."""
    return FilterCriteria.of(*patterns)
