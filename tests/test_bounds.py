"""#12: one message can never hold a worker, the memory or the queue hostage.

One test (or two) per numbered point of the issue, on moto over HTTP, with fault injection
where it applies. Nothing here asserts how fast anything is: a bound shows as the outcome
that bound produces (a retry saying why, a quarantine by reference, a refused range).
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from replayer import lambda_handler
from replayer.aws import CallDeadlineError, Clients
from replayer.config import Settings
from replayer.errors import ConfigError
from replayer.model import OutcomeKind
from replayer.observe import Recorder
from replayer.sources import build_replayer
from replayer.sources.lambda_ import settings_from_env
from replayer.sources.sqs import Service
from tests.support import ROOT
from tests.support.aws import DynamoTable, client, json_objects, keys, make_queue, send
from tests.support.events import load_event
from tests.support.faultproxy import FaultProxy, Rule, slow_shard
from tests.support.handler import LambdaContext
from tests.support.service import settings


@asynccontextmanager
async def consumer(config: Settings) -> AsyncIterator[Service]:
    async with Clients() as clients:
        recorder = Recorder(prometheus=True)
        replayer, quarantine = build_replayer(config, clients, recorder)
        yield Service(config, replayer, recorder=recorder, quarantine=quarantine, burst=True)


# ---- 1. a time budget per range attempt


async def test_1_a_range_past_its_time_budget_is_retried_and_comes_back_with_a_higher_receive_count(
    table: DynamoTable, bucket: str, moto_endpoint: str, proxy: FaultProxy
) -> None:
    table.put(2)
    queue = make_queue(moto_endpoint)
    send(moto_endpoint, queue, table.invocation_record(0, 1))
    proxy.add(Rule(slow_shard(table.stream_arn), delay=8.0, times=1))  # the read stalls
    config = settings(queue, f"s3://{bucket}/archive", range_budget_seconds=1.0, retry_base_seconds=0)
    async with consumer(config) as service:
        summary = await service.run()
    (outcome,) = summary.outcomes
    assert outcome.kind is OutcomeKind.RETRY
    assert "longer than its 1 s budget, while reading the stream" in outcome.reason
    assert summary.messages["retried"] == 1 and "deleted" not in summary.messages
    assert keys(moto_endpoint, bucket, "archive/") == []
    again = client("sqs", moto_endpoint).receive_message(
        QueueUrl=queue, WaitTimeSeconds=5, MessageSystemAttributeNames=["ApproximateReceiveCount"]
    )["Messages"]
    assert int(again[0]["Attributes"]["ApproximateReceiveCount"]) >= 2  # toward the DLQ


async def test_1_a_message_whose_range_overran_its_budget_is_no_longer_kept_invisible(
    table: DynamoTable, moto_endpoint: str
) -> None:
    from replayer.sources.sqs import Job

    config = settings(make_queue(moto_endpoint), "-")
    async with Clients() as clients:
        replayer, _ = build_replayer(config, clients, Recorder())
        scheduler = replayer.scheduler(concurrency=1)
        scheduler.start()
        stall = asyncio.Event()
        scheduler._work = lambda failure: stall.wait()  # type: ignore[assignment,method-assign,return-value]
        (ticket,) = await scheduler.submit_many([_failure(table)])
        job = Job(message=None, tickets=[ticket])  # type: ignore[arg-type]
        while ticket.started is None:
            await asyncio.sleep(0.01)
        assert not job.overdue(3600.0)
        assert job.overdue(0.0)  # what the heartbeat asks: past the budget, no more extensions
        stall.set()
        await scheduler.close(finish_queued=False, within=5)


def _failure(table: DynamoTable) -> Any:
    from replayer.parse import parse_record

    table.put(1)
    return parse_record(table.invocation_record(0, 0))


# ---- 2. every AWS call has a total deadline; no Expect: 100-continue


class SilentEndpoint:
    """Accepts connections, reads each request's headers, and never answers."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        self.requests: list[bytes] = []
        self.held: list[socket.socket] = []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            self.held.append(conn)
            head = b""
            while b"\r\n\r\n" not in head and (chunk := conn.recv(65536)):
                head += chunk
            self.requests.append(head)

    def close(self) -> None:
        for conn in self.held:
            conn.close()
        self.listener.close()


@pytest.fixture
def silent(monkeypatch: pytest.MonkeyPatch) -> Iterator[SilentEndpoint]:
    endpoint = SilentEndpoint()
    monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint.url)
    yield endpoint
    endpoint.close()


async def test_2_a_call_to_an_endpoint_that_accepts_and_never_answers_ends_at_its_deadline(
    silent: SilentEndpoint,
) -> None:
    async with Clients(call_deadline=2, read_timeout=600, max_attempts=1) as clients:
        s3 = await clients.get("s3")
        with pytest.raises(CallDeadlineError, match=r"s3\.put_object: no answer within 2 s"):
            # the outer bound only keeps a broken deadline from hanging the suite
            await asyncio.wait_for(s3.put_object(Bucket="archive", Key="k", Body=b"x" * 4096), 300)
    assert silent.requests, "the request never reached the endpoint"
    assert all(b"expect: 100-continue" not in r.lower() for r in silent.requests)


# ---- 3. reads bounded by the batch: tests/test_readers_kinesis.py
#      (test_reaching_the_tip_before_the_end_refuses_the_range,
#       test_a_range_past_its_ceiling_is_rejected_not_retried); quarantined, not retried:


async def test_3_a_range_that_spans_more_than_its_batch_is_quarantined_not_retried(
    table: DynamoTable, bucket: str, moto_endpoint: str
) -> None:
    table.put(6)
    queue = make_queue(moto_endpoint)
    send(moto_endpoint, queue, table.invocation_record(0, 5))
    config = settings(
        queue, f"s3://{bucket}/archive", quarantine=f"s3://{bucket}/quarantine", max_records_per_range=3
    )
    async with consumer(config) as service:
        summary = await service.run()
    (outcome,) = summary.outcomes
    assert outcome.kind is OutcomeKind.REJECTED and "range spans more than its batch" in outcome.reason
    assert summary.messages == {"received": 1, "quarantined": 1, "deleted": 1}
    (document,) = json_objects(moto_endpoint, bucket, "quarantine/").values()
    assert "more than 3 records" in document["reason"]
    assert keys(moto_endpoint, bucket, "archive/") == []


# ---- 4. ranges per message capped


async def test_4_a_message_naming_more_ranges_than_allowed_reads_the_first_and_quarantines_it(
    table: DynamoTable, bucket: str, moto_endpoint: str, proxy: FaultProxy
) -> None:
    table.put(12)
    event = {
        "Records": [
            {
                "eventSource": "aws:sqs",
                "messageId": f"m{i}",
                "body": json.dumps(table.invocation_record(i, i)),
            }
            for i in range(12)
        ]
    }
    queue = make_queue(moto_endpoint)
    send(moto_endpoint, queue, event)
    proxy.clear()
    config = settings(
        queue, f"s3://{bucket}/archive", quarantine=f"s3://{bucket}/quarantine", max_ranges_per_message=2
    )
    async with consumer(config) as service:
        summary = await service.run()
    kinds = sorted(o.kind.value for o in summary.outcomes)
    assert kinds == ["rejected"] * 10 + ["replayed"] * 2
    assert proxy.count("GetShardIterator") == 2  # the other ten were never read
    assert summary.messages == {"received": 1, "quarantined": 1, "deleted": 1}
    (document,) = json_objects(moto_endpoint, bucket, "quarantine/").values()
    assert "names 12 ranges, more than the 2 a message may name" in document["reason"]


# ---- 5. clients bounded


async def test_5_the_client_cache_is_bounded() -> None:
    async with Clients(max_clients=2) as clients:
        for region in ("us-east-1", "us-west-2", "eu-west-1", "ap-south-1", "sa-east-1"):
            await clients.get("s3", region)
        assert clients.count == 2


async def test_5_ranges_in_streams_not_allowed_make_no_client(
    table: DynamoTable, bucket: str, moto_endpoint: str
) -> None:
    table.put(1)
    record = table.invocation_record(0, 0)
    queue = make_queue(moto_endpoint)
    regions = [
        "us-west-1",
        "us-west-2",
        "eu-west-1",
        "eu-central-1",
        "ap-south-1",
        "sa-east-1",
        "ca-central-1",
    ]
    for region in regions:
        forged = json.loads(json.dumps(record).replace(":us-east-1:", f":{region}:"))
        send(moto_endpoint, queue, forged)
    config = settings(queue, f"s3://{bucket}", allow_streams=(table.stream_arn,))
    async with Clients() as clients:
        replayer, _ = build_replayer(config, clients, Recorder())
        summary = await Service(config, replayer, recorder=Recorder(), burst=True).run()
        assert [o.kind for o in summary.outcomes] == [OutcomeKind.REJECTED] * len(regions)
        assert clients.count == 1  # the queue's: no stream was asked anything, in any region


# ---- 7. permanent vs transient at parse time: tests/test_parse.py
#      (test_what_aws_never_accepts_is_refused_at_parse_time,
#       test_a_payload_sequence_number_of_non_ascii_digits_is_a_problem_not_a_crash); in a CLI run:


def test_7_no_input_crashes_a_cli_run(table: DynamoTable, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from replayer.cli import app

    table.put(1)
    good = table.invocation_record(0, 0)
    bad_shard = json.loads(json.dumps(good))
    bad_shard["DDBStreamBatchInfo"]["shardId"] = "shardId-short"
    bad_region = json.loads(
        json.dumps(good).replace("arn:aws:dynamodb:us-east-1", "arn:aws-cn:dynamodb:us-east-1")
    )
    source = tmp_path / "records.jsonl"
    source.write_text("\n".join(json.dumps(r) for r in (good, bad_shard, bad_region)) + "\n")
    result = CliRunner().invoke(app, ["replay", str(source), "--to", f"file:{tmp_path / 'out'}", "--json"])
    assert ("Traceback" not in result.output and result.exception is None) or isinstance(
        result.exception, SystemExit
    )
    assert result.exit_code in (1, 2), result.output
    assert "28 to 65 characters long" in result.output or "28 to 65 characters long" in result.stderr


# ---- 8. the Lambda's asynchronous triggers


def s3_event(bucket: str, key: str, size: int | None) -> dict[str, Any]:
    event: dict[str, Any] = load_event("s3_event_notification.json")
    event["Records"] = event["Records"][:1]
    event["Records"][0]["s3"]["bucket"]["name"] = bucket
    event["Records"][0]["s3"]["object"]["key"] = key
    if size is None:
        event["Records"][0]["s3"]["object"].pop("size", None)
    else:
        event["Records"][0]["s3"]["object"]["size"] = size
    return event


def gets(proxy: FaultProxy, key: str) -> int:
    """GetObject calls for `key` that went through the proxy."""
    return sum(1 for seen in proxy.seen if seen.startswith("GET ") and seen.endswith(f"/{key}"))


def quarantined_messages(endpoint: str, queue: str) -> list[dict[str, Any]]:
    answer = client("sqs", endpoint).receive_message(
        QueueUrl=queue, MaxNumberOfMessages=10, WaitTimeSeconds=2, MessageAttributeNames=["All"]
    )
    return list(answer.get("Messages", []))


@pytest.mark.parametrize("told_size", [True, False], ids=["event-says-the-size", "event-is-silent"])
def test_8_an_oversized_s3_object_is_quarantined_by_reference_without_being_read_whole(
    bucket: str, moto_endpoint: str, proxy: FaultProxy, monkeypatch: pytest.MonkeyPatch, told_size: bool
) -> None:
    key = "aws/lambda/big.json"
    body = b'{"padding": "' + b"x" * 5000 + b'"}'
    client("s3", moto_endpoint).put_object(Bucket=bucket, Key=key, Body=body)
    quarantine = make_queue(moto_endpoint)
    monkeypatch.setenv("REPLAYER_TO", f"s3://{bucket}/archive")
    monkeypatch.setenv("REPLAYER_QUARANTINE", quarantine)
    monkeypatch.setenv("REPLAYER_MAX_OBJECT_BYTES", "1000")
    proxy.clear()
    event = s3_event(bucket, key, len(body) if told_size else None)
    assert lambda_handler.handler(event, LambdaContext()) == {"settled": 1}
    assert gets(proxy, key) == (0 if told_size else 1)
    (message,) = quarantined_messages(moto_endpoint, quarantine)
    reference = json.loads(message["Body"])
    assert reference["s3_object"] == {"bucket": bucket, "key": key, "size": len(body)}
    assert "more than --max-object-bytes 1000" in reference["reason"]
    assert "xxxx" not in message["Body"]  # by reference, never by copying the body


def test_8_an_object_outside_the_failure_buckets_is_never_read(
    bucket: str, moto_endpoint: str, proxy: FaultProxy, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = "aws/lambda/any.json"
    client("s3", moto_endpoint).put_object(Bucket=bucket, Key=key, Body=b"{}")
    quarantine = make_queue(moto_endpoint)
    monkeypatch.setenv("REPLAYER_TO", f"s3://{bucket}/archive")
    monkeypatch.setenv("REPLAYER_QUARANTINE", quarantine)
    monkeypatch.setenv("REPLAYER_FAILURE_BUCKETS", f"{bucket}/somewhere-else/")
    proxy.clear()
    assert lambda_handler.handler(s3_event(bucket, key, 2), LambdaContext()) == {"settled": 1}
    assert gets(proxy, key) == 0
    (message,) = quarantined_messages(moto_endpoint, quarantine)
    assert "is not a failure bucket: not in --failure-bucket" in json.loads(message["Body"])["reason"]


def _template() -> dict[str, Any]:
    from cfnlint.decode import cfn_yaml

    loaded: dict[str, Any] = cfn_yaml.load(str(ROOT / "deploy" / "template.yaml"))
    return loaded


def test_8_asynchronous_invocations_retry_explicitly_then_go_to_a_queue() -> None:
    function = _template()["Resources"]["ReplayerFunction"]["Properties"]
    config = function["EventInvokeConfig"]
    assert config["MaximumRetryAttempts"] == 2
    assert config["DestinationConfig"]["OnFailure"] == {
        "Type": "SQS",
        "Destination": {"Fn::GetAtt": ["AsyncFailureQueue", "Arn"]},
    }
    assert "REPLAYER_FAILURE_BUCKETS" in function["Environment"]["Variables"]


# ---- 9. deny by default


def test_9_the_templates_empty_stream_parameters_allow_nothing(
    table: DynamoTable, bucket: str, moto_endpoint: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    table.put(1)
    monkeypatch.setenv("REPLAYER_TO", f"s3://{bucket}")
    monkeypatch.setenv("REPLAYER_ALLOW_STREAMS", ",")  # what the template's !Join makes of two empty lists
    monkeypatch.setenv("REPLAYER_QUARANTINE", f"s3://{bucket}/quarantine")
    event = load_event("sqs_lambda_event_ddb.json")
    event["Records"] = event["Records"][:1]
    event["Records"][0]["body"] = json.dumps(table.invocation_record(0, 0))
    with pytest.raises(ConfigError, match=r"--allow-stream \(or REPLAYER_ALLOW_STREAMS\) is required"):
        settings_from_env()
    with pytest.raises(ConfigError):  # the function refuses to start: nothing rejected, nothing quarantined
        lambda_handler.handler(event, LambdaContext())
    assert keys(moto_endpoint, bucket) == []


def test_9_allow_all_needs_an_explicit_star() -> None:
    from replayer.allow import AllowList, BucketAllowList

    arn = "arn:aws:kinesis:us-east-1:123456789012:stream/s"
    assert not AllowList.of([]).allows(arn) and not AllowList.of([","]).allows(arn)
    assert AllowList.of(["*"]).allows(arn)
    assert not BucketAllowList.of([]).allows("b", "k") and BucketAllowList.of(["*"]).allows("b", "k")
    assert BucketAllowList.of(["s3://b/aws/"]).allows("b", "aws/lambda/x")
    assert not BucketAllowList.of(["b/aws/"]).allows("b", "other/x")


async def test_3_a_mapping_known_unfiltered_bounds_a_range_by_its_batch_size(table: DynamoTable) -> None:
    import dataclasses

    from replayer.model import SourceMapping
    from replayer.parse import parse_record
    from replayer.readers import Readers

    table.put(5)
    failure = parse_record(table.invocation_record(0, 4, batchSize=2))
    unfiltered = SourceMapping(found=True, kind="lambda-esm", filters=())
    filtered = SourceMapping(found=True, kind="lambda-esm", filters=('{"eventName": ["INSERT"]}',))
    async with Clients() as clients:
        readers = Readers(clients)
        plain = await readers.for_failure(failure).read(dataclasses.replace(failure, mapping=unfiltered))
        assert plain.refused is not None and "more than 2 records" in plain.refused
        # a filtered batch spans records its filter dropped: only the configured maximum bounds it
        kept = await readers.for_failure(failure).read(dataclasses.replace(failure, mapping=filtered))
        assert kept.refused is None and len(kept.records) == 5
