"""Small helpers for what comes off the wire."""

from __future__ import annotations

import base64
import json
from datetime import datetime
from typing import Any

from botocore.exceptions import ClientError

__all__ = ["dumps", "error_code", "jsonable"]


def error_code(exc: ClientError) -> str:
    code: str = exc.response.get("Error", {}).get("Code", "")
    return code


def dumps(obj: Any) -> bytes:
    """Compact JSON bytes, the way Lambda serializes events (no spaces, UTF-8 kept)."""
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()


def jsonable(value: Any) -> Any:
    """Undo botocore's parsing: datetimes back to epoch seconds, bytes back to base64."""
    if isinstance(value, dict):
        return {k: jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set):
        return [jsonable(v) for v in value]
    if isinstance(value, datetime):
        ts = value.timestamp()
        return int(ts) if ts.is_integer() else ts
    if isinstance(value, bytes | bytearray):
        return base64.b64encode(value).decode()
    return value
