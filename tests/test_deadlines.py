"""Expiry deadlines: first arrival + the stream's retention; earliest first in every mode; warnings; losses.

A range's records leave the stream at its deadline. replayer works earliest deadline
first (the service, `drain`, `replay` and the Lambda handler alike), warns (log and
metric) about ranges within `--expiry-warning` of it, and a range whose records are gone
gets a durable loss report, an ERROR line and a metric before its message is deleted.
"""

from __future__ import annotations

import asyncio
import json
import math
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from replayer import lambda_handler, logs
from replayer.archive.layout import LOSS_REPORT, RECORDS, range_path
from replayer.aws import Clients
from replayer.cli import app
from replayer.config import load, parse_duration
from replayer.core import Replayer
from replayer.errors import ConfigError
from replayer.observe import Recorder
from replayer.parse import parse_record
from replayer.sinks import S3Sink
from replayer.sources import build_replayer
from replayer.sources.sqs import Service
from tests.support.aws import DynamoTable, KinesisStream, client, keys, make_queue, queue_counts, send
from tests.support.faultproxy import FaultProxy, Request, Rule, record_proof
from tests.support.handler import LambdaContext, emf_lines
from tests.support.service import arrival, sample, settings, wait_for

runner = CliRunner()


def log_lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def reads_in_order(proxy: FaultProxy) -> list[str]:
    """Stream ARNs in the order replayer asked for their first iterator."""
    order: list[str] = []

    def note(request: Request) -> bool:
        if request.operation == "GetShardIterator":
            body = request.json()
            if body.get("ShardIteratorType") == "AT_SEQUENCE_NUMBER":
                order.append(body.get("StreamArn") or body.get("StreamARN"))
        return False

    proxy.rules.insert(0, Rule(note))
    return order


# ---- the deadline itself


async def test_deadline_is_first_arrival_plus_the_streams_retention(
    table: DynamoTable, kinesis_stream: KinesisStream, bucket: str, proxy: FaultProxy
) -> None:
    table.put(1)
    kinesis_stream.put(1)
    client("kinesis", kinesis_stream.endpoint).increase_stream_retention_period(
        StreamName=kinesis_stream.name, RetentionPeriodHours=72
    )
    arrived = datetime(2030, 1, 1, 12, 0, tzinfo=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    ddb = parse_record(table.invocation_record(0, 0, approximateArrivalOfFirstRecord=arrived))
    kin = parse_record(kinesis_stream.invocation_record(0, 0, approximateArrivalOfFirstRecord=arrived))
    unknown = parse_record(table.invocation_record(0, 0, approximateArrivalOfFirstRecord=None))
    unknown = parse_record({**unknown.raw, "timestamp": None})
    other = DynamoTable(table.endpoint)
    other.put(1)
    outsider = parse_record(other.invocation_record(0, 0))
    async with Clients() as clients:
        replayer = Replayer(
            clients, [S3Sink(clients, bucket)], allow=_allow(table.stream_arn, kinesis_stream.stream_arn)
        )
        noon = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)
        assert await replayer.deadline(ddb) == (noon + timedelta(hours=24)).timestamp()
        assert await replayer.deadline(kin) == (noon + timedelta(hours=72)).timestamp()
        assert await replayer.deadline(unknown) == math.inf
        before = proxy.count("DescribeStreamSummary")
        assert await replayer.deadline(outsider) == math.inf  # not allowed: not even asked about
        assert proxy.count("DescribeStreamSummary") == before
        assert replayer.near_expiry(noon.timestamp() + 3600, now=noon.timestamp())
        assert not replayer.near_expiry(noon.timestamp() + 3 * 3600, now=noon.timestamp())


def _allow(*arns: str) -> Any:
    from replayer.allow import AllowList

    return AllowList.of(arns)


def test_expiry_warning_setting() -> None:
    assert parse_duration("7200") == parse_duration("2h") == parse_duration("120m") == 7200
    assert parse_duration("1.5d") == 129_600
    for bad in ("", "2 hours", "-1h", "1w", "h"):
        with pytest.raises(ValueError):
            parse_duration(bad)
    allowed = {"REPLAYER_ALLOW_STREAMS": "*"}
    assert load("lambda", {"to": ["-"]}, allowed).expiry_warning == 7200
    env = {"REPLAYER_EXPIRY_WARNING": "90m", **allowed}
    assert load("lambda", {"to": ["-"]}, env).expiry_warning == 5400
    with pytest.raises(ConfigError, match="REPLAYER_EXPIRY_WARNING: 'soon' is not a duration"):
        load("lambda", {"to": ["-"]}, {"REPLAYER_EXPIRY_WARNING": "soon", **allowed})
    result = runner.invoke(app, ["replay", "--to", "-", "--expiry-warning", "later", "-"], input="")
    assert result.exit_code == 2 and "--expiry-warning" in result.stderr


# ---- earliest deadline first, in every mode


class Mixed:
    """Three ranges whose first-arrival order differs from their deadline order.

    Kinesis (72 h retention) arrived 30 h ago: deadline in 42 h. DynamoDB (24 h) arrived
    20 h ago: in 4 h. DynamoDB arrived 2 h ago: in 22 h. By deadline: old DDB, new DDB, Kinesis.
    """

    def __init__(self, endpoint: str) -> None:
        self.stream = KinesisStream(endpoint)
        client("kinesis", endpoint).increase_stream_retention_period(
            StreamName=self.stream.name, RetentionPeriodHours=72
        )
        self.old, self.new = DynamoTable(endpoint), DynamoTable(endpoint)
        self.stream.put(1)
        self.old.put(1)
        self.new.put(1)
        self.records = [
            self.stream.invocation_record(0, 0, approximateArrivalOfFirstRecord=arrival(30)),
            self.old.invocation_record(0, 0, approximateArrivalOfFirstRecord=arrival(20)),
            self.new.invocation_record(0, 0, approximateArrivalOfFirstRecord=arrival(2)),
        ]
        self.by_deadline = [self.old.stream_arn, self.new.stream_arn, self.stream.stream_arn]
        self.arns = [self.stream.stream_arn, self.old.stream_arn, self.new.stream_arn]


def test_cli_replay_orders_by_deadline_not_arrival(
    moto_endpoint: str, proxy: FaultProxy, tmp_path: Path, bucket: str
) -> None:
    mixed = Mixed(moto_endpoint)
    order = reads_in_order(proxy)
    source = tmp_path / "records.jsonl"
    source.write_text("\n".join(json.dumps(r) for r in mixed.records) + "\n")
    result = runner.invoke(
        app, ["replay", str(source), "--to", f"s3://{bucket}", "--concurrency", "1", "--json"]
    )
    assert result.exit_code == 0, result.stderr
    assert order == mixed.by_deadline
    document = json.loads(result.stdout)
    assert [r["range"]["stream_arn"] for r in document["ranges"]] == mixed.by_deadline
    assert all(r["deadline"] for r in document["ranges"])
    assert [r["near_expiry"] for r in document["ranges"]] == [False, False, False]


def test_drain_orders_by_deadline_not_arrival(moto_endpoint: str, proxy: FaultProxy, bucket: str) -> None:
    mixed = Mixed(moto_endpoint)
    queue = make_queue(moto_endpoint)
    send(moto_endpoint, queue, *mixed.records)
    order = reads_in_order(proxy)
    result = runner.invoke(
        app,
        ["drain", "--queue", queue, "--to", f"s3://{bucket}", "--concurrency", "1", "--wait-seconds", "1"],
    )
    assert result.exit_code == 0, result.stderr
    assert order == mixed.by_deadline
    assert queue_counts(moto_endpoint, queue) == (0, 0)


def test_lambda_handler_orders_by_deadline_not_arrival(
    moto_endpoint: str, proxy: FaultProxy, bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    mixed = Mixed(moto_endpoint)
    monkeypatch.setenv("REPLAYER_TO", f"s3://{bucket}")
    monkeypatch.setenv("REPLAYER_CONCURRENCY", "1")
    monkeypatch.setenv("AWS_LAMBDA_FUNCTION_NAME", "replayer")
    order = reads_in_order(proxy)
    event = {
        "Records": [
            {"EventSource": "aws:sns", "Sns": {"MessageId": f"m{i}", "Message": json.dumps(r)}}
            for i, r in enumerate(mixed.records)
        ]
    }
    assert lambda_handler.handler(event, LambdaContext()) == {"settled": 3}
    assert order == mixed.by_deadline


# ---- warnings near the deadline


async def test_a_range_near_its_deadline_warns_in_logs_and_metrics(
    table: DynamoTable, bucket: str, moto_endpoint: str, proxy: FaultProxy, capsys: pytest.CaptureFixture[str]
) -> None:
    table.put(2)
    records = table.stream_records()
    near = table.invocation_record(0, 0, records, approximateArrivalOfFirstRecord=arrival(23))  # 1 h left
    far = table.invocation_record(1, 1, records, approximateArrivalOfFirstRecord=arrival(1))  # 23 h left
    queue = make_queue(moto_endpoint)
    send(moto_endpoint, queue, near, far)
    slow = proxy.add(Rule(lambda r: r.operation == "GetShardIterator", delay=1.0, times=1))
    logs.configure("warning")
    config = settings(queue, f"s3://{bucket}", concurrency=1)
    metrics = Recorder(prometheus=True)
    async with Clients() as clients:
        replayer, _ = build_replayer(config, clients, metrics)
        service = Service(config, replayer, recorder=metrics, burst=True)
        running = asyncio.create_task(service.run())
        await wait_for(lambda: slow.hits == 1, "the first read to start")
        assert sample(metrics, "replayer_held_ranges_near_expiry") == 1  # the near one, held
        summary = await running
    assert summary.messages["deleted"] == 2
    warnings = [line for line in log_lines(capsys.readouterr().err) if line["event"] == "range_near_expiry"]
    assert [w["range_id"] for w in warnings] == [parse_record(near).range_id]
    assert warnings[0]["level"] == "warning"
    assert 3000 < warnings[0]["seconds_left"] <= 3600
    assert warnings[0]["expiry_warning_seconds"] == 7200
    assert sample(metrics, "replayer_ranges_near_expiry_total") == 1
    assert sample(metrics, "replayer_held_ranges_near_expiry") == 0  # nothing held any more
    assert [o.near_expiry for o in summary.outcomes] == [True, False]


def test_expiry_warning_threshold_is_configurable(
    table: DynamoTable, bucket: str, moto_endpoint: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    table.put(1)
    queue = make_queue(moto_endpoint)
    send(moto_endpoint, queue, table.invocation_record(0, 0, approximateArrivalOfFirstRecord=arrival(23)))
    result = runner.invoke(
        app,
        [
            "drain",
            "--queue",
            queue,
            "--to",
            f"s3://{bucket}",
            "--wait-seconds",
            "1",
            "--expiry-warning",
            "30m",
            "--json",
        ],
    )
    assert result.exit_code == 0, result.stderr
    assert "range_near_expiry" not in result.stderr  # 1 h left, warned only within 30 min
    assert json.loads(result.stdout)["ranges"][0]["near_expiry"] is False
    send(moto_endpoint, queue, table.invocation_record(0, 0, approximateArrivalOfFirstRecord=arrival(23)))
    monkeypatch.setenv("REPLAYER_EXPIRY_WARNING", "3h")
    result = runner.invoke(
        app, ["drain", "--queue", queue, "--to", f"s3://{bucket}", "--wait-seconds", "1", "--json"]
    )
    assert "range_near_expiry" in result.stderr
    assert json.loads(result.stdout)["ranges"][0]["near_expiry"] is True


def test_lambda_handler_counts_ranges_near_expiry(
    table: DynamoTable, bucket: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    table.put(2)
    records = table.stream_records()
    monkeypatch.setenv("REPLAYER_TO", f"s3://{bucket}")
    monkeypatch.setenv("AWS_LAMBDA_FUNCTION_NAME", "replayer")
    event = {
        "Records": [
            {"EventSource": "aws:sns", "Sns": {"MessageId": "a", "Message": json.dumps(r)}}
            for r in (
                table.invocation_record(0, 0, records, approximateArrivalOfFirstRecord=arrival(23.5)),
                table.invocation_record(1, 1, records, approximateArrivalOfFirstRecord=arrival(3)),
            )
        ]
    }
    assert lambda_handler.handler(event, LambdaContext()) == {"settled": 2}
    captured = capsys.readouterr()
    assert emf_lines(captured.out)[-1]["RangesNearExpiry"] == 1
    assert [line["event"] for line in log_lines(captured.err)].count("range_near_expiry") == 1


# ---- past the deadline: the loss is reported, durably, before the message goes


def trimmed(stream_arn: str) -> Rule:
    """What DynamoDB Streams answers for a range past its retention."""
    return Rule(
        lambda r: (
            r.operation == "GetShardIterator"
            and r.json().get("StreamArn") == stream_arn
            and r.json().get("ShardIteratorType") == "AT_SEQUENCE_NUMBER"
        ),
        respond=(400, {"__type": "TrimmedDataAccessException", "message": "trimmed"}),
    )


async def test_ranges_past_their_deadline_are_reported_lost_before_deletion(
    bucket: str, moto_endpoint: str, proxy: FaultProxy, capsys: pytest.CaptureFixture[str]
) -> None:
    gone, part = DynamoTable(moto_endpoint), DynamoTable(moto_endpoint)
    stream = KinesisStream(moto_endpoint)
    gone.put(2)
    part.put(3)
    stream.put(2)
    first = int(gone.stream_records()[0]["dynamodb"]["SequenceNumber"])
    # Every record of this range is older than the oldest one left: all trimmed.
    expired = gone.invocation_record(
        0, 0, startSequenceNumber=str(first - 30), endSequenceNumber=str(first - 10),
        approximateArrivalOfFirstRecord=arrival(30), batchSize=5,
    )  # fmt: skip
    # This one starts before the oldest record left and ends on one still there: partly trimmed.
    part_records = part.stream_records()
    oldest = int(part_records[0]["dynamodb"]["SequenceNumber"])
    partial = part.invocation_record(
        0, 1, part_records, startSequenceNumber=str(oldest - 5), approximateArrivalOfFirstRecord=arrival(25)
    )
    # Kinesis: the shard's tip is reached before any record of the range (MillisBehindLatest 0).
    kinesis_gone = stream.invocation_record(0, 1, approximateArrivalOfFirstRecord=arrival(26))
    proxy.add(trimmed(gone.stream_arn))
    proxy.add(trimmed(part.stream_arn))
    proxy.add(
        Rule(
            lambda r: r.operation == "GetRecords" and r.json().get("StreamARN") == stream.stream_arn,
            rewrite=lambda _, body: {**body, "Records": [], "MillisBehindLatest": 0},
        )
    )
    queue = make_queue(moto_endpoint)
    send(moto_endpoint, queue, expired, partial, kinesis_gone)
    logs.configure("warning")
    config = settings(queue, f"s3://{bucket}/archive", concurrency=1)
    metrics = Recorder(prometheus=True)
    async with Clients() as clients:
        replayer, _ = build_replayer(config, clients, metrics)
        summary = await Service(config, replayer, recorder=metrics, burst=True).run()

    by_range = {o.failure.range_id: o for o in summary.outcomes if o.failure}
    sent = {"expired": expired, "partial": partial, "kinesis": kinesis_gone}
    failures = {name: parse_record(record) for name, record in sent.items()}
    assert by_range[failures["expired"].range_id].kind.value == "expired"
    assert by_range[failures["partial"].range_id].kind.value == "partial"
    assert by_range[failures["kinesis"].range_id].kind.value == "expired"
    assert summary.messages["deleted"] == 3 and queue_counts(moto_endpoint, queue) == (0, 0)

    s3 = client("s3", moto_endpoint)
    reports = {}
    for name, failure in failures.items():
        key = f"archive/{range_path(failure)}/{LOSS_REPORT}"
        reports[name] = json.loads(s3.get_object(Bucket=bucket, Key=key)["Body"].read())
        assert reports[name]["invocation_record"] == sent[name]
        assert reports[name]["range"]["range_id"] == failure.range_id
        # Written (answered 200) before the message was deleted.
        put = next(i for i, f in enumerate(proxy.forwarded) if f.method == "PUT" and f.path.endswith(key))
        # (deleted ten to a call: one to three DeleteMessageBatch calls for the three messages)
        deletes = [i for i, f in enumerate(proxy.forwarded) if f.operation == "DeleteMessageBatch"]
        assert proxy.forwarded[put].status == 200 and 1 <= len(deletes) <= 3
        assert put < max(deletes)
    assert reports["expired"]["missing"] == [
        {
            "first_sequence": str(first - 30),
            "last_sequence": str(first - 10),
            "reason": reports["expired"]["missing"][0]["reason"],
        }
    ]
    assert "trimmed" in reports["expired"]["missing"][0]["reason"]
    assert reports["expired"]["outcome"] == "expired" and reports["expired"]["recovered"]["records"] == 0
    assert reports["partial"]["outcome"] == "partial"
    assert reports["partial"]["missing"][0]["first_sequence"] == str(oldest - 5)
    assert reports["partial"]["missing"][0]["last_sequence"] == str(oldest - 1)
    assert reports["partial"]["recovered"]["records"] == 2
    assert f"archive/{range_path(failures['partial'])}/{RECORDS}" in keys(moto_endpoint, bucket)
    missing = reports["kinesis"]["missing"][0]
    assert (missing["first_sequence"], missing["last_sequence"]) == (
        failures["kinesis"].start_sequence,
        failures["kinesis"].end_sequence,
    )

    lines = log_lines(capsys.readouterr().err)
    errors = [line for line in lines if line["event"] == "records_lost"]
    assert {e["range_id"] for e in errors} == {f.range_id for f in failures.values()}
    assert all(e["level"] == "error" and e["report"].endswith(LOSS_REPORT) for e in errors)
    past = [line for line in lines if line["event"] == "range_past_deadline"]
    assert {p["range_id"] for p in past} == {f.range_id for f in failures.values()}
    assert sample(metrics, "replayer_ranges_total", {"outcome": "expired"}) == 2
    assert sample(metrics, "replayer_ranges_total", {"outcome": "partial"}) == 1
    # Exact where the batch size says more than was recovered (5, then 2); one per gap otherwise.
    assert sample(metrics, "replayer_records_lost_total") == 5 + 2 + 1
    assert sample(metrics, "replayer_ranges_near_expiry_total") == 3
    record_proof(
        "deadlines",
        {
            "ranges_past_deadline": 3,
            "loss_reports_written_before_delete": 3,
            "records_reported_lost": int(sample(metrics, "replayer_records_lost_total")),
            "records_lost_unreported": 0,
        },
    )


async def test_absurd_arrival_times_neither_crash_nor_stop_the_work(
    table: DynamoTable, bucket: str, moto_endpoint: str
) -> None:
    """A record may claim any arrival time the parser accepts: year 9999 (no deadline) or year 1 (long past)."""
    table.put(2)
    records = table.stream_records()
    future = table.invocation_record(0, 0, records, approximateArrivalOfFirstRecord="9999-12-31T23:59:59Z")
    ancient = table.invocation_record(1, 1, records, approximateArrivalOfFirstRecord="0001-01-01T00:00:00Z")
    queue = make_queue(moto_endpoint)
    send(moto_endpoint, queue, future, ancient)
    config = settings(queue, f"s3://{bucket}", concurrency=1)
    metrics = Recorder(prometheus=True)
    async with Clients() as clients:
        replayer, _ = build_replayer(config, clients, metrics)
        assert await replayer.deadline(parse_record(future)) == math.inf
        summary = await Service(config, replayer, recorder=metrics, burst=True).run()
    assert [o.kind.value for o in summary.outcomes] == ["replayed", "replayed"]  # the ancient one first
    assert [o.near_expiry for o in summary.outcomes] == [True, False]
    assert summary.messages["deleted"] == 2
