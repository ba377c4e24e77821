"""Random faults on every AWS call replayer makes, and still no range is lost.

A `Chaos` proxy sits between replayer and the emulators and, seeded, injects latency,
connection resets (before and after the call reached the emulator), answers cut off
mid-body, read timeouts, HTTP 500/503 and each service's throttling error, on DynamoDB
Streams, Kinesis, SQS, S3 and Lambda calls alike. replayer is run again and again (burst
mode, as `replayer drain` does) until its queue is empty; then, with the faults off, every
range must be archived exactly once (one creating PUT per object, content equal to the
stream), every bad message quarantined once, and nothing left on the queue.

Figures for docs/reliability.md go to `.cache/reliability/faults-*.json` (printed with -s).
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import unquote

import pytest
import structlog
from typer.testing import CliRunner

from replayer import lambda_handler
from replayer.archive.layout import RECORDS
from replayer.aws import Clients
from replayer.cli import app
from replayer.config import Settings
from replayer.observe import Recorder
from replayer.sources import build_replayer
from replayer.sources.sqs import Service
from tests.support.aws import client, make_queue, queue_counts
from tests.support.faultproxy import (
    FAULT_KINDS,
    Chaos,
    FaultProxy,
    Request,
    Rule,
    record_proof,
    service_error,
)
from tests.support.handler import LambdaContext
from tests.support.ministack import RepairFunction
from tests.support.workload import (
    build_workload,
    check_archive,
    emptied,
    quarantined,
    send_workload,
    sequence_of,
)

SEED = int(os.environ.get("FAULT_SEED", "6"))
SCALE = int(os.environ.get("FAULT_SCALE", "1"))  # more ranges (and so more faults) for a longer soak
MAX_ROUNDS = 40  # bounds on the retry loop, never assertions about speed
MAX_SECONDS = 150.0


# ---- the service loop (burst mode), every fault kind, on every call


async def test_random_faults_on_every_call_lose_no_range(
    moto_endpoint: str, proxy: FaultProxy, bucket: str
) -> None:
    work = build_workload(moto_endpoint, tables=3, streams=2, ranges_each=3 * SCALE, size=3)
    queue = make_queue(moto_endpoint, visibility=3)
    send_workload(moto_endpoint, queue, work)
    chaos = Chaos(SEED, rate=0.3, limits={"timeout": 2}, timeout_seconds=1.5)
    proxy.chaos = chaos
    # And one archive write that fails every attempt botocore makes in the first round: that
    # range must come back, and be finished in a later round.
    doomed = f"/{bucket}/archive/{work.ranges[0].folder}/{RECORDS}"
    first_round = [True]
    forced = proxy.add(
        Rule(
            lambda r: first_round[0] and r.method == "PUT" and unquote(r.path.split("?")[0]) == doomed,
            reply=service_error("s3", 500, "InternalError"),
        )
    )
    config = Settings(
        to=(f"s3://{bucket}/archive",),
        queue=queue,
        allow_streams=tuple(work.allow),
        quarantine=f"s3://{bucket}/quarantine",
        concurrency=4,
        prefetch=4,
        wait_seconds=0,  # burst: a round ends at the first empty receive
        visibility_timeout=3,
        retry_base_seconds=0,
        retry_max_seconds=0,
        grace_seconds=10,
    )
    rounds = 0
    outcomes: dict[str, int] = {}
    started = time.monotonic()
    while not emptied(moto_endpoint, queue):
        rounds += 1
        assert rounds <= MAX_ROUNDS and time.monotonic() - started < MAX_SECONDS, (
            f"queue not empty after {rounds - 1} rounds: {queue_counts(moto_endpoint, queue)}"
        )
        metrics = Recorder(prometheus=True)
        # A short read timeout, so that the proxy's `timeout` faults are timeouts to the client.
        async with Clients(read_timeout=1.0, connect_timeout=1.0) as clients:
            replayer, quarantine = build_replayer(config, clients, metrics)
            service = Service(config, replayer, recorder=metrics, quarantine=quarantine, burst=True)
            summary = await service.run()
        for o in summary.outcomes:
            outcomes[o.kind.value] = outcomes.get(o.kind.value, 0) + 1
        first_round[0] = False
        if not summary.messages.get("received"):
            time.sleep(0.5)  # what is left is invisible for a moment (a lost receive or release)
    chaos.enabled = False

    lost = check_archive(moto_endpoint, bucket, "archive", work, proxy.created().__getitem__)
    held = quarantined(moto_endpoint, bucket, "quarantine/")
    assert sorted(d["body"] for d in held) == sorted(work.bad)
    assert all(d["reason"] for d in held)
    for path, n in proxy.created("").items():
        assert n == 1, path  # no object, archive or quarantine, was created twice
    assert lost == 0 and outcomes.get("expired", 0) == 0 and outcomes.get("partial", 0) == 0
    assert outcomes.get("retry", 0) >= 1 and rounds >= 2  # a range was sent back, and finished later
    assert set(chaos.by_kind()) == set(FAULT_KINDS), chaos.by_kind()
    assert {"dynamodbstreams", "kinesis", "sqs", "s3"} <= set(chaos.by_service())
    record_proof(
        "faults-service",
        {
            "seed": SEED,
            "ranges": len(work.ranges),
            "records": work.records,
            "bad_messages": len(work.bad),
            "rounds": rounds,
            "faults_by_kind": chaos.by_kind(),
            "faults_by_service": chaos.by_service(),
            "faults_total": chaos.total,
            "forced_archive_write_failures": forced.hits,
            "calls_forwarded": len(proxy.forwarded),
            "outcomes": outcomes,
            "ranges_archived_once": len(work.ranges),
            "records_lost": lost,
        },
    )


# ---- `replayer drain`, with a repair function (Lambda) and an SQS quarantine


runner = CliRunner()


@pytest.fixture
def lambda_proxy(
    ministack: Any, lambda_endpoint: str, monkeypatch: pytest.MonkeyPatch
) -> Iterator[FaultProxy]:
    """A second fault proxy, in front of ministack: replayer's Invoke calls go through it."""
    fp = FaultProxy(ministack.endpoint)
    monkeypatch.setenv("AWS_ENDPOINT_URL_LAMBDA", fp.url)
    yield fp
    fp.close()


def test_drain_with_a_repair_function_under_faults(
    moto_endpoint: str, proxy: FaultProxy, lambda_proxy: FaultProxy, bucket: str, repair: RepairFunction
) -> None:
    work = build_workload(moto_endpoint, tables=1, streams=1, ranges_each=1, size=2)
    queue = make_queue(moto_endpoint, visibility=3)
    quarantine_queue = make_queue(moto_endpoint)
    send_workload(moto_endpoint, queue, work)
    # No `timeout` kind here: a synchronous Invoke waits up to 910 s by design.
    kinds = [k for k in FAULT_KINDS if k != "timeout"]
    chaos = Chaos(SEED + 1, rate=0.3, kinds=kinds)
    lambda_chaos = Chaos(SEED + 2, rate=0.4, kinds=kinds)
    proxy.chaos, lambda_proxy.chaos = chaos, lambda_chaos
    # Whatever the draws: one invocation throttled, and one that ran but whose answer was lost
    # (so the function is invoked again with the same records: at least once, never zero).

    def invoke(r: Request) -> bool:
        return r.service == "lambda" and r.method == "POST"

    lambda_proxy.add(Rule(invoke, reply=service_error("lambda", 429, "TooManyRequestsException"), times=1))
    lambda_proxy.add(Rule(invoke, drop_after=True, times=1))
    args = [
        "drain", "--queue", queue, "--to", f"s3://{bucket}/archive", "--to", f"lambda:{repair.name}",
        "--quarantine", quarantine_queue, "--concurrency", "3", "--wait-seconds", "1",
        "--visibility-timeout", "3", "--retry-base-seconds", "0", "--retry-max-seconds", "0",
        "--invoke-retries", "1", "--json",
    ]  # fmt: skip
    for arn in work.allow:
        args += ["--allow-stream", arn]
    rounds, codes = 0, []
    started = time.monotonic()
    while not emptied(moto_endpoint, queue):
        rounds += 1
        assert rounds <= MAX_ROUNDS and time.monotonic() - started < MAX_SECONDS, queue_counts(
            moto_endpoint, queue
        )
        result = runner.invoke(app, args)
        assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
        assert result.exit_code in (0, 1, 2), result.stderr  # 2: the queue did not answer at start-up
        codes.append(result.exit_code)
        structlog.reset_defaults()
    chaos.enabled = lambda_chaos.enabled = False

    lost = check_archive(moto_endpoint, bucket, "archive", work, proxy.created().__getitem__)
    # At least once to the function: every record of every range reached it.
    received = {sequence_of(r) for r in repair.received()}
    assert {s for r in work.ranges for s in r.sequences} <= received
    kept = (
        client("sqs", moto_endpoint)
        .receive_message(
            QueueUrl=quarantine_queue,
            MaxNumberOfMessages=10,
            MessageAttributeNames=["All"],
            WaitTimeSeconds=1,
        )
        .get("Messages", [])
    )
    # A SendMessage whose answer was lost is sent again: the quarantine holds each bad body at least once.
    assert {m["Body"] for m in kept} == set(work.bad)
    assert all(m["MessageAttributes"]["replayer-reason"]["StringValue"] for m in kept)
    assert [r.hits for r in lambda_proxy.rules] == [1, 1]
    faults = chaos.by_kind()
    for kind, n in [*lambda_chaos.by_kind().items(), ("throttle", 1), ("reset_after", 1)]:
        faults[kind] = faults.get(kind, 0) + n
    by_service = {**chaos.by_service(), "lambda": lambda_chaos.total + 2}
    record_proof(
        "faults-drain-lambda",
        {
            "seed": SEED + 1,
            "ranges": len(work.ranges),
            "records": work.records,
            "bad_messages": len(work.bad),
            "rounds": rounds,
            "exit_codes": codes,
            "faults_by_kind": faults,
            "faults_by_service": by_service,
            "faults_total": chaos.total + lambda_chaos.total + 2,
            "invocations": len(repair.calls()),
            "records_lost": lost,
        },
    )


# ---- the Lambda handler: what it reports unsettled goes back; the rest is done


def test_lambda_handler_under_faults_reports_every_unsettled_message(
    moto_endpoint: str, proxy: FaultProxy, bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    work = build_workload(moto_endpoint, tables=1, streams=1, ranges_each=3, size=2)
    queue = make_queue(moto_endpoint, visibility=2)
    send_workload(moto_endpoint, queue, work)
    monkeypatch.setenv("REPLAYER_TO", f"s3://{bucket}/archive")
    monkeypatch.setenv("REPLAYER_QUARANTINE", f"s3://{bucket}/quarantine")
    monkeypatch.setenv("REPLAYER_ALLOW_STREAMS", ",".join(work.allow))
    monkeypatch.setenv("REPLAYER_RETRY_BASE_SECONDS", "0")
    monkeypatch.setenv("REPLAYER_RETRY_MAX_SECONDS", "0")
    monkeypatch.setenv("AWS_LAMBDA_FUNCTION_NAME", "replayer")
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "2")  # fewer retries, so more faults reach the handler itself
    chaos = Chaos(SEED + 3, rate=0.3, kinds=[k for k in FAULT_KINDS if k != "timeout"])
    proxy.chaos = chaos
    # One range's reads fail every attempt botocore makes in the first invocation: its message
    # must be reported back, and finished by a later invocation.
    first = [True]
    doomed = work.ranges[0].record["DDBStreamBatchInfo"]["startSequenceNumber"]
    forced = proxy.add(
        Rule(
            lambda r: (
                first[0] and r.operation == "GetShardIterator" and r.json().get("SequenceNumber") == doomed
            ),
            reply=service_error("dynamodbstreams", 500, "InternalServerError"),
        )
    )
    sqs = client("sqs", moto_endpoint)
    arn = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    invocations, reported = 0, 0
    started = time.monotonic()
    try:
        while not emptied(moto_endpoint, queue):
            assert invocations <= 3 * MAX_ROUNDS and time.monotonic() - started < MAX_SECONDS
            # What Lambda's SQS poller does: receive a batch, invoke, delete what was not reported.
            messages = sqs.receive_message(
                QueueUrl=queue, MaxNumberOfMessages=10, WaitTimeSeconds=1, AttributeNames=["All"]
            ).get("Messages", [])
            if not messages:
                continue
            event = {
                "Records": [
                    {
                        "messageId": m["MessageId"],
                        "receiptHandle": m["ReceiptHandle"],
                        "body": m["Body"],
                        "attributes": {"ApproximateReceiveCount": m["Attributes"]["ApproximateReceiveCount"]},
                        "messageAttributes": {},
                        "eventSource": "aws:sqs",
                        "eventSourceARN": arn,
                        "awsRegion": "us-east-1",
                    }
                    for m in messages
                ]
            }
            invocations += 1
            answer = lambda_handler.handler(event, LambdaContext())
            first[0] = False
            failed = {f["itemIdentifier"] for f in answer["batchItemFailures"]}
            reported += len(failed)
            for m in messages:
                if m["MessageId"] not in failed:
                    sqs.delete_message(QueueUrl=queue, ReceiptHandle=m["ReceiptHandle"])
    finally:
        lambda_handler.reset()
    chaos.enabled = False
    lost = check_archive(moto_endpoint, bucket, "archive", work, proxy.created().__getitem__)
    assert sorted(d["body"] for d in quarantined(moto_endpoint, bucket, "quarantine/")) == sorted(work.bad)
    assert reported >= 1 and invocations >= 2
    record_proof(
        "faults-lambda-handler",
        {
            "seed": SEED + 3,
            "ranges": len(work.ranges),
            "records": work.records,
            "invocations": invocations,
            "messages_reported_unsettled": reported,
            "faults_by_kind": chaos.by_kind(),
            "faults_by_service": chaos.by_service(),
            "faults_total": chaos.total,
            "forced_stream_read_failures": forced.hits,
            "records_lost": lost,
        },
    )
