"""A Kafka dead-letter topic as the failure source of `replayer drain` (a Kafka-topic on-failure
destination): each record's range archived, the consumer group's offset committed only past records
whose ranges are settled (archived, or quarantined), never past one that is not."""

from __future__ import annotations

import asyncio
import base64
import json
import uuid
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from typer.testing import CliRunner

from replayer.cli import app
from tests.support.aws import client, unique
from tests.support.kafka import FUNCTION_ARN, Sent, Tansu, create_topic, produce

runner = CliRunner()


def dead_letter(sent: Sent, cluster_servers: str) -> bytes:
    """What Lambda writes to a Kafka-topic destination for one failed record (self-managed cluster)."""
    record = {
        "topic": sent.topic,
        "partition": sent.partition,
        "offset": sent.offset,
        "timestamp": sent.timestamp,
        "timestampType": "CREATE_TIME",
        "value": base64.b64encode(sent.value or b"").decode(),
        "headers": [],
    }
    return json.dumps(
        {
            "requestContext": {
                "requestId": str(uuid.uuid4()),
                "functionArn": FUNCTION_ARN,
                "condition": "RetryAttemptsExhausted",
                "approximateInvokeCount": 3,
            },
            "responseContext": {
                "statusCode": 200,
                "executedVersion": "$LATEST",
                "functionError": "Unhandled",
            },
            "version": "1.0",
            "timestamp": "2026-01-01T00:00:05.000Z",
            "KafkaBatchInfo": {
                "batchSize": 1,
                "bootstrapServers": cluster_servers,
                "payloadSize": 300,
                "recordInfo": {"offset": str(sent.offset), "timestamp": "2026-01-01T00:00:01.000Z"},
            },
            "payload": {
                "eventSource": "SelfManagedKafka",
                "bootstrapServers": cluster_servers,
                "records": {f"{sent.topic}-{sent.partition}": [record]},
            },
        }
    ).encode()


async def prepare(broker: Tansu, bad_at: int | None) -> tuple[str, str, list[Sent]]:
    source, dlt = f"src-{uuid.uuid4().hex[:6]}", f"failed-{uuid.uuid4().hex[:6]}"
    await create_topic(broker.bootstrap, source, 1)
    await create_topic(broker.bootstrap, dlt, 1)
    sent = await produce(broker.bootstrap, source, [(0, None, b"order %d" % i, []) for i in range(4)])
    bodies = [dead_letter(s, broker.bootstrap) for s in sent]
    if bad_at is not None:
        bodies.insert(bad_at, b'{"not": "a failure record"}')
    await produce(broker.bootstrap, dlt, [(0, None, body, []) for body in bodies])
    return source, dlt, sent


async def committed(broker: Tansu, topic: str, group: str) -> int | None:
    consumer = AIOKafkaConsumer(bootstrap_servers=broker.bootstrap, group_id=group, enable_auto_commit=False)
    await consumer.start()
    try:
        result: int | None = await consumer.committed(TopicPartition(topic, 0))
        return result
    finally:
        await consumer.stop()


def drain(broker: Tansu, dlt: str, group: str, tmp_path: Path, *extra: str) -> Any:
    return runner.invoke(
        app,
        [
            "drain", "--kafka-topic", f"kafka://{broker.bootstrap}={dlt}", "--kafka-group", group,
            "--kafka-brokers", f"kafka://*={broker.bootstrap}", "--allow-stream", "kafka://*",
            "--to", f"file:{tmp_path}", "--wait-seconds", "1", "--json", *extra,
        ],
        catch_exceptions=False,
    )  # fmt: skip


def test_a_dead_letter_topic_is_drained_and_committed_past_settled_records(
    kafka_broker: Tansu, tmp_path: Path, moto_endpoint: str
) -> None:
    source, dlt, sent = asyncio.run(prepare(kafka_broker, bad_at=2))
    bucket = unique("quarantine")
    client("s3", moto_endpoint).create_bucket(Bucket=bucket)
    group = f"g-{uuid.uuid4().hex[:6]}"
    result = drain(kafka_broker, dlt, group, tmp_path, "--quarantine", f"s3://{bucket}")
    assert result.exit_code in (0, 1), result.output
    for s in sent:
        assert (
            tmp_path
            / f"kafka/self-managed/{kafka_broker.bootstrap.replace(':', '%3A')}/{source}/0/{s.offset}-{s.offset}/invocation.json"
        ).exists()
    assert (
        asyncio.run(committed(kafka_broker, dlt, group)) == 5
    )  # every record settled, the bad one quarantined
    assert len(client("s3", moto_endpoint).list_objects_v2(Bucket=bucket).get("Contents", [])) == 1


def test_without_a_quarantine_a_rejected_record_holds_its_partition(
    kafka_broker: Tansu, tmp_path: Path
) -> None:
    _, dlt, _ = asyncio.run(prepare(kafka_broker, bad_at=1))
    group = f"g-{uuid.uuid4().hex[:6]}"
    result = drain(kafka_broker, dlt, group, tmp_path)
    assert result.exit_code == 1, result.output
    assert asyncio.run(committed(kafka_broker, dlt, group)) == 1  # past the first record only
    again = drain(kafka_broker, dlt, group, tmp_path)  # the next drain starts at the same record
    assert again.exit_code == 1
    assert asyncio.run(committed(kafka_broker, dlt, group)) == 1
