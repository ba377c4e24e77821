"""The at-risk watch (`replayer.watch`): margins, warnings, and the rescue of an at-risk mapping's shards.

A mapping is made "stuck" by the IteratorAge the test publishes (near the stream's retention); a
healthy one next to it publishes a small one. The rescue must archive every record of the stuck
stream's shard, marked at-risk, once; nothing of the healthy stream.
"""

from __future__ import annotations

import dataclasses
import gzip
import json
import signal
from pathlib import Path
from typing import Any

import pytest

from replayer import lambda_handler, logs
from replayer.archive.read import find_ranges
from replayer.archive.store import FileStore
from replayer.aws import Clients
from replayer.config import load
from replayer.errors import ConfigError
from replayer.observe import Recorder
from replayer.status import archive_inventory
from replayer.watch import Watcher, is_schedule_event
from tests.support.aws import DynamoTable, KinesisStream, client, make_queue
from tests.support.faultproxy import FaultProxy, Rule
from tests.support.handler import emf_lines
from tests.support.net import free_port, http_get
from tests.support.service import sample, settings, start_replayer, wait_for
from tests.support.watch import function, iterator_age, mapping


class World:
    """A stuck table (IteratorAge 23.5 h of 24) and a healthy one (2 s), each with its mapping."""

    def __init__(self, endpoint: str) -> None:
        self.stuck, self.healthy = DynamoTable(endpoint), DynamoTable(endpoint)
        self.stuck.put(5)
        self.healthy.put(3)
        self.function = function(endpoint)
        self.stuck_uuid = mapping(endpoint, self.function, self.stuck.stream_arn)
        self.healthy_uuid = mapping(endpoint, self.function, self.healthy.stream_arn)
        iterator_age(endpoint, self.function, self.stuck_uuid, 23.5)
        iterator_age(endpoint, self.function, self.healthy_uuid, 2 / 3600)


def watch_settings(world: World, archive: Path, **changes: Any) -> Any:
    base = settings(
        "https://sqs.us-east-1.amazonaws.com/123456789012/unused",
        f"file:{archive}",
        watch_streams=(world.stuck.stream_arn, world.healthy.stream_arn),
        at_risk_margin=2 * 3600.0,
    )
    return dataclasses.replace(base, **changes)


def warnings(stderr: str, event: str) -> list[dict[str, Any]]:
    lines = [json.loads(line) for line in stderr.splitlines() if line.startswith("{")]
    return [line for line in lines if line.get("event") == event]


async def test_the_stuck_mapping_only_is_at_risk_warned_and_exported(
    moto_endpoint: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    world = World(moto_endpoint)
    recorder = Recorder(prometheus=True)
    logs.configure("warning")  # JSON lines on stderr, as every command configures them
    async with Clients() as clients:
        seen = {
            w.mapping.uuid: w
            for w in await Watcher(watch_settings(world, tmp_path), clients, recorder).round()
        }
    stuck, healthy = seen[world.stuck_uuid], seen[world.healthy_uuid]
    assert stuck.at_risk and not healthy.at_risk
    assert stuck.margin_seconds is not None and 0 < stuck.margin_seconds <= 0.5 * 3600 + 60
    assert healthy.margin_seconds is not None and healthy.margin_seconds > 23 * 3600
    labels = {
        "uuid": world.stuck_uuid,
        "function": world.function.split(":")[6],
        "stream": world.stuck.stream_arn,
    }
    assert sample(recorder, "replayer_mapping_expiry_margin_seconds", labels) == pytest.approx(
        stuck.margin_seconds
    )
    assert sample(recorder, "replayer_mapping_at_risk", labels) == 1
    healthy_labels = labels | {"uuid": world.healthy_uuid, "stream": world.healthy.stream_arn}
    assert sample(recorder, "replayer_mapping_at_risk", healthy_labels) == 0
    warned = warnings(capsys.readouterr().err, "mapping_at_risk")
    assert [w["uuid"] for w in warned] == [world.stuck_uuid]
    # without --rescue-at-risk, nothing is written
    assert not list(tmp_path.rglob("*")) and stuck.rescues == ()


async def test_the_rescue_archives_the_at_risk_window_in_full_once_and_marks_it(
    moto_endpoint: str, tmp_path: Path
) -> None:
    world = World(moto_endpoint)
    configured = watch_settings(world, tmp_path, rescue_at_risk=True)
    recorder = Recorder(prometheus=True)
    async with Clients() as clients:
        watcher = Watcher(configured, clients, recorder)
        first = {w.mapping.uuid: w for w in await watcher.round()}
        again = {w.mapping.uuid: w for w in await watcher.round()}
        restarted = {w.mapping.uuid: w for w in await Watcher(configured, clients, Recorder()).round()}
        ranges, unreadable = await find_ranges(FileStore(tmp_path))
        inventory = await archive_inventory(clients, f"file:{tmp_path}")
    assert (inventory["ranges"], inventory["at_risk"]) == (1, 1)  # `replayer status --from` counts them
    (rescue,) = first[world.stuck_uuid].rescues
    assert first[world.healthy_uuid].rescues == ()
    assert (rescue.records, rescue.outcome) == (5, "replayed")
    # the next round, and a restarted process, find nothing new: the window is not archived twice
    assert again[world.stuck_uuid].rescues == () and restarted[world.stuck_uuid].rescues == ()
    assert unreadable == []
    (archived,) = ranges
    assert archived.failure.stream_arn == world.stuck.stream_arn and archived.failure.at_risk
    records = world.stuck.stream_records()
    assert (archived.failure.start_sequence, archived.failure.end_sequence) == (
        records[0]["dynamodb"]["SequenceNumber"],
        records[-1]["dynamodb"]["SequenceNumber"],
    )
    manifest = json.loads(next(tmp_path.rglob("invocation.json")).read_text())
    assert manifest["marked"] == "at-risk" and manifest["range"]["condition"] == "AtRisk"
    assert manifest["range"]["mapping"]["uuid"] == world.stuck_uuid
    assert manifest["invocation_record"]["atRisk"]["eventSourceMappingUUID"] == world.stuck_uuid
    lines = gzip.decompress(next(tmp_path.rglob("records.jsonl.gz")).read_bytes()).splitlines()
    assert [json.loads(line)["dynamodb"]["SequenceNumber"] for line in lines] == [
        r["dynamodb"]["SequenceNumber"] for r in records
    ]
    assert sample(recorder, "replayer_at_risk_records_archived_total", {"uuid": world.stuck_uuid}) == 5


async def test_a_kinesis_retention_is_read_and_a_window_is_bounded(
    moto_endpoint: str, tmp_path: Path
) -> None:
    stream = KinesisStream(moto_endpoint)
    client("kinesis", moto_endpoint).increase_stream_retention_period(
        StreamName=stream.name, RetentionPeriodHours=48
    )
    stream.put(5)
    consumer = function(moto_endpoint)
    uuid = mapping(moto_endpoint, consumer, stream.stream_arn)
    iterator_age(moto_endpoint, consumer, uuid, 46.0)  # 2 h of 48 left: at risk under a 3 h margin
    configured = settings(
        "https://sqs.us-east-1.amazonaws.com/123456789012/unused", f"file:{tmp_path}",
        watch_functions=(consumer,), at_risk_margin=3 * 3600.0, rescue_at_risk=True, at_risk_max_records=3,
    )  # fmt: skip
    async with Clients() as clients:
        watcher = Watcher(configured, clients, Recorder())
        (first,) = await watcher.round()
        (second,) = await watcher.round()
        (third,) = await watcher.round()
    assert first.retention_seconds == 48 * 3600 and first.at_risk
    assert [r.records for r in first.rescues] == [3] and [r.records for r in second.rescues] == [2]
    assert third.rescues == ()  # every record archived, each once
    puts = [p["SequenceNumber"] for p in stream.puts]
    assert (first.rescues[0].start_sequence, second.rescues[0].end_sequence) == (puts[0], puts[-1])
    assert second.rescues[0].start_sequence == puts[3]


async def test_a_disabled_mapping_is_a_problem_even_without_metrics(
    moto_endpoint: str, tmp_path: Path
) -> None:
    table = DynamoTable(moto_endpoint)
    consumer = function(moto_endpoint)
    mapping(moto_endpoint, consumer, table.stream_arn, Enabled=False)
    configured = settings(
        "https://sqs.us-east-1.amazonaws.com/1/q", f"file:{tmp_path}", watch_streams=(table.stream_arn,)
    )
    async with Clients() as clients:
        (seen,) = await Watcher(configured, clients, Recorder()).round()
    assert seen.iterator_age_seconds is None and seen.margin_seconds is None and not seen.at_risk
    assert seen.problems and "Disabled" in seen.problems[0]


async def test_streams_the_allow_list_refuses_are_not_watched(moto_endpoint: str, tmp_path: Path) -> None:
    world = World(moto_endpoint)
    configured = watch_settings(
        world,
        tmp_path,
        watch_streams=(),
        watch_functions=(world.function,),
        allow_streams=(world.healthy.stream_arn,),
    )
    async with Clients() as clients:
        seen = await Watcher(configured, clients, Recorder()).round()
    assert [w.mapping.uuid for w in seen] == [world.healthy_uuid]


def test_set_up_mistakes_are_found_at_start() -> None:
    stream = "arn:aws:dynamodb:us-east-1:123456789012:table/t/stream/2024-01-01T00:00:00.000"
    env = {
        "REPLAYER_QUEUE": "https://sqs.us-east-1.amazonaws.com/123456789012/q",
        "REPLAYER_TO": "lambda:fix",
    }
    with pytest.raises(ConfigError) as refused:
        load(
            "run",
            {"watch_streams": [stream], "rescue_at_risk": True},
            env | {"REPLAYER_ALLOW_STREAMS": "arn:aws:kinesis:*"},
        )
    assert "is not allowed by --allow-stream" in str(refused.value)
    assert "needs an s3://BUCKET[/PREFIX] or file:DIR --to" in str(refused.value)
    with pytest.raises(ConfigError, match="not a DynamoDB or Kinesis stream ARN"):
        load("run", {"watch_streams": ["arn:aws:dynamodb:*"]}, env)
    lambda_env = {"REPLAYER_TO": "s3://b", "REPLAYER_ALLOW_STREAMS": "*", "REPLAYER_RESCUE_AT_RISK": "true",
                  "REPLAYER_WATCH_STREAMS": stream, "REPLAYER_AT_RISK_MARGIN": "30m"}  # fmt: skip
    loaded = load("lambda", None, lambda_env)
    assert loaded.rescue_at_risk and loaded.watch_streams == (stream,) and loaded.at_risk_margin == 1800
    with pytest.raises(ConfigError, match="REPLAYER_RESCUE_AT_RISK"):
        load("lambda", None, lambda_env | {"REPLAYER_RESCUE_AT_RISK": "maybe"})


def test_the_lambda_deployment_watches_on_its_schedule_and_reports_emf(
    moto_endpoint: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    world = World(moto_endpoint)
    monkeypatch.setenv("AWS_LAMBDA_FUNCTION_NAME", "replayer")  # EMF to stdout, as in Lambda
    monkeypatch.setenv("REPLAYER_TO", f"file:{tmp_path}")
    monkeypatch.setenv("REPLAYER_WATCH_STREAMS", f"{world.stuck.stream_arn},{world.healthy.stream_arn}")
    monkeypatch.setenv("REPLAYER_AT_RISK_MARGIN", "2h")
    monkeypatch.setenv("REPLAYER_RESCUE_AT_RISK", "1")
    event = {"version": "0", "source": "aws.events", "detail-type": "Scheduled Event", "detail": {}}
    assert is_schedule_event(event)
    answer = lambda_handler.handler(event, None)
    by_uuid = {w["uuid"]: w for w in answer["watched"]}
    assert by_uuid[world.stuck_uuid]["at_risk"] and not by_uuid[world.healthy_uuid]["at_risk"]
    assert [r["records"] for r in by_uuid[world.stuck_uuid]["rescued"]] == [5]
    emf = emf_lines(capsys.readouterr().out)
    margins = {line["EventSourceMappingUUID"]: line["MappingExpiryMarginSeconds"] for line in emf
               if "MappingExpiryMarginSeconds" in line}  # fmt: skip
    assert margins[world.stuck_uuid] < 2 * 3600 < margins[world.healthy_uuid]
    (summary,) = [line for line in emf if "SmallestExpiryMarginSeconds" in line]
    assert summary["MappingsAtRisk"] == 1 and summary["AtRiskRecordsArchived"] == 5
    assert summary["SmallestExpiryMarginSeconds"] == margins[world.stuck_uuid]


async def test_replayer_run_watches_beside_its_queue(moto_endpoint: str, tmp_path: Path) -> None:
    """The service end to end: a process of its own, the margin on /metrics, the warning in its log,
    the at-risk window in its archive; the healthy stream untouched."""
    world = World(moto_endpoint)
    port, log, archive = free_port(), tmp_path / "log.jsonl", tmp_path / "archive"
    process = start_replayer(
        moto_endpoint,
        *("run", "--queue", make_queue(moto_endpoint), "--to", f"file:{archive}", "--allow-stream", "*"),
        *("--http-port", str(port), "--http-host", "127.0.0.1", "--wait-seconds", "1"),
        *("--watch-stream", world.stuck.stream_arn, "--watch-stream", world.healthy.stream_arn),
        *("--at-risk-margin", "2h", "--rescue-at-risk"),
        log=log,
    )
    try:
        await wait_for(lambda: bool(list(archive.rglob("invocation.json"))), "the at-risk window", 60)

        def at_risk(uuid: str) -> float | None:
            status, text = http_get(port, "/metrics")
            lines = [line for line in text.splitlines() if line.startswith("replayer_mapping_at_risk{")]
            found = [float(line.rsplit(" ", 1)[1]) for line in lines if uuid in line]
            return found[0] if status == 200 and found else None

        await wait_for(lambda: at_risk(world.healthy_uuid) is not None, "/metrics", 30)
        assert (at_risk(world.stuck_uuid), at_risk(world.healthy_uuid)) == (1.0, 0.0)
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) == 0
    events = [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
    assert {e["uuid"] for e in events if e.get("event") == "mapping_at_risk"} == {world.stuck_uuid}
    (manifest,) = [json.loads(p.read_text()) for p in archive.rglob("invocation.json")]
    assert manifest["marked"] == "at-risk" and manifest["archived"]["records"] == 5


async def test_a_mapping_without_destination_is_measured_against_its_maximum_record_age(
    moto_endpoint: str, tmp_path: Path
) -> None:
    table = DynamoTable(moto_endpoint)
    consumer = function(moto_endpoint)
    dropping = mapping(moto_endpoint, consumer, table.stream_arn, MaximumRecordAgeInSeconds=3600)
    iterator_age(moto_endpoint, consumer, dropping, 0.9)
    configured = settings(
        "https://sqs.us-east-1.amazonaws.com/1/q", f"file:{tmp_path}", watch_streams=(table.stream_arn,),
        at_risk_margin=600.0,
    )  # fmt: skip
    async with Clients() as clients:
        (seen,) = await Watcher(configured, clients, Recorder()).round()
    assert seen.retention_seconds == 24 * 3600 and seen.at_risk
    assert seen.margin_seconds is not None and seen.margin_seconds <= 0.1 * 3600 + 60


async def test_metrics_that_cannot_be_read_leave_the_margin_unknown_and_say_so(
    moto_endpoint: str, proxy: FaultProxy, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    world = World(moto_endpoint)
    cut = proxy.add(Rule(lambda r: r.service == "monitoring", drop=True))
    logs.configure("warning")
    async with Clients(max_attempts=1) as clients:
        seen = await Watcher(
            watch_settings(world, tmp_path, rescue_at_risk=True), clients, Recorder()
        ).round()
    assert cut.hits >= 1
    assert [w.margin_seconds for w in seen] == [None, None] and not any(w.at_risk for w in seen)
    (warned,) = warnings(capsys.readouterr().err, "watch_metrics_unreadable")
    assert warned["problem"].startswith("cloudwatch:GetMetricData")
    assert not list(tmp_path.rglob("*"))  # nothing is rescued on a margin not known
