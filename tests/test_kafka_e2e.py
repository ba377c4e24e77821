"""Kafka end to end, through the shared core as every command builds it: an invocation record naming
several partitions (one of them compacted, one whose log start moved) is read back from the test broker,
archived (one folder per topic, partition and offset range; create-only) and re-driven to a repair
function in Lambda's Kafka event shape, which Powertools' Kafka models accept."""

from __future__ import annotations

import base64
import gzip
import json
import uuid
from pathlib import Path
from typing import Any

from replayer import config
from replayer.aws import Clients
from replayer.model import OutcomeKind
from replayer.parse import parse_message
from replayer.sources import build_replayer
from tests.support.kafka import MSK_ARN, Tansu, create_topic, invocation_record, produce, produce_with_holes
from tests.support.ministack import RepairFunction

CLUSTER_FOLDER = "kafka/123456789012/us-east-1/test-cluster/0b5e1c9a-7d1e-4a3b-9c1e-2f3a4b5c6d7e-1"


def settings(tmp_path: Path, *to: str, allow: str = "arn:aws:kafka:*", **flags: Any) -> config.Settings:
    return config.load(
        "replay",
        {"to": [f"file:{tmp_path}", *to], "allow_streams": [allow], **flags},
        env={},
    )


def archived(tmp_path: Path, folder: str) -> list[dict[str, Any]]:
    return [
        json.loads(line)
        for line in gzip.decompress((tmp_path / folder / "records.jsonl.gz").read_bytes()).splitlines()
    ]


async def test_several_partitions_archived_and_redriven_as_lambda_would(
    kafka_broker: Tansu, repair: RepairFunction, tmp_path: Path
) -> None:
    topic = f"events-{uuid.uuid4().hex[:6]}"
    compacted = f"state-{uuid.uuid4().hex[:6]}"
    await create_topic(kafka_broker.bootstrap, topic, 2)
    await create_topic(kafka_broker.bootstrap, compacted, 1, {"cleanup.policy": "compact"})
    sent = await produce(
        kafka_broker.bootstrap,
        topic,
        [
            (
                i % 2,
                None if i % 3 == 0 else b"\x00key%d" % i,
                b"value %d" % i,
                [("h", b"\x01"), ("h", b"\x02")],
            )
            for i in range(10)
        ],
    )
    await produce_with_holes(kafka_broker, compacted, 0, [0, 1, 4, 5], 1_767_225_600_000)
    kafka_broker.shim.move_log_start(topic, 1, 2)
    record = invocation_record(
        {(topic, 0): (1, 4), (topic, 1): (0, 3), (compacted, 0): (0, 5)},
        bootstrap_servers="b-1.test-cluster.example:9098",
    )
    failures = parse_message(json.dumps(record))
    repair.configure(VALIDATE="powertools")
    kafka = f"{MSK_ARN}={kafka_broker.bootstrap}"
    async with Clients() as clients:
        replayer, _ = build_replayer(
            settings(tmp_path, f"lambda:{repair.name}", kafka_brokers=kafka, max_records_per_invoke=2),
            clients,
        )
        outcomes = {f.shard_id: await replayer.replay(f) for f in failures}

    whole = outcomes[f"{topic}-0"]
    assert whole.kind is OutcomeKind.REPLAYED and whole.recovered == 4
    trimmed = outcomes[f"{topic}-1"]
    assert trimmed.kind is OutcomeKind.PARTIAL and trimmed.recovered == 2
    assert [(g.first, g.last) for g in trimmed.gaps] == [("0", "1")] and trimmed.report_uri
    holes = outcomes[f"{compacted}-0"]
    assert holes.kind is OutcomeKind.PARTIAL and holes.recovered == 4
    assert [(g.first, g.last) for g in holes.gaps] == [("2", "3")]

    folder = f"{CLUSTER_FOLDER}/{topic}/0/1-4"
    lines = archived(tmp_path, folder)
    expected = [s for s in sent if s.partition == 0 and 1 <= s.offset <= 4]
    assert [line["offset"] for line in lines] == [s.offset for s in expected]
    assert [line.get("key") for line in lines] == [
        base64.b64encode(s.key).decode() if s.key is not None else None for s in expected
    ]
    assert all(line["headers"] == [{"h": [1]}, {"h": [2]}] for line in lines)
    assert (tmp_path / f"{CLUSTER_FOLDER}/{topic}/1/0-3/loss-report.json").exists()

    events = repair.events()
    assert {e["eventSource"] for e in events} == {"aws:kafka"}
    assert {e["eventSourceArn"] for e in events} == {MSK_ARN}
    redriven = [(key, r["offset"]) for e in events for key, part in e["records"].items() for r in part]
    assert sorted(redriven) == sorted(
        [(f"{topic}-0", o) for o in range(1, 5)]
        + [(f"{topic}-1", o) for o in (2, 3)]
        + [(f"{compacted}-0", o) for o in (0, 1, 4, 5)]
    )
    assert all(len(part) <= 2 for e in events for part in e["records"].values())  # chunked


async def test_archiving_again_finds_the_same_archive(kafka_broker: Tansu, tmp_path: Path) -> None:
    topic = f"again-{uuid.uuid4().hex[:6]}"
    await create_topic(kafka_broker.bootstrap, topic, 1)
    await produce(kafka_broker.bootstrap, topic, [(0, b"k", b"v%d" % i, []) for i in range(3)])
    [failure] = parse_message(invocation_record({(topic, 0): (0, 2)}))
    async with Clients() as clients:
        replayer, _ = build_replayer(
            settings(tmp_path, kafka_brokers=f"arn:aws:kafka:*={kafka_broker.bootstrap}"), clients
        )
        first = await replayer.replay(failure)
        second = await replayer.replay(failure)
    assert first.kind is second.kind is OutcomeKind.REPLAYED
    assert (tmp_path / f"{CLUSTER_FOLDER}/{topic}/0/0-2/invocation.json").exists()


async def test_kafka_sources_are_denied_by_default(kafka_broker: Tansu, tmp_path: Path) -> None:
    [failure] = parse_message(invocation_record({("anything", 0): (0, 0)}))
    async with Clients() as clients:
        replayer, _ = build_replayer(
            settings(tmp_path, allow="arn:aws:kinesis:*", kafka_brokers=f"*={kafka_broker.bootstrap}"),
            clients,
        )
        outcome = await replayer.replay(failure)
    assert outcome.kind is OutcomeKind.REJECTED and "not allowed" in outcome.reason


def test_an_archived_kafka_range_is_redriven_later_in_the_kafka_event_shape(
    kafka_broker: Tansu, repair: RepairFunction, tmp_path: Path
) -> None:
    import asyncio

    from typer.testing import CliRunner

    from replayer.cli import app

    topic = f"later-{uuid.uuid4().hex[:6]}"
    asyncio.run(archive_one(kafka_broker, topic, tmp_path))
    repair.configure(VALIDATE="powertools")
    result = CliRunner().invoke(
        app,
        ["redrive", "--from", f"file:{tmp_path}", "--to", f"lambda:{repair.name}", "--json"],
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    [event] = repair.events()
    assert event["eventSource"] == "SelfManagedKafka" and event["bootstrapServers"] == kafka_broker.bootstrap
    assert [r["offset"] for r in event["records"][f"{topic}-0"]] == [0, 1, 2, 3]
    assert (
        tmp_path
        / f"kafka/self-managed/{kafka_broker.bootstrap.replace(':', '%3A')}/{topic}/0/0-3/redriven/{repair.name}.json"
    ).exists()


async def archive_one(kafka_broker: Tansu, topic: str, tmp_path: Path) -> None:
    """A self-managed cluster's range, archived (to be re-driven later)."""
    await create_topic(kafka_broker.bootstrap, topic, 1)
    await produce(kafka_broker.bootstrap, topic, [(0, None, b"v%d" % i, [("h", b"\xff")]) for i in range(4)])
    failures = parse_message(
        invocation_record({(topic, 0): (0, 3)}, source=None, bootstrap_servers=kafka_broker.bootstrap)
    )
    async with Clients() as clients:
        replayer, _ = build_replayer(
            settings(tmp_path, allow="kafka://*", kafka_brokers=f"kafka://*={kafka_broker.bootstrap}"),
            clients,
        )
        assert (await replayer.replay(failures[0])).kind is OutcomeKind.REPLAYED


def test_replay_a_file_of_kafka_records_with_a_named_cluster_allowed(
    kafka_broker: Tansu, tmp_path: Path
) -> None:
    import asyncio

    from typer.testing import CliRunner

    from replayer.cli import app

    topic = f"cli-{uuid.uuid4().hex[:6]}"

    async def prepare() -> None:
        await create_topic(kafka_broker.bootstrap, topic, 2)
        await produce(kafka_broker.bootstrap, topic, [(i % 2, b"k", b"v%d" % i, []) for i in range(6)])

    asyncio.run(prepare())
    records = tmp_path / "failures.jsonl"
    records.write_text(json.dumps(invocation_record({(topic, 0): (0, 2), (topic, 1): (1, 2)})) + "\n")
    archive = tmp_path / "archive"
    result = CliRunner().invoke(
        app,
        [
            "replay", str(records), "--allow-stream", MSK_ARN,  # a literal cluster ARN: checked before work
            "--kafka-brokers", f"{MSK_ARN}={kafka_broker.bootstrap}", "--to", f"file:{archive}", "--json",
        ],
        catch_exceptions=False,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert sorted(r["recovered"] for r in summary["ranges"]) == [2, 3]
    assert (archive / f"{CLUSTER_FOLDER}/{topic}/1/1-2/invocation.json").exists()


def test_the_lambda_handler_rescues_kafka_ranges_from_sqs_and_sns(
    kafka_broker: Tansu, moto_endpoint: str, bucket: str, monkeypatch: Any
) -> None:
    import asyncio

    from replayer import lambda_handler
    from tests.support.aws import client, keys, make_queue, send
    from tests.support.handler import LambdaContext

    topic = f"lam-{uuid.uuid4().hex[:6]}"

    async def prepare() -> None:
        await create_topic(kafka_broker.bootstrap, topic, 2)
        await produce(kafka_broker.bootstrap, topic, [(i % 2, None, b"v%d" % i, []) for i in range(6)])

    asyncio.run(prepare())
    queue = make_queue(moto_endpoint)
    record = invocation_record({(topic, 0): (0, 2), (topic, 1): (0, 1)})
    notification = {
        "Type": "Notification",
        "MessageId": "n",
        "TopicArn": "arn:aws:sns:us-east-1:123456789012:t",
    }
    send(
        moto_endpoint,
        queue,
        record,
        {**notification, "Message": json.dumps(invocation_record({(topic, 1): (2, 2)}))},
    )
    monkeypatch.setenv("AWS_LAMBDA_FUNCTION_NAME", "replayer")
    monkeypatch.setenv("REPLAYER_TO", f"s3://{bucket}/archive")
    monkeypatch.setenv("REPLAYER_ALLOW_STREAMS", "arn:aws:kafka:*")
    monkeypatch.setenv("REPLAYER_KAFKA_BROKERS", f"arn:aws:kafka:*={kafka_broker.bootstrap}")
    sqs = client("sqs", moto_endpoint)
    received = sqs.receive_message(
        QueueUrl=queue, MaxNumberOfMessages=10, WaitTimeSeconds=1, AttributeNames=["All"]
    )
    arn = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    event = {
        "Records": [
            {
                "messageId": m["MessageId"], "receiptHandle": m["ReceiptHandle"], "body": m["Body"],
                "attributes": {"ApproximateReceiveCount": "1"}, "messageAttributes": {},
                "md5OfBody": m["MD5OfBody"], "eventSource": "aws:sqs", "eventSourceARN": arn, "awsRegion": "us-east-1",
            }
            for m in received["Messages"]
        ]
    }  # fmt: skip
    try:
        answer = lambda_handler.handler(event, LambdaContext())
    finally:
        lambda_handler.reset()
    assert answer == {"batchItemFailures": []}
    archived_ranges = {
        k.split("/")[-3:-1][0] + "/" + k.split("/")[-2]
        for k in keys(moto_endpoint, bucket, "archive/")
        if k.endswith("invocation.json")
    }
    assert archived_ranges == {"0/0-2", "1/0-1", "1/2-2"}
