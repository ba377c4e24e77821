"""replayer.readers.kafka against a Kafka-compatible broker the suite starts (Tansu, behind its shim):
several partitions, binary keys and values, missing keys, repeated and binary headers, a compacted
partition's holes, a log start that moved past part of a range, and brokers taken from configuration
only (the record's are never contacted)."""

from __future__ import annotations

import base64
import json
import uuid
from typing import Any

from aws_lambda_powertools.utilities.parser.models import KafkaMskEventModel, KafkaSelfManagedEventModel

from replayer.aws import Clients
from replayer.model import Failure, Gap
from replayer.parse import parse_message
from replayer.readers import Readers, ReadResult
from replayer.readers.kafka import GONE_BELOW_LOG_START, GONE_INSIDE, KafkaReader
from replayer.sinks.kafka_event import kafka_event
from tests.support.kafka import (
    MSK_ARN,
    Sent,
    Tansu,
    Trap,
    create_topic,
    invocation_record,
    produce,
    produce_with_holes,
)


def topic_name() -> str:
    return f"orders-{uuid.uuid4().hex[:8]}"  # a dash in the name: partitions are after the last one


async def read(broker: Tansu, failure: Failure, **settings: Any) -> ReadResult:
    async with Clients() as clients:
        reader = KafkaReader(clients, brokers=[("arn:aws:kafka:*", (broker.bootstrap,))], **settings)
        return await reader.read(failure)


def decoded(result: ReadResult) -> list[dict[str, Any]]:
    return [json.loads(r.json) for r in result.records]


def event_of(sent: Sent) -> dict[str, Any]:
    """What Lambda's Kafka event carries for a produced record."""
    record: dict[str, Any] = {
        "topic": sent.topic,
        "partition": sent.partition,
        "offset": sent.offset,
        "timestamp": sent.timestamp,
        "timestampType": "CREATE_TIME",
    }
    if sent.key is not None:
        record["key"] = base64.b64encode(sent.key).decode()
    record["value"] = base64.b64encode(sent.value or b"").decode()
    record["headers"] = [{name: list(value)} for name, value in sent.headers]
    return record


MIXED = [
    (
        0,
        b"\x00\xffkey",
        b"\x00\x01\x02\xff binary",
        [("trace", b"\x00\x01"), ("trace", b"\xff"), ("kind", b"a")],
    ),
    (1, None, b'{"order": 1}', []),  # no key
    (2, b"k", b"", [("empty", b"")]),
]


async def test_several_partitions_each_their_own_range_exactly(kafka_broker: Tansu) -> None:
    topic = topic_name()
    await create_topic(kafka_broker.bootstrap, topic, 3)
    sent = await produce(kafka_broker.bootstrap, topic, [MIXED[i % 3] for i in range(12)])
    record = invocation_record({(topic, 0): (1, 3), (topic, 1): (0, 2), (topic, 2): (2, 3)})
    failures = parse_message(json.dumps(record))
    assert [f.partition for f in failures] == [0, 1, 2]
    for failure in failures:
        result = await read(kafka_broker, failure)
        expected = [
            event_of(s)
            for s in sent
            if s.partition == failure.partition and failure.start <= s.offset <= failure.end
        ]
        assert decoded(result) == expected
        assert result.gaps == () and result.complete and result.refused is None
        assert [r.sequence for r in result.records] == list(range(failure.start, failure.end + 1))


async def test_records_are_valid_for_powertools_kafka_models(kafka_broker: Tansu) -> None:
    # Powertools' record model decodes a value as UTF-8 text: the value is text here (binary
    # values travel the same base64 way, checked above); keys and headers stay binary.
    topic = topic_name()
    await create_topic(kafka_broker.bootstrap, topic, 3)
    sent = await produce(kafka_broker.bootstrap, topic, [(0, *MIXED[0][1:2], "text é".encode(), MIXED[0][3])])
    for source, model in ((MSK_ARN, KafkaMskEventModel), (None, KafkaSelfManagedEventModel)):
        record = invocation_record(
            {(topic, 0): (0, 0)}, source=source, bootstrap_servers=kafka_broker.bootstrap
        )
        [failure] = parse_message(record)
        async with Clients() as clients:
            reader = KafkaReader(clients, brokers=[("*", (kafka_broker.bootstrap,))])
            result = await reader.read(failure)
        event = json.loads(kafka_event(failure, [r.json for r in result.records]))
        parsed = model.model_validate(event)
        [got] = parsed.records[f"{topic}-0"]
        assert got.key == sent[0].key and got.headers == [
            {"trace": b"\x00\x01"},
            {"trace": b"\xff"},
            {"kind": b"a"},
        ]
        assert base64.b64decode(event["records"][f"{topic}-0"][0]["value"]) == sent[0].value


async def test_a_compacted_partitions_holes_are_reported_exactly(kafka_broker: Tansu) -> None:
    topic = topic_name()
    await create_topic(kafka_broker.bootstrap, topic, 1, {"cleanup.policy": "compact"})
    kept = await produce_with_holes(kafka_broker, topic, 0, [0, 2, 3, 6, 8], 1_767_225_600_000)
    [failure] = parse_message(invocation_record({(topic, 0): (1, 7)}))
    result = await read(kafka_broker, failure)
    assert [r.sequence for r in result.records] == [2, 3, 6]
    assert result.gaps == (Gap("1", "1", GONE_INSIDE), Gap("4", "5", GONE_INSIDE), Gap("7", "7", GONE_INSIDE))
    assert result.complete and result.refused is None
    assert decoded(result)[0]["key"] == base64.b64encode(kept[1].key or b"").decode()


async def test_a_log_start_moved_past_part_of_the_range(kafka_broker: Tansu) -> None:
    topic = topic_name()
    await create_topic(kafka_broker.bootstrap, topic, 2)
    await produce(kafka_broker.bootstrap, topic, [(1, b"k", b"v%d" % i, []) for i in range(8)])
    kafka_broker.shim.move_log_start(topic, 1, 4)
    [failure] = parse_message(invocation_record({(topic, 1): (2, 6)}))
    result = await read(kafka_broker, failure)
    assert [r.sequence for r in result.records] == [4, 5, 6]
    assert result.gaps == (Gap("2", "3", GONE_BELOW_LOG_START),)


async def test_a_range_wholly_before_the_log_start_is_all_lost(kafka_broker: Tansu) -> None:
    topic = topic_name()
    await create_topic(kafka_broker.bootstrap, topic, 1)
    await produce(kafka_broker.bootstrap, topic, [(0, None, b"x", [])] * 6)
    kafka_broker.shim.move_log_start(topic, 0, 5)
    [failure] = parse_message(invocation_record({(topic, 0): (1, 3)}))
    result = await read(kafka_broker, failure)
    assert len(result.records) == 0
    assert result.gaps == (Gap("1", "3", GONE_BELOW_LOG_START),) and result.complete


async def test_offsets_past_the_partitions_end_are_refused(kafka_broker: Tansu) -> None:
    topic = topic_name()
    await create_topic(kafka_broker.bootstrap, topic, 1)
    await produce(kafka_broker.bootstrap, topic, [(0, None, b"x", [])] * 3)
    [failure] = parse_message(invocation_record({(topic, 0): (1, 5)}))
    result = await read(kafka_broker, failure)
    assert result.refused is not None and "end offset is 3" in result.refused


async def test_a_topic_that_does_not_exist_is_refused(kafka_broker: Tansu) -> None:
    [failure] = parse_message(invocation_record({(topic_name(), 0): (0, 0)}))
    result = await read(kafka_broker, failure)
    assert result.refused is not None and "no such topic" in result.refused


async def test_the_records_brokers_are_never_contacted(kafka_broker: Tansu) -> None:
    topic = topic_name()
    await create_topic(kafka_broker.bootstrap, topic, 1)
    await produce(kafka_broker.bootstrap, topic, [(0, None, b"x", [])] * 2)
    trap = Trap()
    try:
        record = invocation_record({(topic, 0): (0, 1)}, bootstrap_servers=f"127.0.0.1:{trap.port}")
        [failure] = parse_message(record)
        result = await read(kafka_broker, failure)
        assert len(result.records) == 2
        assert any(f"127.0.0.1:{trap.port}" in note for note in result.notes)  # compared, and said
        # A source no --kafka-brokers entry names: not read (retried), its brokers still untouched.
        async with Clients() as clients:
            unread = await KafkaReader(clients, brokers=[("kafka://*", (kafka_broker.bootstrap,))]).read(
                parse_message(
                    {**record, "requestContext": {**record["requestContext"], "functionArn": None}}
                )[0]
            )
        assert not unread.complete and len(unread.records) == 0
        assert "no --kafka-brokers entry matches" in unread.notes[0]
        assert trap.connections() == 0
    finally:
        trap.close()


async def test_bounded_by_records_and_bytes(kafka_broker: Tansu) -> None:
    topic = topic_name()
    await create_topic(kafka_broker.bootstrap, topic, 1)
    await produce(kafka_broker.bootstrap, topic, [(0, None, b"x" * 100, [])] * 6)
    [failure] = parse_message(invocation_record({(topic, 0): (0, 5)}))
    by_records = await read(kafka_broker, failure, ceiling=lambda f: 3)
    assert by_records.refused is not None and "more than 3 records" in by_records.refused
    by_bytes = await read(kafka_broker, failure, max_range_bytes=500)
    assert by_bytes.refused is not None and "more than 500 bytes" in by_bytes.refused


async def test_an_inline_payload_that_is_the_range_is_used_else_the_topic_is_read(
    kafka_broker: Tansu,
) -> None:
    topic = topic_name()
    await create_topic(kafka_broker.bootstrap, topic, 1)
    sent = await produce(kafka_broker.bootstrap, topic, [(0, *MIXED[0][1:]), (0, *MIXED[1][1:])])
    record = invocation_record({(topic, 0): (0, 1)})
    event = {
        "eventSource": "aws:kafka",
        "eventSourceArn": MSK_ARN,
        "records": {f"{topic}-0": [event_of(s) for s in sent]},
    }
    [failure] = parse_message({**record, "payload": json.dumps(event)}, payloads=True)
    async with Clients() as clients:
        readers = Readers(clients, kafka_brokers=[("*", (kafka_broker.bootstrap,))])
        inline = await readers.for_failure(failure).read(failure)
        assert decoded(inline) == [event_of(s) for s in sent]
        short = {**event, "records": {f"{topic}-0": [event_of(sent[0])]}}
        [failure] = parse_message({**record, "payload": short}, payloads=True)
        read_instead = await readers.for_failure(failure).read(failure)
    assert decoded(read_instead) == [event_of(s) for s in sent]
    assert "not used" in read_instead.notes[0]


def test_a_mappings_filter_sees_a_kafka_records_value_decoded() -> None:
    from replayer.filtering import FilterCriteria, filter_document
    from replayer.model import StreamKind

    record = {
        "topic": "t",
        "partition": 0,
        "offset": 1,
        "value": base64.b64encode(b'{"kind": "order"}').decode(),
    }
    criteria = FilterCriteria.from_api({"Filters": [{"Pattern": '{"value": {"kind": ["order"]}}'}]})
    assert criteria.matches(filter_document(StreamKind.KAFKA, record))
    binary = {**record, "value": base64.b64encode(b"\xff\x00").decode()}
    assert not criteria.matches(filter_document(StreamKind.KAFKA, binary))


def test_since_and_until_see_a_kafka_records_timestamp() -> None:
    from decimal import Decimal

    from replayer.filtering import filter_document
    from replayer.model import StreamKind
    from replayer.selection import arrival

    record = {"topic": "t", "partition": 0, "offset": 1, "timestamp": 1_767_225_600_250, "value": ""}
    assert arrival(StreamKind.KAFKA, filter_document(StreamKind.KAFKA, record)) == Decimal("1767225600.25")


async def test_a_batch_of_several_records_is_read_whatever_the_log_end_answer(kafka_broker: Tansu) -> None:
    # Tansu answers ListOffsets(latest) one past the last batch's base offset: for one batch of five
    # records, 1. The reader asks the log end only once it has read all there is, so it reads them all.
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

    topic = topic_name()
    await create_topic(kafka_broker.bootstrap, topic, 1)
    producer = AIOKafkaProducer(bootstrap_servers=kafka_broker.bootstrap)
    await producer.start()
    try:
        batch = producer.create_batch()
        for i in range(5):
            batch.append(key=None, value=b"v%d" % i, timestamp=None)
        await (await producer.send_batch(batch, topic, partition=0))
    finally:
        await producer.stop()
    consumer = AIOKafkaConsumer(bootstrap_servers=kafka_broker.bootstrap)
    await consumer.start()
    try:
        tp = TopicPartition(topic, 0)
        assert (await consumer.end_offsets([tp]))[tp] == 1  # Tansu's answer, not Kafka's 5
    finally:
        await consumer.stop()
    [failure] = parse_message(invocation_record({(topic, 0): (1, 4)}))
    result = await read(kafka_broker, failure)
    assert [r.sequence for r in result.records] == [1, 2, 3, 4] and result.refused is None
