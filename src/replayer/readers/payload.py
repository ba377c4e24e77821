"""Records carried inline by an S3 on-failure destination: nothing to re-read."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta
from typing import Any

from replayer.model import Failure
from replayer.readers._base import RangeCollector, ReadResult
from replayer.wire import dumps

__all__ = ["PayloadReader"]


def _sequence_number(record: Mapping[str, Any]) -> str | None:
    for outer, inner in (("dynamodb", "SequenceNumber"), ("kinesis", "sequenceNumber")):
        part = record.get(outer)
        if isinstance(part, Mapping) and isinstance(part.get(inner), str) and part[inner].isdigit():
            return str(part[inner])
    return None


class PayloadReader:
    """Takes the records of `Failure.payload` as they are, in sequence order."""

    async def retention(self, failure: Failure) -> timedelta:
        return timedelta.max  # the records live in the S3 object, not the stream

    async def read(self, failure: Failure) -> ReadResult:
        books = RangeCollector(failure)
        keyed = []
        for record in failure.payload or ():
            sequence_number = _sequence_number(record)
            if sequence_number is None:
                books.notes.append("a payload record without a sequence number was skipped")
                continue
            keyed.append((int(sequence_number), sequence_number, record))
        keyed.sort(key=lambda item: item[0])
        for _, sequence_number, record in keyed:
            event_record = dict(record)
            event_record.setdefault("eventSourceARN", failure.stream_arn)
            books.add(sequence_number, dumps(event_record))
        books.done = True  # the payload is the whole batch, whatever its range says
        return books.result()
