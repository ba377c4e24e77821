"""Readers turn a `Failure` into the records it names, in the Lambda event shape.

They own every stream edge case (empty pages, expired iterators, closed shards,
trimmed data) and say exactly what they could not recover.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence

from replayer.aws import Clients
from replayer.model import Failure, StreamKind
from replayer.readers._base import (
    DEFAULT_MAX_RECORDS_PER_RANGE,
    NO_SUCH_STREAM,
    OVER_BATCH,
    TOO_LARGE,
    RangeCollector,
    RangeRecords,
    ReadResult,
    StreamReader,
    judged,
    pages_of,
    shard_lock,
)
from replayer.readers.dynamodb import DynamoDBReader
from replayer.readers.kafka import KafkaPayloadReader, KafkaReader, kafka_payload
from replayer.readers.kinesis import KinesisReader
from replayer.readers.payload import PayloadReader, StreamInstead, payload_problem

__all__ = [
    "DEFAULT_MAX_RECORDS_PER_RANGE",
    "NO_SUCH_STREAM",
    "OVER_BATCH",
    "TOO_LARGE",
    "DynamoDBReader",
    "KafkaReader",
    "KinesisReader",
    "PayloadReader",
    "RangeCollector",
    "RangeRecords",
    "ReadResult",
    "Readers",
    "StreamReader",
    "judged",
    "known_unfiltered",
    "pages_of",
    "shard_lock",
]


def known_unfiltered(failure: Failure) -> bool:
    """True when the failure's event source mapping was found and has no FilterCriteria."""
    return failure.mapping is not None and failure.mapping.found and not failure.mapping.filters


class Readers:
    """Picks the reader for a failure: inline payload, DynamoDB Streams or Kinesis."""

    def __init__(
        self,
        clients: Clients,
        *,
        max_empty_pages: int = 50,
        invoke_identity_arn: str | None = None,
        max_records_per_range: int = DEFAULT_MAX_RECORDS_PER_RANGE,
        unfiltered: Callable[[Failure], bool] | None = None,
        kafka_brokers: Sequence[tuple[str, tuple[str, ...]]] = (),
    ) -> None:
        """`invoke_identity_arn` (default: env REPLAYER_INVOKE_IDENTITY_ARN) fills Kinesis
        events' `invokeIdentityArn`, the role Lambda invoked with; unknown, it is left out.

        A range is read to its end or to its ceiling: its `batchSize` when `unfiltered(failure)`
        says its mapping is known to have no filter (a filtered batch spans records its filter
        dropped), else `max_records_per_range`. Past the ceiling the range is refused. By
        default a mapping is known unfiltered when the core found it and it has no FilterCriteria.
        `kafka_brokers`: the `--kafka-brokers` (source glob, servers) pairs Kafka ranges are read from.
        """
        identity = invoke_identity_arn or os.environ.get("REPLAYER_INVOKE_IDENTITY_ARN") or None
        self._unfiltered = unfiltered or known_unfiltered
        self.max_records_per_range = max_records_per_range
        ceiling = self.ceiling
        self.payload = PayloadReader()
        self.dynamodb = DynamoDBReader(clients, max_empty_pages=max_empty_pages, ceiling=ceiling)
        self.kinesis = KinesisReader(
            clients, max_empty_pages=max_empty_pages, invoke_identity_arn=identity, ceiling=ceiling
        )
        self.kafka = KafkaReader(clients, brokers=kafka_brokers, ceiling=ceiling)
        self.kafka_payload = KafkaPayloadReader()

    def ceiling(self, failure: Failure) -> int:
        """The most records the failure's range may hold, by its own claims (see `__init__`)."""
        if failure.batch_size is not None and self._unfiltered(failure):
            return min(failure.batch_size, self.max_records_per_range)
        return self.max_records_per_range

    def for_failure(self, failure: Failure) -> StreamReader:
        if failure.kind is StreamKind.KAFKA:
            if failure.payload is None:
                return self.kafka
            made = kafka_payload(failure)
            return self.kafka_payload if not isinstance(made, str) else StreamInstead(self.kafka, made)
        stream: StreamReader = self.dynamodb if failure.kind is StreamKind.DYNAMODB else self.kinesis
        if failure.payload is None:
            return stream
        problem = payload_problem(failure)
        return self.payload if problem is None else StreamInstead(stream, problem)
