"""Decoding JSON text from the outside world: bounded, strict, and only ever raising ParseError."""

from __future__ import annotations

import json
from collections.abc import Mapping
from itertools import islice
from typing import Any, NoReturn

from replayer.errors import ParseError

__all__ = [
    "MAX_TEXT_BYTES",
    "ExtraDataError",
    "decode_text",
    "describe_type",
    "keys_seen",
    "loads",
    "loads_str",
    "require_object",
    "required",
    "required_string",
    "truncate",
]

# An SQS message is at most 256 KiB and an S3 destination object one batch of at most 6 MB;
# 16 MiB leaves room for files holding many records while keeping memory bounded.
MAX_TEXT_BYTES = 16 * 1024 * 1024
_BOM = "\ufeff"


def decode_text(text: str | bytes | bytearray, path: str) -> str:
    """`text` as a str: size-bounded, strict UTF-8 for bytes, one leading byte order mark dropped."""
    if not isinstance(text, str | bytes | bytearray):
        raise ParseError(f"expected JSON text (str or bytes), got {describe_type(text)}", path)
    if len(text) > MAX_TEXT_BYTES:
        unit = "characters" if isinstance(text, str) else "bytes"
        raise ParseError(f"input is larger than the 16 MiB limit ({len(text)} {unit})", path)
    if isinstance(text, bytes | bytearray):
        try:
            text = bytes(text).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ParseError(f"input is not valid UTF-8 (byte {exc.start}: {exc.reason})", path) from None
    return text.removeprefix(_BOM)


class ExtraDataError(ParseError):
    """One valid JSON value followed by more text: the hint that a document is JSON Lines."""


def loads(text: str | bytes | bytearray, path: str) -> Any:
    """Parse one JSON value. NaN/Infinity, invalid UTF-8 and over-deep nesting are ParseErrors."""
    return loads_str(decode_text(text, path), path)


def _reject_constant(name: str) -> NoReturn:
    raise ValueError(f"{name} is not a JSON value")


def loads_str(text: str, path: str) -> Any:
    """Parse one JSON value from an already decoded and bounded str."""
    try:
        return json.loads(text, parse_constant=_reject_constant)
    except json.JSONDecodeError as exc:
        error = ExtraDataError if exc.msg == "Extra data" else ParseError
        raise error(f"invalid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})", path) from None
    except RecursionError:
        raise ParseError("invalid JSON: nested too deeply", path) from None
    except ValueError as exc:  # NaN/Infinity, or an integer beyond Python's digit limit
        raise ParseError(f"invalid JSON: {truncate(str(exc), 120)}", path) from None


def describe_type(value: object) -> str:
    """The JSON name of a value's type, for error messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, Mapping):
        return "object"
    if isinstance(value, list | tuple):
        return "array"
    return type(value).__name__


def require_object(value: object, path: str, what: str = "a JSON object") -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise ParseError(f"expected {what}, got {describe_type(value)}", path)
    return value


def required(obj: Mapping[str, Any], key: str, path: str) -> Any:
    """`obj[key]`, or a ParseError naming the missing key."""
    if key not in obj:
        raise ParseError(f"missing {key}", f"{path}.{key}")
    return obj[key]


def required_string(obj: Mapping[str, Any], key: str, path: str) -> str:
    value = required(obj, key, path)
    if not isinstance(value, str):
        raise ParseError(f"{key} must be a string, got {describe_type(value)}", f"{path}.{key}")
    return value


def keys_seen(obj: Mapping[str, Any], limit: int = 8) -> str:
    """The first few keys of `obj`, each truncated, for 'what did we get instead' messages."""
    keys = [truncate(repr(key), 40) for key in islice(obj, limit + 1)]
    shown = ", ".join(keys[:limit])
    return f"{shown}, ..." if len(keys) > limit else shown or "none"


def truncate(text: str, limit: int = 60) -> str:
    """`text` cut to `limit` characters, for quoting input back in error messages."""
    return text if len(text) <= limit else text[: limit - 3] + "..."
