"""Staleness of DynamoDB records: is the item still what the record made it? Which record is newest?

A record is *stale* when the table no longer holds what it wrote: for INSERT and MODIFY, the
item (read back with a consistent BatchGetItem) is not equal to the record's NewImage (it was
changed or deleted since); for REMOVE, the item exists again. A record without a NewImage
(a KEYS_ONLY or OLD_IMAGE stream) cannot be judged and is sent. Of records sharing an item
key, all but the newest (highest sequence number) are *superseded*.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from decimal import Decimal, InvalidOperation
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from replayer.aws import Clients, error_code
from replayer.model import Failure, StreamRecord
from replayer.sinks._base import SinkError

__all__ = ["BATCH_KEYS", "StaleCheck", "item_key", "normalized", "parsed"]

BATCH_KEYS = 100  # BatchGetItem's limit per request
_UNPROCESSED_TRIES = 8


def parsed(record: StreamRecord) -> dict[str, Any]:
    document = json.loads(record.json)
    return document if isinstance(document, dict) else {}


def item_key(document: Mapping[str, Any]) -> str | None:
    """The record's item key as canonical JSON (None: not a DynamoDB record with Keys)."""
    keys = document.get("dynamodb", {}).get("Keys") if isinstance(document.get("dynamodb"), dict) else None
    if not isinstance(keys, dict) or not keys:
        return None
    return json.dumps(normalized(keys), sort_keys=True, separators=(",", ":"))


def normalized(value: Any) -> Any:
    """An AttributeValue document made comparable: numbers as numbers, sets in order."""
    if isinstance(value, dict):
        if len(value) == 1:
            ((kind, inner),) = value.items()
            if kind == "N" and isinstance(inner, str):
                return {"N": _number(inner)}
            if kind in ("SS", "BS") and isinstance(inner, list):
                return {kind: sorted(inner)}
            if kind == "NS" and isinstance(inner, list):
                return {"NS": sorted(_number(n) for n in inner)}
        return {k: normalized(v) for k, v in value.items()}
    if isinstance(value, list):
        return [normalized(v) for v in value]
    return value


def _number(text: str) -> str:
    try:
        return str(Decimal(text).normalize())
    except InvalidOperation:
        return text


class StaleCheck:
    """Reads records' items back, `BATCH_KEYS` keys a request, each key paced by `pace(n)`."""

    def __init__(self, clients: Clients, pace: Callable[[int], Awaitable[None]]) -> None:
        self._clients = clients
        self._pace = pace

    async def stale(self, failure: Failure, records: Sequence[StreamRecord]) -> set[str]:
        """The sequence numbers of `records` that are stale. SinkError when the table cannot be read."""
        documents = {r.sequence_number: parsed(r) for r in records}
        keys: dict[str, dict[str, Any]] = {}
        for document in documents.values():
            key = item_key(document)
            if key is not None:
                keys.setdefault(key, document["dynamodb"]["Keys"])
        items = await self._items(failure, list(keys.items()))
        stale = set()
        for sequence, document in documents.items():
            key = item_key(document)
            if key is None:
                continue
            item = items.get(key)
            change = document.get("dynamodb", {})
            if document.get("eventName") == "REMOVE":
                if item is not None:
                    stale.add(sequence)
            elif isinstance(change.get("NewImage"), dict) and (
                item is None or normalized(item) != normalized(change["NewImage"])
            ):
                stale.add(sequence)
        return stale

    async def _items(self, failure: Failure, keys: list[tuple[str, dict[str, Any]]]) -> dict[str, Any]:
        arn = failure.arn
        table = arn.name
        client = await self._clients.get("dynamodb", arn.region, arn.account)
        found: dict[str, Any] = {}
        for start in range(0, len(keys), BATCH_KEYS):
            chunk = keys[start : start + BATCH_KEYS]
            await self._pace(len(chunk))
            wanted: list[dict[str, Any]] = [k for _, k in chunk]
            for attempt in range(_UNPROCESSED_TRIES):
                request = {table: {"Keys": wanted, "ConsistentRead": True}}
                try:
                    answer = await client.batch_get_item(RequestItems=request)
                except ClientError as exc:
                    raise SinkError(_problem(table, error_code(exc) or str(exc))) from exc
                except BotoCoreError as exc:
                    raise SinkError(_problem(table, str(exc))) from exc
                for item in answer.get("Responses", {}).get(table, []):
                    key = _key_of(item, chunk)
                    if key is not None:
                        found[key] = item
                wanted = answer.get("UnprocessedKeys", {}).get(table, {}).get("Keys", [])
                if not wanted:
                    break
                await asyncio.sleep(min(5.0, 0.1 * 2**attempt))
            else:
                raise SinkError(_problem(table, f"{len(wanted)} keys left unprocessed"))
        return found


def _key_of(item: Mapping[str, Any], chunk: Iterable[tuple[str, dict[str, Any]]]) -> str | None:
    """Which of the keys asked for `item` is (its key attributes equal one of them)."""
    for key, attributes in chunk:
        if all(normalized(item.get(name)) == normalized(value) for name, value in attributes.items()):
            return key
    return None


def _problem(table: str, what: str) -> str:
    if "AccessDenied" in what:
        return (
            f"--skip-stale: reading table {table} back was refused ({what}): --skip-stale needs "
            f"dynamodb:BatchGetItem on it"
        )
    return f"--skip-stale: reading table {table} back failed: {what}"
