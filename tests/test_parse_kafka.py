"""replayer.parse, Kafka: MSK and self-managed invocation records in every envelope, one range per
topic-partition, both conditions, the Kafka-topic destination's one-record form, and what is refused."""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime
from typing import Any

import pytest

from replayer.errors import ParseError
from replayer.model import Failure, StreamKind
from replayer.parse import parse_document, parse_message
from tests.support.events import load_event

MSK = "arn:aws:kafka:us-east-1:123456789012:cluster/orders-cluster/751d2973-a626-431c-9d4e-d7975eb44dd7-2"
SELF_MANAGED = "kafka://kafka-1.internal.example:9092,kafka-2.internal.example:9092"


def kafka_event(name: str) -> Any:
    return load_event(f"kafka/{name}")


def sqs_lambda_event(body: str) -> dict[str, Any]:
    return {"Records": [{"messageId": "m1", "eventSource": "aws:sqs", "body": body}]}


def sns_notification(message: str) -> dict[str, Any]:
    return {
        "Type": "Notification",
        "MessageId": "n1",
        "TopicArn": "arn:aws:sns:us-east-1:123456789012:t",
        "Message": message,
    }


def sns_lambda_event(message: str) -> dict[str, Any]:
    return {"Records": [{"EventSource": "aws:sns", "Sns": {"Message": message}}]}


ENVELOPES = {
    "sqs body": lambda text: text,
    "sqs lambda event": lambda text: sqs_lambda_event(text),
    "sns notification in sqs": lambda text: json.dumps(sns_notification(text)),
    "sns lambda event": lambda text: sns_lambda_event(text),
    "sns notification in an sqs lambda event": lambda text: sqs_lambda_event(
        json.dumps(sns_notification(text))
    ),
}


def spans(failures: list[Failure]) -> list[tuple[str | None, int | None, int, int]]:
    return [(f.topic, f.partition, f.start, f.end) for f in failures]


@pytest.mark.parametrize("envelope", ENVELOPES)
def test_an_msk_record_is_one_range_per_partition_in_every_envelope(envelope: str) -> None:
    failures = parse_message(ENVELOPES[envelope](json.dumps(kafka_event("msk_sqs_record.json"))))
    assert spans(failures) == [
        ("order-events", 0, 40, 42),
        ("order-events", 2, 17, 18),
        ("payments", 1, 5, 6),
    ]
    first = failures[0]
    assert first.kind is StreamKind.KAFKA and first.stream_arn == MSK
    assert first.shard_id == "order-events-0"
    assert first.condition == "RetryAttemptsExhausted"
    assert first.batch_size == 7
    assert first.source_arn == "arn:aws:lambda:us-east-1:123456789012:function:order-consumer"
    assert first.first_arrival == datetime(2025, 4, 2, 10, 15, 1, 835000, tzinfo=UTC)
    assert first.payload is None
    assert first.arn.region == "us-east-1" and first.arn.account == "123456789012"
    assert len({f.range_id for f in failures}) == 3  # each its own range, its own outcome


def test_a_self_managed_record_with_payload_size_exceeded_and_a_null_response_context() -> None:
    [failure] = parse_message(json.dumps(kafka_event("self_managed_payload_size.json")))
    assert failure.stream_arn == SELF_MANAGED and failure.self_managed
    assert failure.condition == "MaximumPayloadSizeExceeded"
    assert (failure.topic, failure.partition, failure.start_sequence, failure.end_sequence) == (
        "ledger",
        0,
        "1000",
        "1001",
    )
    with pytest.raises(ValueError):
        failure.arn  # noqa: B018  (no ARN: self-managed clusters are named kafka://servers)


@pytest.mark.parametrize("name", ["s3_destination_payload_string.json", "s3_destination_payload_object.json"])
def test_an_s3_destination_object_brings_its_partitions_records(name: str) -> None:
    [failure] = parse_document(json.dumps(kafka_event(name)), payloads=True)
    assert (failure.topic, failure.partition, failure.start, failure.end) == ("payments", 1, 5, 6)
    assert failure.payload is not None
    assert [r["offset"] for r in failure.payload] == [5, 6]


def test_the_kafka_topic_destinations_one_record_form() -> None:
    [failure] = parse_message(kafka_event("kafka_topic_destination_record.json"), payloads=True)
    assert (failure.topic, failure.partition, failure.start, failure.end) == ("order-events", 2, 18, 18)
    assert failure.batch_size == 1
    assert failure.payload is not None and failure.payload[0]["offset"] == 18


def test_a_topic_with_dashes_is_split_at_the_last_dash() -> None:
    record = kafka_event("msk_sqs_record.json")
    record["KafkaBatchInfo"]["recordsInfo"] = {"a-b-c-12": {"firstRecordOffset": 1, "lastRecordOffset": 1}}
    [failure] = parse_message(record)
    assert (failure.topic, failure.partition) == ("a-b-c", 12)


def test_the_same_range_has_the_same_id_wherever_it_arrives() -> None:
    text = json.dumps(kafka_event("msk_sqs_record.json"))
    ids = {tuple(f.range_id for f in parse_message(wrap(text))) for wrap in ENVELOPES.values()}
    assert len(ids) == 1


def test_a_described_kafka_range_reads_back_as_the_same_range() -> None:
    for failure in [
        *parse_message(kafka_event("msk_sqs_record.json")),
        *parse_message(kafka_event("self_managed_payload_size.json")),
    ]:
        again = Failure.from_description(failure.describe())
        assert again == failure and again.range_id == failure.range_id


def mutated(path: list[Any], value: Any, name: str = "msk_sqs_record.json") -> dict[str, Any]:
    record: dict[str, Any] = copy.deepcopy(kafka_event(name))
    target: Any = record
    for key in path[:-1]:
        target = target[key]
    if value is _DELETE:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return record


_DELETE = object()
INFO = ["KafkaBatchInfo"]
RANGE = [*INFO, "recordsInfo", "order-events-0"]

MALFORMED = {
    "cluster ARN of another service": (
        mutated([*INFO, "eventSourceArn"], "arn:aws:kinesis:us-east-1:123456789012:stream/s"),
        "eventSourceArn",
    ),
    "no cluster at all": (
        mutated([*INFO, "bootstrapServers"], _DELETE, "self_managed_payload_size.json"),
        "neither eventSourceArn",
    ),
    "servers that are not host:port": (mutated([*INFO, "bootstrapServers"], "evil/../x"), "bootstrapServers"),
    "key without a partition": (
        mutated([*INFO, "recordsInfo"], {"order-events": {"firstRecordOffset": 1, "lastRecordOffset": 1}}),
        "<topic>-<partition>",
    ),
    "partition not a number": (
        mutated([*INFO, "recordsInfo"], {"t-x": {"firstRecordOffset": 1, "lastRecordOffset": 1}}),
        "partition",
    ),
    "topic that climbs": (
        mutated([*INFO, "recordsInfo"], {"..-0": {"firstRecordOffset": 1, "lastRecordOffset": 1}}),
        "<topic>-<partition>",
    ),
    "topic with a slash": (
        mutated([*INFO, "recordsInfo"], {"a/b-0": {"firstRecordOffset": 1, "lastRecordOffset": 1}}),
        "<topic>-<partition>",
    ),
    "first after last": (mutated([*RANGE, "firstRecordOffset"], "43"), "greater than"),
    "negative offset": (mutated([*RANGE, "firstRecordOffset"], -1), "offset"),
    "offset not a number": (mutated([*RANGE, "lastRecordOffset"], "4x"), "offset"),
    "no offsets": (mutated([*RANGE, "lastRecordOffset"], _DELETE), "lastRecordOffset"),
    "no partitions": (mutated([*INFO, "recordsInfo"], {}), "empty"),
    "both forms": (mutated([*INFO, "recordInfo"], {"offset": 1}), "both recordsInfo and recordInfo"),
    "both kinds of batch info": (mutated(["KinesisBatchInfo"], {}), "stream's batch info"),
}


@pytest.mark.parametrize("case", MALFORMED)
def test_malformed_kafka_records_are_refused_with_the_field_named(case: str) -> None:
    record, words = MALFORMED[case]
    with pytest.raises(ParseError) as error:
        parse_message(json.dumps(record))
    assert words in str(error.value)


def test_a_queue_message_carrying_a_payload_is_forged() -> None:
    text = json.dumps(kafka_event("s3_destination_payload_object.json"))
    for wrap in ENVELOPES.values():
        with pytest.raises(ParseError, match="inline payload"):
            parse_message(wrap(text))


def test_a_kafka_records_partitions_count_as_one_range_against_the_cap() -> None:
    from replayer.core import cap_ranges

    record = kafka_event("msk_sqs_record.json")
    record["KafkaBatchInfo"]["recordsInfo"] = {
        f"orders-{p}": {"firstRecordOffset": 1, "lastRecordOffset": 2} for p in range(12)
    }
    failures = parse_message(json.dumps(record))
    kept, refused = cap_ranges(failures, 10)
    assert len(kept) == 12 and refused == []
    later = copy.deepcopy(record)
    later["KafkaBatchInfo"]["recordsInfo"] = {"orders-0": {"firstRecordOffset": 3, "lastRecordOffset": 4}}
    other = parse_message(json.dumps(later))
    kept, refused = cap_ranges([*failures, *other[:1]], 1)  # a second record in the same message
    assert len(kept) == 12 and len(refused) == 1 and "names 2 ranges" in refused[0].reason
