"""The Kinesis reader against moto over HTTP and against kinesis-local (started by the suite).

moto's sequence numbers are short decimal strings ("9", then "10"), kinesis-local's have
56 digits and its closed shards answer with ChildShards and no NextShardIterator. What
neither emulator does by itself (trimming, throttling, expired iterators, empty pages)
comes from the fault proxy.
"""

from __future__ import annotations

import asyncio
import base64
import gzip
import json
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import structlog
from typer.testing import CliRunner

from replayer.allow import AllowList
from replayer.aws import Clients
from replayer.cli import app
from replayer.core import Replayer
from replayer.model import Failure, OutcomeKind
from replayer.parse import parse_message
from replayer.readers import NO_SUCH_STREAM, KinesisReader, Readers, ReadResult
from replayer.readers.kinesis import DEFAULT_RETENTION, GET_RECORDS_BUDGET, ShardBudget
from replayer.sinks import FileSink
from tests.support import kinesis_local
from tests.support.aws import REGION, KinesisStream, client
from tests.support.events import load_event
from tests.support.faultproxy import FaultProxy, Request, Rule, aws_error, op

ANY_STREAM = AllowList.of(["*"])  # deny by default: these tests read any stream

GET_RECORDS = "GetRecords"
GET_SHARD_ITERATOR = "GetShardIterator"
IDENTITY = "arn:aws:iam::123456789012:role/consumer-role"


# ---------------------------------------------------------------- helpers


def failure_of(stream: KinesisStream, first: int, last: int, **kwargs: Any) -> Failure:
    (failure,) = parse_message(stream.invocation_record(first, last, **kwargs))
    return failure


async def read(failure: Failure, **settings: Any) -> ReadResult:
    async with Clients() as clients:
        return await KinesisReader(clients, **settings).read(failure)


def decoded(result: ReadResult) -> list[dict[str, Any]]:
    return [json.loads(r.json) for r in result.records]


def seqs(records: list[dict[str, Any]]) -> list[str]:
    """Sequence numbers of event records or of GetRecords records."""
    return [r["kinesis"]["sequenceNumber"] if "kinesis" in r else r["SequenceNumber"] for r in records]


def expected_event_records(
    stream: KinesisStream, first: int, last: int, *, shard_id: str | None = None, identity: str | None = None
) -> list[dict[str, Any]]:
    """What Lambda's Kinesis event carries for stream records first..last, built from what was put."""
    shard = shard_id or stream.shard_id
    put = {p["SequenceNumber"]: p for p in stream.puts}
    out = []
    for record in stream.stream_records(shard)[first : last + 1]:
        sent = put[record["SequenceNumber"]]
        event: dict[str, Any] = {
            "kinesis": {
                "kinesisSchemaVersion": "1.0",
                "partitionKey": sent["PartitionKey"],
                "sequenceNumber": sent["SequenceNumber"],
                "data": base64.b64encode(sent["Data"]).decode(),
                "approximateArrivalTimestamp": round(record["ApproximateArrivalTimestamp"].timestamp(), 3),
            },
            "eventSource": "aws:kinesis",
            "eventVersion": "1.0",
            "eventID": f"{shard}:{sent['SequenceNumber']}",
            "eventName": "aws:kinesis:record",
        }
        if identity:
            event["invokeIdentityArn"] = identity
        event |= {"awsRegion": REGION, "eventSourceARN": stream.stream_arn}
        out.append(event)
    return out


def assert_same_records(got: list[dict[str, Any]], expected: list[dict[str, Any]]) -> None:
    """Record by record: values, field order, order of records."""
    assert [r["kinesis"]["sequenceNumber"] for r in got] == [r["kinesis"]["sequenceNumber"] for r in expected]
    for g, e in zip(got, expected, strict=True):
        assert g == e
        assert list(g) == list(e) and list(g["kinesis"]) == list(e["kinesis"])
        assert isinstance(g["kinesis"]["approximateArrivalTimestamp"], float)


def recording(proxy: FaultProxy, operation: str) -> list[dict[str, Any]]:
    """Bodies of every `operation` request through the proxy (a rule that never acts)."""
    bodies: list[dict[str, Any]] = []
    proxy.rules.insert(0, Rule(lambda r: r.operation == operation and bodies.append(r.json()) is not None))
    return bodies


def nth_call(operation: str, *ns: int) -> Any:
    state = {"n": 0}

    def match(request: Request) -> bool:
        if request.operation != operation:
            return False
        state["n"] += 1
        return state["n"] in ns

    return match


def trimmed_until(proxy: FaultProxy, first_kept: str | None) -> None:
    """Make the shard look trimmed before `first_kept` (None: trimmed to nothing).

    As Kinesis does, AT_SEQUENCE_NUMBER on a trimmed record gives an iterator at the
    trim horizon (here: at `first_kept`, or at the tip when nothing is left).
    """

    def asks_for_trimmed(request: Request) -> bool:
        body = request.json() if request.operation == GET_SHARD_ITERATOR else {}
        seq = body.get("StartingSequenceNumber")
        return seq is not None and (first_kept is None or int(seq) < int(first_kept))

    def to_horizon(request: Request) -> Request:
        if first_kept is None:
            return request.with_json(ShardIteratorType="LATEST", StartingSequenceNumber=None)
        return request.with_json(ShardIteratorType="AT_SEQUENCE_NUMBER", StartingSequenceNumber=first_kept)

    proxy.add(Rule(asks_for_trimmed, modify_request=to_horizon))


async def replay_to_dir(failure: Failure, root: Path, **reader_settings: Any) -> Any:
    async with Clients() as clients:
        readers = Readers(clients)
        if reader_settings:
            readers.kinesis = KinesisReader(clients, **reader_settings)
        return await Replayer(clients, [FileSink(root)], readers=readers, allow=ANY_STREAM).replay(failure)


def archive_lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in gzip.decompress(path.read_bytes()).splitlines()]


class FakeClock:
    """Time that passes only when the budget sleeps: no wall-clock in the assertions."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds
        await asyncio.sleep(0)


def at_most_per_window(times: list[float], rate: int, per: float) -> bool:
    ordered = sorted(times)
    return all(ordered[i + rate] - ordered[i] >= per for i in range(len(ordered) - rate))


# ---------------------------------------------------------------- moto


async def test_reads_exactly_the_range_in_the_lambda_event_shape(kinesis_stream: KinesisStream) -> None:
    kinesis_stream.put(12)
    failure = failure_of(kinesis_stream, 7, 10)
    assert (failure.start_sequence, failure.end_sequence) == ("8", "11")  # crosses "9" -> "10"
    result = await read(failure)
    assert result.complete and not result.gaps and not result.notes
    got = decoded(result)
    assert_same_records(got, expected_event_records(kinesis_stream, 7, 10))
    assert "invokeIdentityArn" not in got[0]
    assert base64.b64decode(got[0]["kinesis"]["data"]) == b"record-7-\x00\xff\x07"


async def test_invoke_identity_arn_comes_from_configuration(
    kinesis_stream: KinesisStream, monkeypatch: pytest.MonkeyPatch
) -> None:
    kinesis_stream.put(3)
    failure = failure_of(kinesis_stream, 0, 2)
    direct = await read(failure, invoke_identity_arn=IDENTITY)
    assert_same_records(decoded(direct), expected_event_records(kinesis_stream, 0, 2, identity=IDENTITY))
    monkeypatch.setenv("REPLAYER_INVOKE_IDENTITY_ARN", IDENTITY)
    async with Clients() as clients:
        from_env = await Readers(clients).for_failure(failure).read(failure)
    assert [r["invokeIdentityArn"] for r in decoded(from_env)] == [IDENTITY] * 3


async def test_pages_until_the_end_sequence_with_the_stream_arn(
    kinesis_stream: KinesisStream, proxy: FaultProxy
) -> None:
    kinesis_stream.put(25)
    iterators = recording(proxy, GET_SHARD_ITERATOR)
    pages = recording(proxy, GET_RECORDS)
    result = await read(failure_of(kinesis_stream, 2, 21), page_limit=4)
    assert seqs(decoded(result)) == seqs(kinesis_stream.stream_records()[2:22])
    assert len(pages) == 5  # 20 records, 4 a page, stops at the end record
    assert all(p["StreamARN"] == kinesis_stream.stream_arn and p["Limit"] == 4 for p in pages)
    (first,) = iterators
    assert first["ShardIteratorType"] == "AT_SEQUENCE_NUMBER"
    assert first["StreamARN"] == kinesis_stream.stream_arn and first["StartingSequenceNumber"] == "3"


async def test_default_page_is_ten_thousand_records(kinesis_stream: KinesisStream, proxy: FaultProxy) -> None:
    kinesis_stream.put(2)
    pages = recording(proxy, GET_RECORDS)
    await read(failure_of(kinesis_stream, 0, 1))
    assert [p["Limit"] for p in pages] == [10_000]
    with pytest.raises(ValueError):
        KinesisReader(Clients(), page_limit=10_001)


def empty_behind_the_tip(request: Request, body: Any) -> Any:
    return {"Records": [], "NextShardIterator": request.json()["ShardIterator"], "MillisBehindLatest": 60_000}


async def test_keeps_going_through_empty_pages_behind_the_tip(
    kinesis_stream: KinesisStream, proxy: FaultProxy
) -> None:
    kinesis_stream.put(6)
    empty = proxy.add(Rule(op(GET_RECORDS), rewrite=empty_behind_the_tip, times=4))
    result = await read(failure_of(kinesis_stream, 1, 4))
    assert empty.hits == 4
    assert result.complete and not result.gaps
    assert seqs(decoded(result)) == seqs(kinesis_stream.stream_records()[1:5])


async def test_bounded_empty_pages_are_retried_not_lost(
    kinesis_stream: KinesisStream, proxy: FaultProxy, tmp_path: Path
) -> None:
    kinesis_stream.put(4)
    proxy.add(Rule(op(GET_RECORDS), rewrite=empty_behind_the_tip))
    failure = failure_of(kinesis_stream, 0, 3)
    result = await read(failure, max_empty_pages=5)
    assert not result.complete and not result.gaps
    assert any("5 consecutive empty pages" in n for n in result.notes)
    assert proxy.count(GET_RECORDS) == 5
    async with Clients() as clients:
        readers = Readers(clients, max_empty_pages=3)
        outcome = await Replayer(clients, [FileSink(tmp_path)], readers=readers, allow=ANY_STREAM).replay(
            failure
        )
    assert outcome.kind is OutcomeKind.RETRY and not outcome.settled
    assert not any(tmp_path.iterdir())


async def test_reaching_the_tip_before_the_end_refuses_the_range(kinesis_stream: KinesisStream) -> None:
    """#12.3: a genuine failure record names only records that existed; one running past the
    newest record of an open shard spans more than its batch: refused, never retried."""
    kinesis_stream.put(5)
    (failure,) = parse_message(kinesis_stream.invocation_record(2, 4, endSequenceNumber="99", batchSize=None))
    result = await read(failure)
    assert result.refused is not None and "range spans more than its batch" in result.refused
    assert "newest record" in result.refused and not result.gaps


async def test_a_range_past_its_ceiling_is_rejected_not_retried(
    kinesis_stream: KinesisStream, tmp_path: Path
) -> None:
    """#12.3: a range is read to its end or its ceiling (batchSize where the mapping is known
    unfiltered, else the configured maximum); past the ceiling it is rejected, nothing delivered."""
    kinesis_stream.put(8)
    (failure,) = parse_message(kinesis_stream.invocation_record(0, 7, batchSize=2))
    async with Clients() as clients:
        capped = Readers(clients, max_records_per_range=5)
        outcome = await Replayer(clients, [FileSink(tmp_path)], readers=capped, allow=ANY_STREAM).replay(
            failure
        )
        assert outcome.kind is OutcomeKind.REJECTED and "more than 5 records" in outcome.reason
        unfiltered = Readers(clients, unfiltered=lambda f: True)
        outcome = await Replayer(clients, [FileSink(tmp_path)], readers=unfiltered, allow=ANY_STREAM).replay(
            failure
        )
        assert outcome.kind is OutcomeKind.REJECTED and "more than 2 records" in outcome.reason
    assert not any(tmp_path.iterdir())


async def test_expired_iterator_is_reacquired_after_the_last_record(
    kinesis_stream: KinesisStream, proxy: FaultProxy
) -> None:
    kinesis_stream.put(12)
    stream = kinesis_stream.stream_records()
    iterators = recording(proxy, GET_SHARD_ITERATOR)
    proxy.add(
        Rule(nth_call(GET_RECORDS, 2), respond=aws_error("ExpiredIteratorException", "Iterator expired"))
    )
    result = await read(failure_of(kinesis_stream, 1, 10), page_limit=3)
    assert seqs(decoded(result)) == seqs(stream[1:11])  # nothing twice, nothing skipped
    # AT the last record taken: seeing it again first proves nothing was trimmed in between
    assert [c["ShardIteratorType"] for c in iterators] == ["AT_SEQUENCE_NUMBER", "AT_SEQUENCE_NUMBER"]
    assert iterators[1]["StartingSequenceNumber"] == stream[3]["SequenceNumber"]
    assert result.complete and not result.gaps


async def test_records_trimmed_while_the_iterator_expired_are_reported(
    kinesis_stream: KinesisStream, proxy: FaultProxy
) -> None:
    kinesis_stream.put(12)
    stream = kinesis_stream.stream_records()
    proxy.add(
        Rule(nth_call(GET_RECORDS, 2), respond=aws_error("ExpiredIteratorException", "Iterator expired"))
    )
    # Meanwhile retention took records 3..5: the re-acquired iterator lands on record 6.
    proxy.add(
        Rule(
            nth_call(GET_SHARD_ITERATOR, 2),
            modify_request=lambda r: r.with_json(StartingSequenceNumber=stream[6]["SequenceNumber"]),
        )
    )
    result = await read(failure_of(kinesis_stream, 1, 10), page_limit=3)
    assert seqs(decoded(result)) == seqs(stream[1:4]) + seqs(stream[6:11])
    (gap,) = result.gaps
    assert int(gap.first) == int(stream[3]["SequenceNumber"]) + 1
    assert int(gap.last) == int(stream[6]["SequenceNumber"]) - 1
    assert "trimmed" in gap.reason


async def test_expired_before_any_record_restarts_at_the_start(
    kinesis_stream: KinesisStream, proxy: FaultProxy
) -> None:
    kinesis_stream.put(5)
    iterators = recording(proxy, GET_SHARD_ITERATOR)
    proxy.add(Rule(op(GET_RECORDS), respond=aws_error("ExpiredIteratorException"), times=1))
    result = await read(failure_of(kinesis_stream, 1, 3))
    assert len(result.records) == 3
    assert [c["ShardIteratorType"] for c in iterators] == ["AT_SEQUENCE_NUMBER", "AT_SEQUENCE_NUMBER"]


async def test_iterator_expiring_forever_is_bounded_and_retried(
    kinesis_stream: KinesisStream, proxy: FaultProxy
) -> None:
    kinesis_stream.put(3)
    proxy.add(Rule(op(GET_RECORDS), respond=aws_error("ExpiredIteratorException")))
    result = await read(failure_of(kinesis_stream, 0, 2), max_reacquires=3)
    assert not result.complete and not result.gaps
    assert proxy.count(GET_SHARD_ITERATOR) == 4
    assert any("3 iterator re-acquisitions" in n for n in result.notes)


async def test_throttling_is_backed_off_by_botocore_alone(
    kinesis_stream: KinesisStream, proxy: FaultProxy
) -> None:
    kinesis_stream.put(3)
    throttle = proxy.add(
        Rule(
            op(GET_RECORDS),
            respond=aws_error("ProvisionedThroughputExceededException", "Rate exceeded"),
            times=2,
        )
    )
    result = await read(failure_of(kinesis_stream, 0, 2))
    assert throttle.hits == 2
    assert result.complete and len(result.records) == 3
    # botocore retried the same call: one iterator, three attempts of one GetRecords
    assert proxy.count(GET_SHARD_ITERATOR) == 1 and proxy.count(GET_RECORDS) == 3


async def test_throttling_that_outlasts_botocore_is_a_retry_outcome(
    kinesis_stream: KinesisStream, proxy: FaultProxy, tmp_path: Path
) -> None:
    kinesis_stream.put(3)
    proxy.add(Rule(op(GET_RECORDS), respond=aws_error("ProvisionedThroughputExceededException")))
    failure = failure_of(kinesis_stream, 0, 2)
    async with Clients(max_attempts=2) as clients:
        outcome = await Replayer(clients, [FileSink(tmp_path)], allow=ANY_STREAM).replay(failure)
    assert outcome.kind is OutcomeKind.RETRY and not outcome.settled
    # botocore alone: max_attempts counts every attempt, the first included (as AWS_MAX_ATTEMPTS
    # does); no other layer retries the same call
    assert proxy.count(GET_RECORDS) == 2
    assert not list(tmp_path.rglob("*.gz"))


async def test_trimmed_start_recovers_the_rest_and_reports_the_exact_gap(
    kinesis_stream: KinesisStream, proxy: FaultProxy, tmp_path: Path
) -> None:
    kinesis_stream.put(12)
    stream = kinesis_stream.stream_records()
    trimmed_until(proxy, stream[5]["SequenceNumber"])  # "6"
    failure = failure_of(kinesis_stream, 1, 9)  # "2".."10"
    outcome = await replay_to_dir(failure, tmp_path)
    assert outcome.kind is OutcomeKind.PARTIAL and outcome.settled
    assert outcome.recovered == 5
    report = json.loads(Path(outcome.report_uri).read_text())
    assert report["missing"] == [
        {"first_sequence": "2", "last_sequence": "5", "reason": "start of range no longer in the shard"}
    ]
    (records,) = tmp_path.rglob("records.jsonl.gz")
    assert_same_records(archive_lines(records), expected_event_records(kinesis_stream, 5, 9))


async def test_range_trimmed_whole_with_newer_records_left_is_expired(
    kinesis_stream: KinesisStream, proxy: FaultProxy, tmp_path: Path
) -> None:
    kinesis_stream.put(12)
    stream = kinesis_stream.stream_records()
    trimmed_until(proxy, stream[9]["SequenceNumber"])
    failure = failure_of(kinesis_stream, 2, 5)
    outcome = await replay_to_dir(failure, tmp_path)
    assert outcome.kind is OutcomeKind.EXPIRED and outcome.settled and outcome.recovered == 0
    (gap,) = outcome.gaps
    assert (gap.first, gap.last) == (failure.start_sequence, failure.end_sequence)
    assert not list(tmp_path.rglob("records.jsonl.gz"))


async def test_range_trimmed_on_an_idle_stream_is_expired(
    kinesis_stream: KinesisStream, proxy: FaultProxy
) -> None:
    kinesis_stream.put(6)
    trimmed_until(proxy, None)  # nothing left: the iterator is at the tip
    failure = failure_of(kinesis_stream, 1, 4)
    result = await read(failure)
    assert result.complete and result.records == ()
    (gap,) = result.gaps
    assert (gap.first, gap.last) == (failure.start_sequence, failure.end_sequence)
    assert "trimmed" in gap.reason


async def test_a_missing_stream_is_refused_and_a_missing_shard_loses_the_range(
    kinesis_stream: KinesisStream,
) -> None:
    kinesis_stream.put(3)
    gone = failure_of(kinesis_stream, 0, 2, streamArn=kinesis_stream.stream_arn + "-deleted")
    result = await read(gone)
    assert result.records == () and result.gaps == ()
    assert result.refused == f"{NO_SUCH_STREAM}: {gone.stream_arn}"  # nothing existed: nothing lost
    no_shard = failure_of(kinesis_stream, 0, 2, shardId="shardId-000000000042")
    result = await read(no_shard)
    assert result.complete and result.records == () and result.refused is None
    (gap,) = result.gaps
    assert (gap.first, gap.last) == (no_shard.start_sequence, no_shard.end_sequence)
    assert "shard not found" in gap.reason


async def test_retention_comes_from_describe_stream_summary_once(
    kinesis_stream: KinesisStream, proxy: FaultProxy
) -> None:
    kinesis_stream.kinesis.increase_stream_retention_period(
        StreamARN=kinesis_stream.stream_arn, RetentionPeriodHours=72
    )
    kinesis_stream.put(1)
    failure = failure_of(kinesis_stream, 0, 0)
    async with Clients() as clients:
        reader = KinesisReader(clients)
        assert await reader.retention(failure) == timedelta(hours=72)
        assert await KinesisReader(clients).retention(failure) == timedelta(
            hours=72
        )  # cached for the process
        missing = failure_of(kinesis_stream, 0, 0, streamArn=kinesis_stream.stream_arn + "-deleted")
        assert await reader.retention(missing) == DEFAULT_RETENTION == timedelta(hours=24)
    assert proxy.count("DescribeStreamSummary") == 2  # one for the stream, one for the missing one


async def test_lambda_and_pipes_records_from_the_sample_events(
    kinesis_stream: KinesisStream, tmp_path: Path
) -> None:
    kinesis_stream.put(8)
    real = kinesis_stream.invocation_record(2, 6)["KinesisBatchInfo"]
    for name in ("kinesis_esm_record.json", "pipes_kinesis_dlq.json"):
        record = load_event(name)
        record["KinesisBatchInfo"] |= real
        (failure,) = parse_message(record)
        outcome = await replay_to_dir(failure, tmp_path / name)
        assert outcome.kind is OutcomeKind.REPLAYED and outcome.recovered == 5
        (records,) = (tmp_path / name).rglob("records.jsonl.gz")
        assert_same_records(archive_lines(records), expected_event_records(kinesis_stream, 2, 6))


# ---------------------------------------------------------------- the GetRecords budget


async def test_budget_allows_five_a_second_per_shard() -> None:
    clock = FakeClock()
    budget = ShardBudget(5, 1.0, clock=clock, sleep=clock.sleep)
    granted = []
    for _ in range(12):
        await budget.acquire("a")
        granted.append(clock.now)
    assert granted == [0.0] * 5 + [1.0] * 5 + [2.0] * 2
    assert at_most_per_window(granted, 5, 1.0)
    before = len(clock.sleeps)
    for _ in range(3):
        await budget.acquire("b")  # another shard has its own budget
    assert len(clock.sleeps) == before == 2


async def test_concurrent_callers_get_distinct_slots_in_order() -> None:
    requested: list[float] = []

    async def record(seconds: float) -> None:
        requested.append(seconds)  # time stands still: only the reservations are observed

    budget = ShardBudget(5, 1.0, clock=lambda: 0.0, sleep=record)
    await asyncio.gather(*(budget.acquire(("stream", "shard")) for _ in range(12)))
    assert requested == [1.0] * 5 + [2.0] * 2


def test_the_budget_is_shared_by_every_reader_of_the_process() -> None:
    clients = Clients()
    assert KinesisReader(clients).budget is KinesisReader(clients).budget is GET_RECORDS_BUDGET
    assert Readers(clients).kinesis.budget is GET_RECORDS_BUDGET
    assert (GET_RECORDS_BUDGET.rate, GET_RECORDS_BUDGET.per) == (5, 1.0)


async def test_readers_sharing_a_budget_stay_within_it(
    kinesis_stream: KinesisStream, proxy: FaultProxy
) -> None:
    kinesis_stream.put(16)
    clock = FakeClock()
    budget = ShardBudget(5, 1.0, clock=clock, sleep=clock.sleep)
    calls: list[float] = []  # fake time at which each GetRecords reached the emulator
    proxy.add(Rule(lambda r: r.operation == GET_RECORDS and calls.append(clock.now) is not None))
    async with Clients() as clients:
        first, second = (KinesisReader(clients, page_limit=2, budget=budget) for _ in range(2))
        a, b = await asyncio.gather(
            first.read(failure_of(kinesis_stream, 0, 7)), second.read(failure_of(kinesis_stream, 8, 15))
        )
    assert len(a.records) == len(b.records) == 8
    assert len(calls) == proxy.count(GET_RECORDS) == 8  # every call went through the budget
    assert at_most_per_window(calls, 5, 1.0)
    assert max(calls) >= 1.0  # the second reader waited for the first one's window


# ---------------------------------------------------------------- end to end through the CLI


def run_cli(*args: str) -> Any:
    saved = structlog.get_config()
    try:
        result = CliRunner().invoke(app, list(args))
    finally:
        structlog.configure(**saved)  # the CLI binds logging to the runner's stderr, closed after
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    return result


def test_cli_replay_file_to_a_file_archive(kinesis_stream: KinesisStream, tmp_path: Path) -> None:
    kinesis_stream.put(12)
    record = tmp_path / "record.json"
    record.write_text(json.dumps(kinesis_stream.invocation_record(7, 10)))
    archive = tmp_path / "archive"
    result = run_cli("replay", str(record), "--to", f"file:{archive}", "--json")
    assert result.exit_code == 0, result.output
    (records,) = archive.rglob("records.jsonl.gz")
    assert records.relative_to(archive).parts[0] == "kinesis"
    assert records.parent.name == "8-11"
    assert_same_records(archive_lines(records), expected_event_records(kinesis_stream, 7, 10))


def test_cli_fetch_a_kinesis_range_to_s3(kinesis_stream: KinesisStream, bucket: str) -> None:
    put = kinesis_stream.put(11)
    result = run_cli(
        "fetch", "--stream-arn", kinesis_stream.stream_arn, "--shard-id", kinesis_stream.shard_id,
        "--start", put[3]["SequenceNumber"], "--end", put[10]["SequenceNumber"], "--to", f"s3://{bucket}/rescued",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    s3 = client("s3", kinesis_stream.endpoint)
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"]]
    (key,) = [k for k in keys if k.endswith("records.jsonl.gz")]
    assert key.split("/")[:2] == ["rescued", "kinesis"]
    assert key.endswith(f"/{kinesis_stream.shard_id}/4-11/records.jsonl.gz")
    body = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
    lines = [json.loads(line) for line in gzip.decompress(body).splitlines()]
    assert_same_records(lines, expected_event_records(kinesis_stream, 3, 10))


# ---------------------------------------------------------------- kinesis-local


@pytest.fixture(scope="session")
def kinesis_local_url() -> Iterator[str]:
    why = kinesis_local.missing_tools()
    if why is not None:
        pytest.skip(why)
    with kinesis_local.running() as server:
        yield server.url


@pytest.fixture
def kl_stream(kinesis_local_url: str, monkeypatch: pytest.MonkeyPatch) -> KinesisStream:
    """A one-shard stream in kinesis-local; replayer's Kinesis client goes there, S3 stays on moto."""
    monkeypatch.setenv("AWS_ENDPOINT_URL_KINESIS", kinesis_local_url)
    return KinesisStream(kinesis_local_url)


@pytest.fixture
def kl_proxy(kinesis_local_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[FaultProxy]:
    """A fault proxy in front of kinesis-local for replayer's Kinesis client."""
    fp = FaultProxy(kinesis_local_url)
    monkeypatch.setenv("AWS_ENDPOINT_URL_KINESIS", fp.url)
    yield fp
    fp.close()


async def test_kinesis_local_record_by_record(kl_stream: KinesisStream, kl_proxy: FaultProxy) -> None:
    kl_stream.put(14)
    failure = failure_of(kl_stream, 2, 12)
    assert len(failure.start_sequence) == 56
    result = await read(failure, page_limit=3)
    assert result.complete and not result.gaps and not result.notes
    assert_same_records(decoded(result), expected_event_records(kl_stream, 2, 12))
    assert kl_proxy.count(GET_RECORDS) == 4  # 11 records, 3 a page


async def test_kinesis_local_closed_parent_after_a_split(
    kl_stream: KinesisStream, kl_proxy: FaultProxy
) -> None:
    kl_stream.put(7)
    parent = kl_stream.stream_records()
    children = kl_stream.split()
    assert len(children) == 2
    kl_stream.put(3, start=7, shard_id=children[0])  # these go to a child, never to the parent

    # a range of the closed parent that runs to its last record: all of it, nothing else
    result = await read(failure_of(kl_stream, 1, 6, records=parent))
    assert result.complete and not result.gaps
    assert_same_records(decoded(result), expected_event_records(kl_stream, 1, 6))

    # a range that runs past the end of the closed shard: the shard ended, the rest is not there
    pages = recording(kl_proxy, GET_RECORDS)
    (past_end,) = parse_message(kl_stream.invocation_record(4, 6, parent, endSequenceNumber="9" * 60))
    result = await read(past_end, page_limit=2)
    assert seqs(decoded(result)) == seqs(parent[4:7])
    (gap,) = result.gaps
    assert int(gap.first) == int(parent[6]["SequenceNumber"]) + 1 and gap.last == "9" * 60
    assert "shard ended" in gap.reason
    assert any(all(c in note for c in children) for note in result.notes)
    assert len(pages) == 2  # the second page had no NextShardIterator: no third call


async def test_kinesis_local_trimmed_start_and_throttling(
    kl_stream: KinesisStream, kl_proxy: FaultProxy, tmp_path: Path
) -> None:
    kl_stream.put(10)
    stream = kl_stream.stream_records()
    trimmed_until(kl_proxy, stream[4]["SequenceNumber"])
    throttle = kl_proxy.add(
        Rule(op(GET_RECORDS), respond=aws_error("ProvisionedThroughputExceededException"), times=1)
    )
    expired = kl_proxy.add(Rule(nth_call(GET_RECORDS, 3), respond=aws_error("ExpiredIteratorException")))
    failure = failure_of(kl_stream, 1, 8)
    outcome = await replay_to_dir(failure, tmp_path, page_limit=2)
    assert throttle.hits == 1 and expired.hits == 1
    assert outcome.kind is OutcomeKind.PARTIAL and outcome.recovered == 5
    (gap,) = outcome.gaps
    assert gap.first == failure.start_sequence
    assert int(gap.last) == int(stream[4]["SequenceNumber"]) - 1
    (records,) = tmp_path.rglob("records.jsonl.gz")
    assert_same_records(archive_lines(records), expected_event_records(kl_stream, 4, 8))


async def test_kinesis_local_retention(kl_stream: KinesisStream) -> None:
    kl_stream.kinesis.increase_stream_retention_period(
        StreamARN=kl_stream.stream_arn, RetentionPeriodHours=168
    )
    kl_stream.put(1)
    async with Clients() as clients:
        assert await KinesisReader(clients).retention(failure_of(kl_stream, 0, 0)) == timedelta(days=7)


def test_kinesis_local_cli_fetch_to_s3(kl_stream: KinesisStream, bucket: str, moto_endpoint: str) -> None:
    put = kl_stream.put(6)
    result = run_cli(
        "fetch", "--stream-arn", kl_stream.stream_arn, "--shard-id", kl_stream.shard_id,
        "--start", put[1]["SequenceNumber"], "--end", put[4]["SequenceNumber"], "--to", f"s3://{bucket}",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    s3 = client("s3", moto_endpoint)
    (key,) = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"] if o["Key"].endswith(".gz")]
    assert key.startswith("kinesis/000000000000/us-east-1/")
    lines = [
        json.loads(x)
        for x in gzip.decompress(s3.get_object(Bucket=bucket, Key=key)["Body"].read()).splitlines()
    ]
    assert_same_records(lines, expected_event_records(kl_stream, 1, 4))


async def test_a_record_larger_than_kinesis_allows_is_refused_with_its_size(
    kinesis_stream: KinesisStream, proxy: FaultProxy
) -> None:
    """#21.8: a record's data past Kinesis' 10 MiB (as base64), on a page within the answer's cap."""
    from replayer.readers import TOO_LARGE
    from replayer.readers.kinesis import MAX_DATA_BASE64

    kinesis_stream.put(2)

    def bloated(_request: Request, body: dict[str, Any]) -> dict[str, Any]:
        body["Records"][0]["Data"] = "A" * (MAX_DATA_BASE64 + 4)
        return body

    proxy.add(Rule(op("GetRecords"), rewrite=bloated, times=1))
    result = await read(failure_of(kinesis_stream, 0, 1))
    assert result.refused is not None and result.refused.startswith(TOO_LARGE), result.refused
    assert f"{MAX_DATA_BASE64 + 4} characters of base64 data" in result.refused and not result.records
