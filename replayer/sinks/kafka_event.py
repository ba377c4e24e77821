"""Lambda's Kafka event around a Kafka range's records: what a repair function is invoked with.

``{"eventSource": "aws:kafka", "eventSourceArn": ..., "bootstrapServers": ..., "records":
{"<topic>-<partition>": [...]}}`` for Amazon MSK; ``"SelfManagedKafka"`` and no ARN for self-managed
Kafka (Powertools: `KafkaMskEventModel`, `KafkaSelfManagedEventModel`). A range is one
topic-partition, so the event is a fixed head and tail around the records' JSON, joined: chunks are
sized as for the streams' ``{"Records": [...]}``.
"""

from __future__ import annotations

from collections.abc import Sequence

from replayer.model import KAFKA_SELF_MANAGED, Failure
from replayer.wire import dumps

__all__ = ["MSK_EVENT_SOURCE", "SELF_MANAGED_EVENT_SOURCE", "kafka_envelope", "kafka_event"]

MSK_EVENT_SOURCE = "aws:kafka"
SELF_MANAGED_EVENT_SOURCE = "SelfManagedKafka"


def kafka_envelope(failure: Failure) -> tuple[bytes, bytes]:
    """The bytes before and after the range's records (joined by commas) in its Kafka event."""
    head: dict[str, str] = {}
    if failure.self_managed:
        head["eventSource"] = SELF_MANAGED_EVENT_SOURCE
    else:
        head["eventSource"] = MSK_EVENT_SOURCE
        head["eventSourceArn"] = failure.stream_arn
    # As Lambda sent it (the record's own); a self-managed source's name lists them too.
    servers = failure.bootstrap_servers or (
        failure.stream_arn.removeprefix(KAFKA_SELF_MANAGED) if failure.self_managed else None
    )
    if servers:
        head["bootstrapServers"] = servers
    opening = dumps(head)[:-1] + b',"records":{' + dumps(failure.shard_id) + b":["
    return opening, b"]}}"


def kafka_event(failure: Failure, jsons: Sequence[bytes]) -> bytes:
    """The Kafka event holding these records (each already in Lambda's Kafka record shape)."""
    head, tail = kafka_envelope(failure)
    return head + b",".join(jsons) + tail
