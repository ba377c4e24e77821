"""Records carried inline by an S3 on-failure destination: nothing to re-read, if they hold up.

A payload is believed only when the source vouched for it (see `replayer.parse`) AND it
is exactly the batch its range names: every record of the range's stream and shard, in
start..end, the first at start and the last at end, no duplicates, as many as batchSize.
Otherwise `payload_problem` says why, and the range is read from the stream instead.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta
from typing import Any

from replayer.model import Failure, StreamKind
from replayer.readers._base import RangeCollector, ReadResult, StreamReader
from replayer.wire import dumps

__all__ = ["PayloadReader", "StreamInstead", "payload_problem"]

_SHAPE = {
    StreamKind.DYNAMODB: ("dynamodb", "SequenceNumber"),
    StreamKind.KINESIS: ("kinesis", "sequenceNumber"),
}


def _sequence_number(record: Mapping[str, Any], kind: StreamKind) -> str | None:
    outer, inner = _SHAPE[kind]
    part = record.get(outer)
    # ASCII digits only: str.isdigit() also takes "²", which int() refuses
    if (
        isinstance(part, Mapping)
        and isinstance(part.get(inner), str)
        and part[inner].isascii()
        and part[inner].isdigit()
    ):
        return str(part[inner])
    return None


def _record_problem(record: Mapping[str, Any], failure: Failure, n: int) -> tuple[str | None, int]:
    sequence_number = _sequence_number(record, failure.kind)
    if sequence_number is None:
        return f"record {n} has no {failure.kind.value} sequence number", 0
    sequence = int(sequence_number)
    if not failure.start <= sequence <= failure.end:
        return f"record {n} ({sequence_number}) is outside the range", sequence
    source = record.get("eventSourceARN")
    if source is not None and source != failure.stream_arn:
        return f"record {n} is of another stream", sequence
    event_id = record.get("eventID")  # Kinesis: "shardId-...:sequence"
    shard = event_id.rpartition(":")[0] if isinstance(event_id, str) else ""
    if failure.kind is StreamKind.KINESIS and shard and shard != failure.shard_id:
        return f"record {n} is of another shard", sequence
    return None, sequence


def payload_problem(failure: Failure) -> str | None:
    """Why the failure's inline payload is not exactly its batch, or None when it is."""
    payload = failure.payload or ()
    if not payload:
        return "it holds no records"
    sequences: list[int] = []
    for n, record in enumerate(payload):
        problem, sequence = _record_problem(record, failure, n)
        if problem is not None:
            return problem
        sequences.append(sequence)
    if len(set(sequences)) != len(sequences):
        return "it holds a record twice"
    if min(sequences) != failure.start or max(sequences) != failure.end:
        return "its first and last records are not the range's start and end"
    if failure.batch_size is None:
        return "the invocation record gives no batchSize to check it against"
    if len(sequences) != failure.batch_size:
        return f"it holds {len(sequences)} records where batchSize says {failure.batch_size}"
    return None


class PayloadReader:
    """Takes the records of `Failure.payload` as they are, in sequence order (checked first: `payload_problem`)."""

    async def retention(self, failure: Failure) -> timedelta:
        return timedelta.max  # the records live in the S3 object, not the stream

    async def read(self, failure: Failure) -> ReadResult:
        books = RangeCollector(failure)
        keyed = []
        for record in failure.payload or ():
            sequence_number = _sequence_number(record, failure.kind)
            if sequence_number is not None:
                keyed.append((int(sequence_number), sequence_number, record))
        keyed.sort(key=lambda item: item[0])
        for _, sequence_number, record in keyed:
            event_record = dict(record)
            event_record.setdefault("eventSourceARN", failure.stream_arn)
            books.add(sequence_number, dumps(event_record))
        return books.result()


class StreamInstead:
    """A payload that does not hold up: the range is read from the stream, and the reason reported."""

    def __init__(self, stream: StreamReader, problem: str) -> None:
        self.stream = stream
        self.problem = problem

    async def retention(self, failure: Failure) -> timedelta:
        return await self.stream.retention(failure)

    async def read(self, failure: Failure) -> ReadResult:
        result = await self.stream.read(failure)
        note = f"the inline payload was not used ({self.problem}): the range was read from the stream"
        return ReadResult(result.records, result.gaps, (note, *result.notes), result.complete)
